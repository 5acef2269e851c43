"""The records a finetuning job's stages hand each other (`job.py`: read the molecules, build the features, split,
train, report the results, build the trust, save), in place of string-keyed dicts."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from moleclip.processing.property_data import PropertyDataset
from moleclip.processing.splits import Split

from .parts import JobRows
from .run import ChosenRuns, RunOptions

__all__ = ["Job", "Molecules", "Features", "Splits", "Training"]


@dataclass
class Job:
    """What every stage of a job reads: the parsed options, the accelerator, the output folder, the start time."""

    args: argparse.Namespace
    acc: object  # accelerate.Accelerator
    output_dir: Path
    progress: bool  # progress bars (this process is the local main one and --no-progress was not given)
    started: float


@dataclass
class Molecules:
    """The job's molecules (the table's rows, then --test-file's) and how results.json describes them."""

    rows: JobRows
    mode: str  # full | frozen | fingerprint | random_forest
    split_kind: str
    dataset_info: dict  # results.json's "dataset"

    @property
    def data(self) -> PropertyDataset:
        return self.rows.data


@dataclass
class Features:
    """What the models read: pictures, embeddings or fingerprints (`inputs`), or the random forest's bits."""

    inputs: object | None
    processor: object | None  # MoleCLIP modes: the processor saved with the model
    backbone: str  # the encoder, as the results and the model card name it
    bits: np.ndarray | None = None


@dataclass
class Splits:
    """Each seed's split of the main rows, where they came from, and what is scored besides them."""

    by_seed: dict[int, Split]
    source: str
    leakage: dict[int, dict]
    group: np.ndarray | None  # --group-column: the rows of the subgroup scored apart
    extra_parts: dict[str, np.ndarray]  # {"external": rows} with --test-file


@dataclass
class Training:
    """The grid search, the chosen setting and its final runs (the search's, or fresh --final-epochs runs)."""

    grid: dict
    options: RunOptions
    searched: dict
    chosen: dict
    final_runs: list[dict]
    kept: ChosenRuns  # every seed's model of the chosen setting

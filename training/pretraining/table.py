"""The molecules of a pretraining run and their pseudo-labels, and the held-out split.

`load_pretraining_table` reads the input (.smi/.csv/.parquet) and takes its pseudo-labels from its `label_k<K>`
columns, from the file a previous attempt of the same run saved, or computes them (MACCS keys + seeded mini-batch
K-means) on the main process and saves them, so that a resumed run trains on the very same labels.
Module level: standard library only; pandas, numpy and the labelling code are imported when used.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import pandas as pd

from moleclip.processing.molecules import list_skipped
from moleclip.processing.pretraining_data import smiles_digest
from moleclip.processing.pseudo_labels import (
    LABEL_PREFIX,
    compute_pseudo_labels,
    label_columns,
    recorded_standardization,
    write_pseudo_labels,
)
from moleclip.processing.seeding import sample_rng
from moleclip.processing.standardize import standardize_smiles
from moleclip.processing.tables import read_molecule_table
from moleclip.training.outputs import write_atomically, write_text_atomically
from moleclip.training.pretraining.config import PSEUDO_LABEL_FILE, PretrainConfig

__all__ = ["PretrainingTable", "load_pretraining_table", "split_positions"]


@dataclass
class PretrainingTable:
    """The molecules to train on, their pseudo-labels and where they came from."""

    smiles: list[str]
    labels: "object"  # np.ndarray [n, n_label_sets], int64
    ks: list[int]
    ids: "object"  # np.ndarray [n]: row of each molecule in the input file (0-based, header excluded)
    source: str  # how the labels were obtained, for the model card


def _read_input(config: PretrainConfig):
    """The input as a frame with a `smiles` column (the package's one table reader: formats, column choice, errors)."""
    table = read_molecule_table(config.input, config.smiles_column, limit=config.limit)
    frame = table.frame
    if table.smiles_column != "smiles":
        frame = frame.drop(columns=["smiles"], errors="ignore").rename(columns={table.smiles_column: "smiles"})
    frame = frame.reset_index(drop=True)
    frame.attrs["lines"] = table.line_numbers  # each row's line in the file, for messages
    return frame


def _columns_by_k(columns) -> dict[int, str]:
    found = label_columns([str(c) for c in columns])
    if isinstance(found, dict):  # {K: column}
        return dict(found)
    return {int(name[len(LABEL_PREFIX):]): name for name in found}


def _labels_from_columns(frame, config: PretrainConfig):
    found = _columns_by_k(frame.columns)
    if not found:
        return None
    if config.k == ["auto"]:
        raise ValueError("--k auto chooses K when labels are computed; this input already has label columns "
                         f"{list(found.values())}: give --k from {sorted(found)} or leave it out")
    ks = config.k or sorted(found)
    missing = [k for k in ks if k not in found]
    if missing:
        raise ValueError(f"--k {' '.join(map(str, ks))}: the input has label columns for K = {sorted(found)}, not {missing}")
    labels = np.stack([_integer_column(frame[found[k]], found[k], frame.attrs.get("lines")) for k in ks], axis=1)
    for j, k in enumerate(ks):
        low, high = int(labels[:, j].min()), int(labels[:, j].max())
        if low < 0 or high >= k:
            raise ValueError(f"column {found[k]} holds classes {low}..{high}; a K={k} label must be in 0..{k - 1}")
    return labels, ks, found


def _integer_column(column, name: str, lines=None):
    """Class labels as int64: integer columns (Parquet) as they are, text (CSV cells) only when every cell is an integer.

    A molecule without a class (a null in Parquet, an empty CSV cell) is refused with its row (and its line in the
    file, from `lines`), before anything else is said about the column.
    """
    def line(i: int) -> str:  # said where it is not the row number (a CSV's header, blank lines; not Parquet)
        known = lines is not None and i < len(lines) and int(lines[i]) != i + 1
        return f" (line {int(lines[i])} of the file)" if known else ""

    text = column.astype(str).str.strip()
    missing = np.array(column.isna(), dtype=bool)
    if not pd.api.types.is_numeric_dtype(column.dtype):
        missing |= (text == "").to_numpy()
    if missing.any():
        first = int(np.flatnonzero(missing)[0])
        raise ValueError(f"label column {name} has no class for {int(missing.sum())} molecule(s), first row "
                         f"{first + 1}{line(first)}: every molecule needs one; drop those rows or label them again")
    if pd.api.types.is_integer_dtype(column.dtype):
        return column.to_numpy(dtype=np.int64)
    bad = ~text.str.fullmatch(r"[+-]?\d+")
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise ValueError(f"label column {name} must hold integer classes; row {first + 1} holds {column.iloc[first]!r}"
                         f"{line(first)}")
    return text.astype(np.int64).to_numpy()


def load_pretraining_table(config: PretrainConfig, accelerator=None) -> PretrainingTable:
    """Read the input and get its pseudo-labels: from its label columns, from a previous run's file, or computed.

    Computing happens on the main process only (the others wait and read the saved file), and the result is saved to
    `<output_dir>/pseudo_labels.parquet` so that a resumed run trains on the very same labels without recomputing.
    """
    frame = _read_input(config)
    if frame.empty:
        raise ValueError(f"{config.input} holds no molecules")
    if "classification" not in config.tasks:
        return _unlabelled_table(frame, config, accelerator)
    given = _labels_from_columns(frame, config)
    if given is not None:
        labels, ks, columns = given
        _check_labelled_standardization(config)
        return PretrainingTable(frame["smiles"].tolist(), labels, ks, np.arange(len(frame), dtype=np.int64),
                                f"label columns {', '.join(columns[k] for k in ks)} of the input")

    ks = config.k or [300, 3000]
    out = Path(config.output_dir) / PSEUDO_LABEL_FILE
    meta_file = out.with_suffix(".json")
    wanted = {"input_sha1": smiles_digest(frame["smiles"].tolist()), "k": ks, "seed": config.seed,
              "standardize": config.standardize}
    is_main = accelerator is None or accelerator.is_main_process

    def usable() -> bool:
        return out.is_file() and meta_file.is_file() and json.loads(meta_file.read_text()).get("request") == wanted

    if is_main and not usable():
        print(f"computing pseudo-labels (MACCS keys + K-means, K = {ks}) for {len(frame)} molecules ...", flush=True)
        start = time.perf_counter()
        table, info = compute_pseudo_labels(frame["smiles"].tolist(), "auto" if ks == ["auto"] else ks, seed=config.seed,
                                            n_jobs=config.pseudo_label_jobs, progress=config.progress,
                                            standardize=config.standardize)
        if info.get("skipped"):
            _warn_left_out(info["skipped"], frame)
        kept = _kept_rows(table, info, frame)
        table = table.copy()
        table.insert(0, "row", kept)
        # written as `moleclip pseudo-labels` writes its tables, with how the molecules were prepared: the file is a
        # valid --input for another run, which then checks that setting instead of taking the molecules as unprepared
        write_atomically(out, lambda tmp: write_pseudo_labels(table, tmp, standardize=config.standardize))
        write_text_atomically(meta_file, json.dumps({"request": wanted, "seconds": time.perf_counter() - start,
                                                     "n_molecules": len(frame), "n_labelled": len(table),
                                                     "info": _jsonable(info)}, indent=2))
        print(f"pseudo-labels for {len(table)} of {len(frame)} molecules saved to {out} "
              f"({time.perf_counter() - start:.1f} s)", flush=True)
    if accelerator is not None:
        accelerator.wait_for_everyone()
    if not usable():
        raise RuntimeError(f"{out} was not written by the main process")
    table = pd.read_parquet(out)
    columns = _columns_by_k(table.columns)
    ks = sorted(columns) if ks == ["auto"] else ks
    labels = np.stack([table[columns[k]].to_numpy() for k in ks], axis=1).astype(np.int64)
    return PretrainingTable(table["smiles"].astype(str).tolist(), labels, ks, table["row"].to_numpy(np.int64),
                            f"computed on the fly (MACCS keys, mini-batch K-means, seed {config.seed})")


def _unlabelled_table(frame, config: PretrainConfig, accelerator) -> PretrainingTable:
    """The molecules of a contrastive-only run: no pseudo-labels (none are computed, label columns are not read), but
    prepared and checked as the labelling would have (a SMILES that does not parse is left out and listed)."""
    is_main = accelerator is None or accelerator.is_main_process
    if is_main:
        print("contrastive task only: no pseudo-labels are computed", flush=True)
    prepared = standardize_smiles(frame["smiles"].tolist(), config.standardize)
    bad = {s.index for s in prepared.skipped}
    if bad and is_main:
        _warn_left_out(prepared.skipped, frame)
    kept = np.array([i for i in range(len(frame)) if i not in bad], dtype=np.int64)
    return PretrainingTable([prepared.smiles[i] for i in kept], np.zeros((len(kept), 0), dtype=np.int64), [], kept,
                            "none (contrastive task only)")


def _warn_left_out(skipped, frame) -> None:
    lines = frame.attrs.get("lines")
    line_of = (lambda i: int(lines[i])) if lines is not None else (lambda i: i + 2)  # header is line 1
    print(f"warning: {len(skipped)} of {len(frame)} molecules left out of pretraining: "
          f"{list_skipped(skipped, limit=3, line_of=line_of)}", flush=True)


def _check_labelled_standardization(config: PretrainConfig) -> None:
    """Labels given in the input describe the molecules as they were prepared when labelled: drawing them prepared
    another way would pair each picture with another molecule's label."""
    recorded = recorded_standardization(config.input)
    if (recorded or "none") == config.standardize:
        return
    again = f"label the molecules again with `moleclip pseudo-labels --standardize {config.standardize}`"
    if recorded is None:  # a CSV, or a table written by other means: taken as molecules as written
        raise ValueError(f"{config.input} does not record how its molecules were prepared (Parquet tables written by "
                         f"`moleclip pseudo-labels` do), so its labels are taken for the molecules as written: "
                         f"--standardize {config.standardize} cannot be checked against them; {again}")
    raise ValueError(f"{config.input} was labelled with standardize={recorded} but this run asks for "
                     f"--standardize {config.standardize}: pass --standardize {recorded}, or {again}")


def _kept_rows(table, info, frame):
    """Input rows of the labelled molecules (invalid SMILES are left out by the labelling)."""
    for key in ("kept", "kept_indices", "rows"):
        value = info.get(key) if isinstance(info, dict) else getattr(info, key, None)
        if value is not None and len(value) == len(table):
            return np.asarray(value, dtype=np.int64)
    if len(table) == len(frame):
        return np.arange(len(frame), dtype=np.int64)
    # Fall back on matching SMILES (first occurrence in order), which is exact when the table keeps input order.
    rows, j = [], 0
    source = frame["smiles"].tolist()
    for s in table["smiles"].tolist():
        while j < len(source) and source[j] != s:
            j += 1
        if j == len(source):
            raise RuntimeError("the pseudo-label table does not keep the input order; cannot line its rows up")
        rows.append(j)
        j += 1
    return np.asarray(rows, dtype=np.int64)


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items() if not isinstance(v, np.ndarray) or v.size <= 64}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value][:1000]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if dataclasses.is_dataclass(value):
        return _jsonable(dataclasses.asdict(value))
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def split_positions(n: int, config: PretrainConfig, num_processes: int):
    """(train positions, valid positions): a seeded random held-out slice, at most `max_valid` molecules."""
    n_valid = min(config.max_valid, int(round(config.valid_fraction * n))) if config.valid_fraction > 0 else 0
    if 0 < n_valid < num_processes:
        n_valid = 0
    order = sample_rng(config.seed, 7).permutation(n)  # 7: the split's own stream of the run seed
    return np.sort(order[n_valid:]), np.sort(order[:n_valid])

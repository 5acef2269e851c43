"""What a finetuning job reads beside the molecules and targets: the input table's other columns (IDs, a split column,
a subgroup column), an external test file, and the per-molecule prediction tables it writes.

Rows: the job's data set is the main table's usable rows, then (with ``--test-file``) the external file's usable rows;
``JobRows.frame`` holds every input column of those rows as written, in the same order, so IDs pass through untouched.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from moleclip.processing.property_data import PropertyDataset, load_property_dataset
from moleclip.processing.splits import Split, make_split, split_from_labels
from moleclip.processing.tables import read_molecule_table
from moleclip.tasks import is_classification, prediction_prefix
from moleclip.training.outputs import refuse_column_clash

__all__ = ["JobRows", "load_job_rows", "written_columns", "truthy", "job_splits", "shared_split", "prediction_frame"]

TRUE_VALUES = {"1", "1.0", "true", "yes", "y", "t"}
FALSE_VALUES = {"0", "0.0", "false", "no", "n", "f", "", "nan", "none"}


@dataclass
class JobRows:
    """The job's data set (main rows first, then external test rows), their input columns, and how many are main."""

    data: PropertyDataset
    frame: pd.DataFrame
    n_main: int

    @property
    def external(self) -> np.ndarray:
        return np.arange(self.n_main, len(self.data))

    def subset(self, kept: np.ndarray) -> "JobRows":
        kept = np.asarray(kept, dtype=np.int64)
        if (np.diff(kept) <= 0).any():
            raise ValueError("kept rows must be increasing")  # the main rows must stay in front of the external ones
        return JobRows(self.data.subset(kept), self.frame.iloc[kept].reset_index(drop=True),
                       int((kept < self.n_main).sum()))


def _frame(data: PropertyDataset, smiles_column: str | None) -> pd.DataFrame:
    """The input columns of the data set's rows (its file's rows less those the loader left out)."""
    fallback = pd.DataFrame({"smiles": data.smiles})
    if data.source is None:
        return fallback
    try:
        table = read_molecule_table(data.source, smiles_column)
    except (KeyError, ValueError):  # a named set whose raw SMILES column is not recognised by name: SMILES only
        return fallback
    dropped = {s.index for s in data.skipped}
    frame = table.frame.drop(index=sorted(dropped)).reset_index(drop=True)
    return frame if len(frame) == len(data) else fallback


def written_columns(task: str, target_names) -> list[str]:
    """The columns the job's prediction tables add beside the input's (see :func:`prediction_frame` and the ensemble's
    `trust.interval_columns`)."""
    prefix = prediction_prefix(task)
    out = ["seed"]
    for name in target_names:
        out += [f"{prefix}_{name}", f"{prefix}_{name}_spread"]
        out += [f"calibrated_probability_{name}"] if is_classification(task) else [f"predicted_{name}_lower",
                                                                                   f"predicted_{name}_upper"]
    return out


def _check_columns(frame: pd.DataFrame, data: PropertyDataset, where) -> None:
    """Refuse, before any training, input columns that the prediction tables would overwrite with their own."""
    refuse_column_clash(frame.columns, written_columns(data.task, data.target_names),
                        "the job's prediction tables write (the input's columns are kept beside them)", where)


def load_job_rows(args, load) -> JobRows:
    """The main data (`load()`, limited to `args.limit` rows) and the `args.test_file` rows, with their columns."""
    data = load()
    frame = _frame(data, args.smiles_column)
    _check_columns(frame, data, data.source or data.name)
    if args.limit is not None and args.limit < len(data):
        data, frame = data.subset(np.arange(args.limit)), frame.iloc[:args.limit].reset_index(drop=True)
    for option, column in (("--split-column", args.split_column), ("--group-column", args.group_column)):
        if column and column not in frame.columns:
            raise ValueError(f"{option} {column!r}: no such column in {data.source or data.name} (columns: "
                             f"{', '.join(map(str, frame.columns))})")
    n_main = len(data)
    if not args.test_file:
        return JobRows(data, frame, n_main)
    if not Path(args.test_file).is_file():
        raise FileNotFoundError(f"--test-file {args.test_file}: not found")
    external = load_property_dataset(args.test_file, smiles_column=args.smiles_column,
                                     target_columns=list(data.target_names), task=data.task,
                                     standardize=args.standardize)
    ext_frame = _frame(external, args.smiles_column)
    _check_columns(ext_frame, data, f"--test-file {args.test_file}")
    if args.group_column and args.group_column not in ext_frame.columns:
        raise ValueError(f"--group-column {args.group_column!r}: no such column in --test-file {args.test_file}")
    joined = PropertyDataset(name=data.name, smiles=data.smiles + external.smiles,
                             targets=np.concatenate([data.targets, external.targets]),
                             measured=np.concatenate([data.measured, external.measured]),
                             target_names=list(data.target_names), task=data.task, skipped=list(data.skipped),
                             default_split=data.default_split, metric=data.metric, source=data.source,
                             standardize=data.standardize, n_standardized=data.n_standardized)
    return JobRows(joined, pd.concat([frame, ext_frame], ignore_index=True), n_main)


def truthy(values, column: str) -> np.ndarray:
    """A subgroup column as booleans: 1/true/yes (any case) are in the group, 0/false/no/empty are not."""
    text = [str(v).strip().lower() for v in values]
    unknown = sorted({v for v in text if v not in TRUE_VALUES | FALSE_VALUES})
    if unknown:
        raise ValueError(f"--group-column {column!r} must hold 1/true/yes or 0/false/no, found {unknown[:5]}")
    return np.array([v in TRUE_VALUES for v in text], dtype=bool)


def job_splits(rows: JobRows, args, kind: str) -> tuple[dict[int, Split], str]:
    """One split of the main rows per seed, and a sentence saying where it came from (results say so)."""
    smiles = rows.data.smiles[:rows.n_main]
    if not args.split_column:
        return {s: make_split(kind, smiles, seed=s, fractions=args.fractions) for s in args.seeds}, \
            f"{kind} split, drawn per seed" if kind != "scaffold" else "scaffold split (the same for every seed)"
    labels = rows.frame[args.split_column].iloc[:rows.n_main].tolist()
    splits, carved = {}, False
    for seed in args.seeds:
        splits[seed], carved = split_from_labels(labels, smiles, kind, seed=seed, fractions=args.fractions)
    if carved:
        return splits, (f"fixed train/test parts from column {args.split_column!r}; validation carved from the "
                        f"training rows with a {kind} split per seed (train:valid {args.fractions[0]:g}:"
                        f"{args.fractions[1]:g})")
    return splits, f"fixed train/valid/test parts from column {args.split_column!r} (the same for every seed)"


def shared_split(splits: dict[int, Split]) -> bool:
    """True when every seed has the same validation and test rows (then the seeds' models form one ensemble
    evaluated on common molecules)."""
    first = next(iter(splits.values()))
    return all(np.array_equal(s.valid, first.valid) and np.array_equal(s.test, first.test) for s in splits.values())


def prediction_frame(rows: JobRows, index: np.ndarray, pred: np.ndarray, seed=None, extra: dict | None = None
                     ) -> pd.DataFrame:
    """Input columns of `index` rows as written (the measured targets among them, as the user wrote them), then per
    target the prediction (regression, target units) or probability (classification, from logits), then `extra`
    columns (e.g. intervals), then seed (unless None). A target the input columns lack (a named set read under other
    column names) gets a column of its measured values, under its own name, before its prediction. Predictions are
    float32, the precision the model computes them in (written with the digits it carries: outputs.table_cells)."""
    data = rows.data
    table = rows.frame.iloc[index].reset_index(drop=True).copy()
    values = 1.0 / (1.0 + np.exp(-pred)) if is_classification(data.task) else pred
    prefix = prediction_prefix(data.task)
    for j, target in enumerate(data.target_names):
        if target not in table.columns:
            table[target] = data.measured[index, j]
        table[f"{prefix}_{target}"] = np.asarray(values[:, j], dtype=np.float32)
    for name, column in (extra or {}).items():
        table[name] = np.asarray(column, dtype=np.float32)
    if seed is not None:
        table["seed"] = seed
    return table

"""Labelled molecule tables for finetuning and evaluation: the paper's named sets and any user CSV/Parquet file.

A property table is a file with one SMILES column and one or more numeric target columns; an empty cell is a
missing label (NaN), which the losses and metrics mask. :func:`load_property_dataset` reads such a file, validates
it with errors that name the offending column and value, leaves out (and reports, with file line numbers) rows whose
SMILES cannot be used, and returns a :class:`PropertyDataset` holding plain arrays plus the same data as a
Hugging Face :class:`datasets.Dataset`.

The named sets of the MoleCLIP paper live under a data directory (``data_dir=``, else ``$MOLECLIP_DATA_DIR``, else
``shared/data`` beside the repository checkout: see :func:`resolve_data_dir`) in the normalised layout of ``DATASETS``; the MoleculeNet ones can also be fetched from the DeepChem mirror when online.

Relative imports only (see processing/molecules.py for why). The task types and each one's default metric come from
the package's one list of them, ``moleclip.tasks``.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from ..tasks import TASK_TYPES, infer_task, is_classification
from .molecules import SkippedMolecule, list_skipped
from .standardize import standardize_smiles
from .tables import ColumnNotFoundError, read_molecule_table

__all__ = [
    "DATASETS",
    "DATA_DIR_ENV",
    "DEFAULT_METRIC",
    "TASKS",
    "DatasetSpec",
    "PAPER_TABLE_SEEDS",
    "PropertyDataset",
    "SkippedRow",
    "load_property_dataset",
    "default_data_dir",
    "resolve_data_dir",
]

logger = logging.getLogger(__name__)

DATA_DIR_ENV = "MOLECLIP_DATA_DIR"
TASKS = tuple(TASK_TYPES)
# Metric used to pick the best epoch / hyperparameters when a file is not one of the named sets: each task type's
# default (regression: MAE, because the finetuning loss is L1 and the paper reports MAE on its own sets).
DEFAULT_METRIC = {name: task.default_metric for name, task in TASK_TYPES.items()}

# Cell contents read as a missing label, besides the empty cell (written by pandas, R and spreadsheets).
_MISSING_TOKENS = frozenset({"", "nan", "na", "n/a", "null", "none"})
# Parsing below this many rows is quick enough that a progress bar would only be noise.
_PROGRESS_MIN_ROWS = 20_000

_DEEPCHEM = "https://deepchemdata.s3-us-west-1.amazonaws.com/datasets/"


@dataclass(frozen=True)
class DatasetSpec:
    """Where a named set lives and how it is evaluated.

    ``path`` is relative to the data directory and points at the normalised file (a ``smiles`` column and the
    ``target_columns``). ``url`` is the public MoleculeNet copy, whose column names differ: ``source_smiles_column``
    and ``source_target_columns`` say which raw columns become ``smiles`` and the targets after download.
    """

    name: str
    path: str
    target_columns: tuple[str, ...]
    task: str
    default_split: str
    metric: str
    smiles_column: str = "smiles"
    url: str | None = None
    source_smiles_column: str | None = None
    source_target_columns: tuple[str, ...] | None = None
    description: str = ""
    units: str = ""  # of every target, for axis labels; empty where the set's files do not say


_TOX21_TASKS = (
    "NR-AR", "NR-AR-LBD", "NR-AhR", "NR-Aromatase", "NR-ER", "NR-ER-LBD", "NR-PPAR-gamma",
    "SR-ARE", "SR-ATAD5", "SR-HSE", "SR-MMP", "SR-p53",
)  # fmt: skip

DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        DatasetSpec("bace", "moleculenet/bace.csv", ("Class",), "classification", "scaffold", "roc_auc",
                    url=_DEEPCHEM + "bace.csv", source_smiles_column="mol", source_target_columns=("Class",),
                    description="BACE-1 inhibitors, binary"),
        DatasetSpec("bbbp", "moleculenet/bbbp.csv", ("p_np",), "classification", "scaffold", "roc_auc",
                    url=_DEEPCHEM + "BBBP.csv", source_smiles_column="smiles", source_target_columns=("p_np",),
                    description="blood-brain barrier penetration, binary"),
        DatasetSpec("esol", "moleculenet/esol.csv", ("log_solubility",), "regression", "scaffold", "rmse",
                    url=_DEEPCHEM + "delaney-processed.csv", source_smiles_column="smiles",
                    source_target_columns=("measured log solubility in mols per litre",),
                    description="aqueous solubility, log mol/L", units="log mol/L"),
        DatasetSpec("freesolv", "moleculenet/freesolv.csv", ("hydration_free_energy",), "regression", "scaffold",
                    "rmse", url=_DEEPCHEM + "SAMPL.csv", source_smiles_column="smiles",
                    source_target_columns=("expt",), description="hydration free energy, kcal/mol",
                    units="kcal/mol"),
        DatasetSpec("clintox", "moleculenet/clintox.csv", ("FDA_APPROVED", "CT_TOX"), "classification", "scaffold",
                    "roc_auc", url=_DEEPCHEM + "clintox.csv.gz", source_smiles_column="smiles",
                    source_target_columns=("FDA_APPROVED", "CT_TOX"), description="clinical toxicity, 2 tasks"),
        DatasetSpec("tox21", "moleculenet/tox21.csv", _TOX21_TASKS, "classification", "scaffold", "roc_auc",
                    url=_DEEPCHEM + "tox21.csv.gz", source_smiles_column="smiles", source_target_columns=_TOX21_TASKS,
                    description="toxicity assays, 12 tasks with missing labels"),
        DatasetSpec("lipophilicity", "moleculenet/lipophilicity.csv", ("lipo",), "regression", "scaffold", "rmse",
                    url=_DEEPCHEM + "Lipophilicity.csv", source_smiles_column="smiles", source_target_columns=("exp",),
                    description="octanol/water logD at pH 7.4"),
        DatasetSpec("hiv", "moleculenet/hiv.csv.gz", ("HIV_active",), "classification", "scaffold", "roc_auc",
                    url=_DEEPCHEM + "HIV.csv", source_smiles_column="smiles", source_target_columns=("HIV_active",),
                    description="HIV replication inhibition, binary"),
        DatasetSpec("dhbds", "catalysis/dhbds.csv", ("homo_lumo_gap_ev",), "regression", "random", "mae",
                    description="dual H-bond donors (OSCAR), HOMO-LUMO gap in eV", units="eV"),
        DatasetSpec("nhcs", "catalysis/nhcs.csv", tuple(f"npa_charge_{i}" for i in range(1, 5)), "regression",
                    "random", "mae", description="NHC pre-catalysts, 4 NPA charges", units="e"),
        DatasetSpec("phosphines_yield", "catalysis/phosphines_yield.csv", tuple(f"yield_{i}" for i in range(1, 6)),
                    "regression", "random", "mae", description="Ni-Suzuki HTE yields, 5 conditions, fractions 0..1",
                    units="fraction"),
        DatasetSpec("phosphines_selectivity", "catalysis/phosphines_selectivity.csv", ("ddg_kcal_mol",),
                    "regression", "random", "mae", description="Pd-Suzuki selectivity, ddG in kcal/mol",
                    units="kcal/mol"),
        DatasetSpec("kraken_buried_volume", "catalysis/kraken_buried_volume.csv",
                    ("buried_volume_1", "buried_volume_2"), "regression", "random", "mae",
                    description="Kraken phosphine buried volumes, for domain-focused pretraining"),
    )
}  # fmt: skip

# The eight sets of the paper's main table and the seeds each is repeated over: three on the deterministic scaffold
# split (seeds vary only the model), five on the small catalysis sets' random splits (seeds vary the split too).
PAPER_TABLE_SEEDS: dict[str, tuple[int, ...]] = {
    **{name: (1, 2, 3) for name in ("bace", "bbbp", "freesolv", "esol")},
    **{name: (1, 2, 3, 4, 5) for name in ("dhbds", "nhcs", "phosphines_yield", "phosphines_selectivity")},
}


@dataclass(frozen=True)
class SkippedRow(SkippedMolecule):
    """A table row left out because its SMILES could not be used.

    ``index`` is the 0-based data row, ``line`` its line in the file as :func:`tables.read_molecule_table` counts
    them (the header is line 1; blank lines and multi-line records counted; for Parquet the 1-based row number).
    """

    line: int = 0


@dataclass
class PropertyDataset:
    """Valid molecules of a property table with their targets.

    ``targets`` is float32 ``[N, T]`` with NaN for a missing label, what training and scoring use. ``measured`` is the
    same labels in float64 as the file's text reads (-2.48, not float32's -2.4800000190734863): what the package
    writes where it shows a user their measured values (prediction tables, the nearest training molecule's value);
    given ``targets`` alone, their float64 copy. ``hf_dataset`` holds the same rows as a :class:`datasets.Dataset`
    with columns ``smiles`` and one per target, for ``.map``/``.with_transform`` pipelines.
    """

    name: str
    smiles: list[str]
    targets: np.ndarray
    target_names: list[str]
    task: str
    skipped: list[SkippedRow] = field(default_factory=list)
    default_split: str = "random"
    metric: str = "mae"
    source: Path | None = None
    hf_dataset: object = field(default=None, repr=False)
    standardize: str = "none"  # how the SMILES were prepared (standardize.STANDARDIZATIONS)
    n_standardized: int = 0  # rows whose SMILES standardisation changed
    measured: np.ndarray | None = field(default=None, repr=False)
    units: dict[str, str] = field(default_factory=dict)  # target -> its unit, where known (named sets)

    def __post_init__(self) -> None:
        self.measured = np.asarray(self.targets if self.measured is None else self.measured, dtype=np.float64)
        self.targets = np.asarray(self.targets, dtype=np.float32)
        if self.targets.ndim == 1:
            self.targets, self.measured = self.targets[:, None], self.measured.reshape(-1, 1)
        if self.measured.shape != self.targets.shape:
            raise ValueError(f"measured has shape {self.measured.shape}, targets {self.targets.shape}")
        if self.targets.shape != (len(self.smiles), len(self.target_names)):
            raise ValueError(
                f"targets have shape {self.targets.shape}, expected ({len(self.smiles)}, {len(self.target_names)}) "
                "for the given smiles and target_names"
            )
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {self.task!r}")
        if self.hf_dataset is None:
            self.hf_dataset = _to_hf_dataset(self.smiles, self.targets, self.target_names)

    def __len__(self) -> int:
        return len(self.smiles)

    @property
    def n_targets(self) -> int:
        return len(self.target_names)

    def subset(self, indices: Sequence[int] | np.ndarray) -> PropertyDataset:
        """The rows at ``indices`` (positions in this dataset), e.g. one part of a split."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < -len(self) or idx.max() >= len(self)):
            raise IndexError(f"subset index out of range for a dataset of {len(self)} rows")
        idx = np.where(idx < 0, idx + len(self), idx)
        return PropertyDataset(
            name=self.name,
            smiles=[self.smiles[i] for i in idx],
            targets=self.targets[idx],
            measured=self.measured[idx],
            target_names=list(self.target_names),
            task=self.task,
            skipped=list(self.skipped),
            default_split=self.default_split,
            metric=self.metric,
            source=self.source,
            hf_dataset=self.hf_dataset.select(idx),
            standardize=self.standardize,
            n_standardized=self.n_standardized,
            units=dict(self.units),
        )


def _to_hf_dataset(smiles: list[str], targets: np.ndarray, target_names: list[str]):
    # datasets is not loaded by `import moleclip`; only these helpers need it
    import datasets

    features = datasets.Features(
        {"smiles": datasets.Value("string"), **{name: datasets.Value("float32") for name in target_names}}
    )
    columns = {"smiles": list(smiles)}
    for j, name in enumerate(target_names):
        columns[name] = targets[:, j]  # numpy keeps NaN as NaN in Arrow (a list of floats would too)
    return datasets.Dataset.from_dict(columns, features=features)


def default_data_dir() -> Path:
    """``shared/data`` beside the source checkout (``<checkout>/../shared/data``), where a workplace keeps the
    datasets next to its clone of the repository; only used when it exists."""
    return Path(__file__).resolve().parent.parent.parent / "shared" / "data"


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """The data directory: ``data_dir`` if given, else ``$MOLECLIP_DATA_DIR``, else :func:`default_data_dir` when it
    exists; an error explaining all three otherwise."""
    source = "data_dir argument"
    if data_dir is None:
        data_dir = os.environ.get(DATA_DIR_ENV) or None
        source = f"${DATA_DIR_ENV}"
    if data_dir is None:
        default = default_data_dir()
        if default.is_dir():
            return default
        raise FileNotFoundError(
            f"No data directory: pass data_dir=..., set the environment variable {DATA_DIR_ENV} to the folder holding "
            f"moleculenet/ and catalysis/ (e.g. export MOLECLIP_DATA_DIR=/path/to/data), or put that folder at "
            f"{default} (shared/data beside the repository checkout)."
        )
    path = Path(data_dir).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"The data directory from the {source} does not exist or is not a folder: {path}")
    return path


def _is_offline() -> bool:
    flags = ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE")
    if any(os.environ.get(f, "").strip().lower() in {"1", "true", "yes", "on"} for f in flags):
        return True
    try:
        import datasets

        return bool(datasets.config.HF_DATASETS_OFFLINE)
    except (ImportError, AttributeError):
        return False


def _download(url: str, name: str) -> Path:
    """Fetch a public file into the Hugging Face datasets download cache (reused on later calls)."""
    # datasets is not loaded by `import moleclip`; only these helpers need it
    import datasets

    return Path(datasets.DownloadManager(dataset_name=name).download(url))


def _locate_named(spec: DatasetSpec, data_dir) -> tuple[Path, bool]:
    """Path of a named set and whether it is a raw download (whose columns still need renaming)."""
    try:
        root = resolve_data_dir(data_dir)
    except FileNotFoundError as err:
        root, root_problem = None, str(err)
    else:
        candidate = root / spec.path
        if candidate.is_file():
            return candidate, False
        root_problem = f"it is not at {candidate}"
    if spec.url is None:
        raise FileNotFoundError(
            f"Dataset {spec.name!r} not found: {root_problem}. Put the normalised file (a smiles column and "
            f"{', '.join(spec.target_columns)}) at <data dir>/{spec.path}; it comes from the MoleCLIP repository "
            "(github.com/Milo-group/MoleCLIP, folder Datasets/)."
        )
    if _is_offline():
        raise FileNotFoundError(
            f"Dataset {spec.name!r} not found: {root_problem}, and downloading is off (HF_DATASETS_OFFLINE or "
            f"HF_HUB_OFFLINE is set). Put the file at <data dir>/{spec.path} with a smiles column and "
            f"{', '.join(spec.target_columns)}, or allow the download from {spec.url}."
        )
    logger.info("Dataset %r not in the data directory (%s); downloading %s", spec.name, root_problem, spec.url)
    try:
        return _download(spec.url, spec.name), True
    except Exception as err:  # network errors come in many types; all mean the same to the user
        raise FileNotFoundError(
            f"Dataset {spec.name!r} not found ({root_problem}) and the download from {spec.url} failed: {err}. "
            f"Put the file at <data dir>/{spec.path} instead."
        ) from err


def _target_column(columns, wanted: str, path: Path) -> str:
    if wanted in columns:
        return wanted
    available = ", ".join(repr(str(c)) for c in columns)
    raise ColumnNotFoundError(f"{path} has no target column {wanted!r}; available columns: {available}")


def _to_float(column: pd.Series, name: str, path: Path, lines: np.ndarray) -> np.ndarray:
    """A target column as float64 with NaN for missing cells; an error naming the first non-numeric or out-of-range
    cell's line."""
    values = _parse_numbers(column, name, path, lines)
    # Targets are trained in float32: a value beyond its range would become infinity there (and a mean of 3.4e38).
    too_large = np.isinf(values) | (np.abs(np.nan_to_num(values)) > np.finfo(np.float32).max)
    if too_large.any():
        first = int(np.flatnonzero(too_large)[0])
        raise ValueError(
            f"Target column {name!r} in {path} holds {float(values[first]):g} at line {lines[first]}, beyond what float32 "
            "training can represent (about 3.4e38): rescale the column"
        )
    return values


def _parse_numbers(column: pd.Series, name: str, path: Path, lines: np.ndarray) -> np.ndarray:
    """A column's cells as float64, NaN for missing ones; an error naming the first cell that is not a number."""
    if pd.api.types.is_bool_dtype(column) or pd.api.types.is_numeric_dtype(column):
        values = column.astype("float64").to_numpy()
    else:
        text = column.map(lambda v: "" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v).strip())
        missing = text.str.lower().isin(_MISSING_TOKENS)
        numbers = pd.to_numeric(text.where(~missing, None), errors="coerce")
        bad = numbers.isna() & ~missing
        if bad.any():
            first = int(np.flatnonzero(bad.to_numpy())[0])
            raise ValueError(
                f"Target column {name!r} in {path} is not numeric: line {lines[first]} holds "
                f"{text.iloc[first]!r}. Targets must be numbers, with an empty cell for a missing label; pass "
                "target_columns=... to leave out non-target columns."
            )
        values = numbers.astype("float64").to_numpy()
    return values


def _guess_target(df: pd.DataFrame, smiles_column: str, path: Path, lines: np.ndarray) -> list[str]:
    """The target of a file given without target columns: its only numeric column, or a refusal listing the choices.

    Every other column is never taken as a target: a file's extra columns (a calculated value, an ID, a unit) would
    silently become targets.
    """
    others = [c for c in df.columns if c != smiles_column]
    numeric = []
    for column in others:
        try:
            _parse_numbers(df[column], column, path, lines)
        except ValueError:
            continue
        numeric.append(column)
    if len(numeric) == 1:
        if len(others) > 1:
            logger.warning("%s: using %r as the target, the only numeric column (others: %s)", path, numeric[0],
                           ", ".join(repr(str(c)) for c in others if c != numeric[0]))
        return numeric
    if not numeric:
        raise ValueError(f"{path} has no numeric column to predict besides the SMILES column {smiles_column!r} "
                         f"(columns: {', '.join(repr(str(c)) for c in others) or 'none'})")
    raise ValueError(f"{path} has several numeric columns ({', '.join(repr(str(c)) for c in numeric)}): say which "
                     "are targets with target_columns (--target-columns)")


def _check_not_constant(targets: np.ndarray, names: list[str], path: Path) -> None:
    for j, name in enumerate(names):
        labelled = targets[~np.isnan(targets[:, j]), j]
        if labelled.size > 1 and np.unique(labelled).size == 1:
            raise ValueError(f"Target column {name!r} in {path} is constant (every label is {labelled[0]:g}): there "
                             "is nothing to learn; leave it out with target_columns (--target-columns)")


def _check_classification(targets: np.ndarray, names: list[str], path: Path) -> None:
    for j, name in enumerate(names):
        col = targets[:, j]
        labelled = col[~np.isnan(col)]
        off = labelled[~np.isin(labelled, (0.0, 1.0))]
        if off.size:
            raise ValueError(
                f"Classification targets must be 0 or 1 (empty for missing), but column {name!r} in {path} holds "
                f"{off[0]!r}. Pass task='regression' if this is a continuous property."
            )


def _report_skipped(skipped: list[SkippedRow], total: int, path: Path, limit: int = 5) -> None:
    lines = {s.index: s.line for s in skipped}
    warnings.warn(
        f"{len(skipped)} of {total} rows in {path} left out because their SMILES could not be used: "
        f"{list_skipped(skipped, limit, line_of=lines.get)}",
        UserWarning,
        stacklevel=3,
    )


def load_property_dataset(
    path_or_name: str | os.PathLike,
    smiles_column: str | None = None,
    target_columns: Sequence[str] | None = None,
    task: str | None = None,
    data_dir: str | os.PathLike | None = None,
    max_heavy_atoms: int | None = None,
    standardize: str = "none",
) -> PropertyDataset:
    """Load a property table: a named set (see ``DATASETS``) or a CSV / TSV / Parquet file (gzipped or not), read by
    :func:`tables.read_molecule_table`.

    Args:
        path_or_name: a file path, or the name of one of the paper's sets (``"bace"``, ``"esol"``, ...).
        smiles_column: column holding SMILES; recognised by name (``smiles``, ``canonical_smiles``, ``smi``, ``mol``,
            any case) when not given.
        target_columns: target columns; by default the registry's for a named set, else every other column.
        task: ``"regression"`` or ``"classification"``; inferred (all labels 0/1 means classification) when not
            given, validated when given.
        data_dir: folder holding the named sets; defaults to ``$MOLECLIP_DATA_DIR``, else ``shared/data`` beside the
            checkout (:func:`resolve_data_dir`). Named MoleculeNet sets that are
            not there are downloaded from the DeepChem mirror when online.
        max_heavy_atoms: molecules larger than this are left out like unparsable ones. None (the default): no limit
            here, as fingerprints need none; the modes that draw leave out, and report, what cannot be drawn
            (`molecules.MAX_HEAVY_ATOMS`).
        standardize: "none" (the SMILES as written) or "parent" (see `standardize.py`): the
            dataset's SMILES are then the standardised molecules' canonical SMILES, and `n_standardized` counts the
            rows that changed.

    Rows whose SMILES do not parse (or cannot be standardised) are left out, reported in a warning and in ``.skipped`` with their file lines.
    """
    if task is not None and task not in TASKS:
        raise ValueError(f"task must be one of {TASKS} or None, got {task!r}")
    spec = None
    path = Path(os.fspath(path_or_name)).expanduser()
    key = str(path_or_name).strip().lower()
    if not path.is_file():
        if key in DATASETS:
            spec = DATASETS[key]
        elif path.exists():
            raise IsADirectoryError(f"{path} is a folder; expected a CSV or Parquet file")
        else:
            raise FileNotFoundError(
                f"No file at {path}, and {str(path_or_name)!r} is not a named dataset "
                f"(named: {', '.join(DATASETS)})"
            )

    rename: dict[str, str] = {}
    if spec is not None:
        path, raw = _locate_named(spec, data_dir)
        if raw:
            rename = {spec.source_smiles_column: "smiles", **dict(zip(spec.source_target_columns, spec.target_columns))}
        smiles_column = spec.source_smiles_column if raw else (smiles_column or spec.smiles_column)
        target_columns = list(target_columns) if target_columns is not None else list(spec.target_columns)

    # Every cell as text (CSV), so that the checks below, not a parser's guessing, decide what a cell means.
    table = read_molecule_table(path, smiles_column)
    df, smiles_column, lines = table.frame, table.smiles_column, table.line_numbers
    if rename:
        df = df.rename(columns=rename)
        smiles_column = rename.get(smiles_column, smiles_column)
    if len(df.columns) != len(set(df.columns)):
        dupes = sorted({c for c in df.columns if list(df.columns).count(c) > 1})
        raise ValueError(f"{path} has duplicate column names: {dupes}")
    if target_columns is None:
        target_columns = _guess_target(df, smiles_column, path, lines)
    else:
        if isinstance(target_columns, str):
            target_columns = [target_columns]
        target_columns = [_target_column(list(df.columns), c, path) for c in target_columns]
        repeated = sorted({c for c in target_columns if target_columns.count(c) > 1})
        if repeated:  # it would be trained and scored twice, weighing double in the mean over targets
            raise ValueError(f"target column(s) {repeated} given more than once; name each target once")
    if not target_columns:
        raise ValueError(f"{path} has no target columns besides the SMILES column {smiles_column!r}")
    if smiles_column in target_columns:
        raise ValueError(f"Column {smiles_column!r} cannot be both the SMILES column and a target")
    if "smiles" in target_columns:
        raise ValueError("A target column may not be called 'smiles': that name is reserved for the molecules")
    if len(df) == 0:
        raise ValueError(f"{path} has a header but no data rows")

    targets = np.stack([_to_float(df[c], c, path, lines) for c in target_columns], axis=1)
    for j, name in enumerate(target_columns):
        if np.isnan(targets[:, j]).all():
            raise ValueError(f"Target column {name!r} in {path} has no labels at all (every cell is empty)")

    raw_smiles = df[smiles_column].tolist()
    progress = None
    items: Sequence[str] = raw_smiles
    if len(raw_smiles) >= _PROGRESS_MIN_ROWS:
        progress = tqdm(raw_smiles, desc=f"Parsing {path.name}", unit="mol")
        items = progress
    prepared, bad, changed = standardize_smiles(items, standardize, on_error="skip", max_heavy_atoms=max_heavy_atoms)
    failed = {s.index for s in bad}
    kept = [i for i in range(len(raw_smiles)) if i not in failed]
    if progress is not None:
        progress.close()
    skipped = [SkippedRow(index=s.index, smiles=s.smiles, reason=s.reason, line=int(lines[s.index])) for s in bad]
    if not kept:
        first = skipped[0] if skipped else None
        raise ValueError(
            f"No valid molecules in {path}: all {len(raw_smiles)} SMILES in column {smiles_column!r} failed "
            f"(first: line {first.line} {first.smiles!r}, {first.reason})"
        )
    if skipped:
        _report_skipped(skipped, len(raw_smiles), path)

    kept_idx = np.asarray(kept, dtype=np.int64)
    # The labels of the rows that are used decide: a column labelled only on left-out rows would otherwise train a
    # target with no labels, and left-out rows could make a column look varied or a 0/1 column look continuous.
    targets = targets[kept_idx]
    for j, name in enumerate(target_columns):
        if np.isnan(targets[:, j]).all():
            raise ValueError(f"Target column {name!r} in {path} has labels only on rows left out because their SMILES "
                             f"could not be used ({len(skipped)} rows, listed above): nothing to learn it from")
    if task is None:
        task = spec.task if spec is not None else infer_task(targets, names=target_columns)
    if is_classification(task):
        _check_classification(targets, target_columns, path)
    _check_not_constant(targets, target_columns, path)

    name = spec.name if spec is not None else path.name.split(".")[0]
    return PropertyDataset(
        name=name,
        smiles=[prepared[i].strip() for i in kept_idx],
        targets=targets.astype(np.float32),
        measured=targets,
        target_names=[str(c) for c in target_columns],
        task=task,
        skipped=skipped,
        default_split=spec.default_split if spec is not None else "random",
        metric=spec.metric if spec is not None and task == spec.task else DEFAULT_METRIC[task],
        source=path,
        standardize=standardize,
        n_standardized=len(changed),
        units={c: spec.units for c in target_columns if spec is not None and spec.units and c in spec.target_columns},
    )

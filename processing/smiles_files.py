"""Reading lists of SMILES from the file formats molecules usually come in: .smi, .csv and .parquet, gzipped or not.

Nothing is validated here: every entry comes back as a string (empty cells as ``""``), so that the parsing step
(:func:`molecules.parse_many`, the fingerprint functions) reports bad entries by position instead of this reader
dropping them. :func:`read_smiles` can also return the 1-based line number of each entry, for messages a user can
find in their file.

Only flat relative imports are used (none, here), so the module can travel as Hugging Face remote code.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

__all__ = ["SMILES_COLUMN_NAMES", "read_smiles", "detect_smiles_column"]

# Column names recognised as the SMILES column when none is given, in order of preference.
SMILES_COLUMN_NAMES = ("smiles", "SMILES", "Smiles")

_SMI_SUFFIXES = (".smi", ".smi.gz", ".smiles", ".smiles.gz", ".txt", ".txt.gz")
_CSV_SUFFIXES = (".csv", ".csv.gz")
_PARQUET_SUFFIXES = (".parquet", ".pq")


def detect_smiles_column(columns, smiles_column: str | None = None, source: str = "file") -> str:
    """The SMILES column among ``columns``: ``smiles_column`` if given (and present), else a recognised name."""
    columns = list(columns)
    if smiles_column is not None:
        if smiles_column not in columns:
            raise KeyError(f"Column {smiles_column!r} not found in {source}; columns are {columns}")
        return smiles_column
    for name in SMILES_COLUMN_NAMES:
        if name in columns:
            return name
    raise KeyError(
        f"No SMILES column found in {source}: looked for {list(SMILES_COLUMN_NAMES)} among columns {columns}; "
        "name the column explicitly (smiles_column=... / --smiles-column)"
    )


def _read_smi(path: Path) -> tuple[list[str], list[int]]:
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    smiles: list[str] = []
    lines: list[int] = []
    with opener(path, "rt", encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            fields = line.split(None, 1)
            if not fields:
                continue
            # A header line ("smiles" or "SMILES name") is common in .smi exports and is not a molecule.
            if number == 1 and fields[0].lower() == "smiles":
                continue
            smiles.append(fields[0])
            lines.append(number)
    return smiles, lines


def _read_csv(path: Path, smiles_column: str | None) -> tuple[list[str], list[int]]:
    import pandas as pd

    header = pd.read_csv(path, nrows=0)
    column = detect_smiles_column(header.columns, smiles_column, source=str(path))
    # Reading only that column, as strings, with no NA conversion: "" stays "" (reported later as empty) and a
    # SMILES such as "N" or "NA" (pandas reads "NA" as missing by default) is never turned into a float.
    frame = pd.read_csv(path, usecols=[column], dtype=str, keep_default_na=False, na_filter=False)
    smiles = frame[column].tolist()
    # Line numbers assume one record per line after the header (true for SMILES files: no multi-line fields).
    return smiles, list(range(2, len(smiles) + 2))


def _read_parquet(path: Path, smiles_column: str | None) -> tuple[list[str], list[int]]:
    import pyarrow.parquet as pq

    schema = pq.read_schema(path)
    column = detect_smiles_column(schema.names, smiles_column, source=str(path))
    values = pq.read_table(path, columns=[column]).column(column).to_pylist()
    smiles = ["" if value is None else str(value) for value in values]
    # Parquet has no lines; the 1-based row number plays that part.
    return smiles, list(range(1, len(smiles) + 1))


def read_smiles(
    path: str | os.PathLike, smiles_column: str | None = None, return_line_numbers: bool = False
) -> list[str] | tuple[list[str], list[int]]:
    """Read SMILES strings from a file.

    Formats, chosen by extension:

    - ``.smi`` / ``.smiles`` / ``.txt`` (optionally ``.gz``): one SMILES per line; anything after the first
      whitespace (a name column) is ignored; blank lines are ignored; a first line reading ``smiles`` (any case)
      is taken as a header.
    - ``.csv`` (optionally ``.gz``): the column ``smiles_column``, or else the first of ``smiles``, ``SMILES``,
      ``Smiles``; an error lists the columns when none is found.
    - ``.parquet``: as for CSV.

    Args:
        path: the file.
        smiles_column: the column holding SMILES (CSV and Parquet only).
        return_line_numbers: also return, per entry, its 1-based line in the file (row number for Parquet).

    Returns:
        The SMILES strings in file order, or ``(smiles, line_numbers)``.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"SMILES file not found: {path}")
    if path.is_dir():
        raise IsADirectoryError(f"Expected a SMILES file, got a directory: {path}")
    name = path.name.lower()
    if name.endswith(_CSV_SUFFIXES):
        smiles, lines = _read_csv(path, smiles_column)
    elif name.endswith(_PARQUET_SUFFIXES):
        smiles, lines = _read_parquet(path, smiles_column)
    elif name.endswith(_SMI_SUFFIXES):
        if smiles_column is not None:
            raise ValueError(f"smiles_column={smiles_column!r} was given, but {path} is a one-SMILES-per-line file")
        smiles, lines = _read_smi(path)
    else:
        supported = ", ".join(_SMI_SUFFIXES + _CSV_SUFFIXES + _PARQUET_SUFFIXES)
        raise ValueError(f"Unsupported SMILES file type: {path.name} (supported: {supported})")
    return (smiles, lines) if return_line_numbers else smiles

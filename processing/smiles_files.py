"""Transitional names for callers written before :mod:`tables`, the package's one reader of molecule files.

:func:`read_smiles` and :func:`detect_smiles_column` no longer read anything themselves: they hand over to
:func:`tables.read_molecule_table` and :func:`tables.find_smiles_column`, so formats, column choice and messages are
the same everywhere. New code should call those directly; this module goes once no caller is left.
"""

from __future__ import annotations

import os

from .tables import SMILES_COLUMN_NAMES, find_smiles_column, read_molecule_table

__all__ = ["SMILES_COLUMN_NAMES", "read_smiles", "detect_smiles_column"]


def detect_smiles_column(columns, smiles_column: str | None = None, source: str = "file") -> str:
    """Same as :func:`tables.find_smiles_column`."""
    return find_smiles_column(columns, smiles_column, source=source)


def read_smiles(
    path: str | os.PathLike, smiles_column: str | None = None, return_line_numbers: bool = False
) -> list[str] | tuple[list[str], list[int]]:
    """The SMILES column of a molecule file as a list, and with ``return_line_numbers`` each entry's file line.

    Same as ``read_molecule_table(path, smiles_column).smiles`` (and ``.line_numbers``)."""
    table = read_molecule_table(path, smiles_column)
    return (table.smiles, table.line_numbers.tolist()) if return_line_numbers else table.smiles

"""Small pieces several commands share: input reading and output writing of tables of molecules."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from moleclip.processing.molecules import describe_skipped


def add_input_arguments(parser, required: bool = True) -> None:
    parser.add_argument("--input", required=required, help="a .smi/.smi.gz (one SMILES a line), .csv/.csv.gz or .parquet file")
    parser.add_argument("--smiles-column", default=None, help="SMILES column of a CSV/Parquet input (default: auto-detect)")


def read_table(path: str, smiles_column: str | None) -> tuple[pd.DataFrame, str]:
    """The input as a table and the name of its SMILES column (a .smi file becomes a one-column table)."""
    path_ = Path(path)
    if not path_.is_file():
        raise FileNotFoundError(f"input file not found: {path}")
    name = path_.name.lower()
    if name.endswith((".smi", ".smi.gz", ".txt")):
        from moleclip.processing.smiles_files import read_smiles

        return pd.DataFrame({"smiles": read_smiles(path)}), "smiles"
    frame = pd.read_parquet(path) if name.endswith(".parquet") else pd.read_csv(path)
    if smiles_column is None:
        candidates = [c for c in frame.columns if c.lower() == "smiles"]
        if not candidates:
            raise ValueError(f"no SMILES column in {path}; columns are {list(frame.columns)}: pass --smiles-column")
        smiles_column = candidates[0]
    elif smiles_column not in frame.columns:
        raise ValueError(f"column {smiles_column!r} not in {path}; columns are {list(frame.columns)}")
    frame[smiles_column] = frame[smiles_column].fillna("").astype(str)
    return frame, smiles_column


def write_table(frame: pd.DataFrame, path: str) -> None:
    path_ = Path(path)
    path_.parent.mkdir(parents=True, exist_ok=True)
    if path_.suffix == ".parquet":
        frame.to_parquet(path_, index=False)
    elif path_.suffix in (".csv", ".gz"):
        frame.to_csv(path_, index=False)
    else:
        raise ValueError(f"unsupported output type {path_.suffix!r}: use .csv or .parquet")


def report_skipped(skipped, total: int) -> None:
    if skipped:
        print(f"warning: {describe_skipped(skipped)} (of {total}); their rows are left out of the output")


def embedding_columns(embeddings: np.ndarray) -> dict[str, np.ndarray]:
    return {f"emb_{i}": embeddings[:, i] for i in range(embeddings.shape[1])}

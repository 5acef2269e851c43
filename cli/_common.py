"""What several commands share: the input options and reading, checking and writing output tables, reports.

Imports of pandas, numpy and the package's processing code stay inside the functions: command modules import this
one while the parser is built.
"""

from __future__ import annotations

from pathlib import Path

INPUT_HELP = ("a file of molecules: .smi/.smiles/.txt (one SMILES a line, optionally a name after it), .csv/.tsv "
              "with a header, or .parquet; text files may be gzipped (.gz)")
TABLE_SUFFIXES = (".csv", ".csv.gz", ".tsv", ".tsv.gz", ".parquet")


def add_input_arguments(parser, required: bool = True, help: str = INPUT_HELP) -> None:
    parser.add_argument("--input", required=required, help=help)
    parser.add_argument("--smiles-column", default=None,
                        help="the SMILES column of a table (default: the column named smiles, canonical_smiles, smi "
                             "or mol, any case)")


def read_input(path: str, smiles_column: str | None = None, limit: int | None = None):
    """The input file as a `moleclip.processing.tables.MoleculeTable` (every column as written, the SMILES
    column's name, each row's line in the file)."""
    from moleclip.processing.tables import read_molecule_table

    return read_molecule_table(path, smiles_column, limit=limit)


def check_output_suffix(path: str, allowed=TABLE_SUFFIXES, option: str = "--output") -> None:
    """Refuse an output name of a type the command cannot write, before any work is done."""
    if not str(path).lower().endswith(tuple(allowed)):
        raise ValueError(f"{option} {path}: unsupported file type; use one of {', '.join(allowed)}")


def write_table(frame, path: str) -> None:
    """Write a table as CSV, TSV (gzipped when the name ends in .gz) or Parquet, creating the folder."""
    check_output_suffix(path)
    path_ = Path(path)
    name = path_.name.lower()
    path_.parent.mkdir(parents=True, exist_ok=True)
    if name.endswith(".parquet"):
        frame.to_parquet(path_, index=False)
    else:
        frame.to_csv(path_, index=False, sep="\t" if ".tsv" in name else ",")


def report_skipped(skipped, total: int, what: str = "their rows are left out of the output") -> None:
    if skipped:
        from moleclip.processing.molecules import describe_skipped

        print(f"warning: {describe_skipped(skipped)} (of {total}); {what}")


def embedding_columns(embeddings) -> dict:
    return {f"emb_{i}": embeddings[:, i] for i in range(embeddings.shape[1])}

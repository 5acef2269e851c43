"""What several commands share: the input options and reading, checking and writing output tables, reports.

Imports of pandas, numpy and the package's processing code stay inside the functions: command modules import this
one while the parser is built.
"""

from __future__ import annotations

from pathlib import Path

INPUT_HELP = ("a file of molecules: .smi/.smiles/.txt (one SMILES a line, optionally a name after it), .csv/.tsv "
              "with a header, or .parquet; text files may be gzipped (.gz)")
TABLE_SUFFIXES = (".csv", ".csv.gz", ".tsv", ".tsv.gz", ".parquet")
# processing.standardize.STANDARDIZATIONS, spelled out so that `--help` needs no RDKit (tests/test_cli.py checks it).
STANDARDIZATIONS = ("none", "parent")


def add_input_arguments(parser, required: bool = True, help: str = INPUT_HELP, smiles_default: str = "") -> None:
    """--input and --smiles-column; `smiles_default` describes a default the command tries before recognising the
    column by name (e.g. a model's saved column)."""
    parser.add_argument("--input", required=required, help=help)
    parser.add_argument("--smiles-column", default=None,
                        help=f"the SMILES column of a table (default: {smiles_default + ' ' if smiles_default else ''}"
                             "the column named smiles, canonical_smiles, smi or mol, any case)")


def add_standardize_argument(parser, default: str | None, note: str) -> None:
    """The `--standardize` option every command that reads molecules has; `default` None means "the model's own"."""
    parser.add_argument("--standardize", choices=STANDARDIZATIONS, default=default,
                        help="prepare each molecule with RDKit's MolStandardize first: none (as written, the paper's) "
                        f"or parent (largest organic fragment, neutralised: salts and solvents go); {note}")


def read_input(path: str, smiles_column: str | None = None, limit: int | None = None):
    """The input file as a `moleclip.processing.tables.MoleculeTable` (every column as written, the SMILES
    column's name, each row's line in the file)."""
    from moleclip.processing.tables import read_molecule_table

    return read_molecule_table(path, smiles_column, limit=limit)


def check_output_suffix(path: str, allowed=TABLE_SUFFIXES, option: str = "--output",
                        inputs: dict | None = None) -> None:
    """Refuse an output the command cannot write (a type it does not know, a place it may not write, one of the files
    in `inputs`, {option: path}, that it reads), before any work is done."""
    from moleclip.training.outputs import check_writable

    if not str(path).lower().endswith(tuple(allowed)):
        raise ValueError(f"{option} {path}: unsupported file type; use one of {', '.join(allowed)}")
    check_writable(path, option, inputs)


def write_table(frame, path: str, metadata: dict[bytes, bytes] | None = None) -> None:
    """Write a table as CSV, TSV (gzipped when the name ends in .gz) or Parquet, creating the folder; atomically.
    `metadata` goes into a Parquet file's schema (CSV has no place for it)."""
    from moleclip.training.outputs import write_atomically, write_delimited

    check_output_suffix(path)
    name = Path(path).name.lower()
    if name.endswith(".parquet"):
        def parquet(tmp):
            import pyarrow as pa
            import pyarrow.parquet as pq

            table = pa.Table.from_pandas(frame, preserve_index=False)
            if metadata:
                table = table.replace_schema_metadata({**(table.schema.metadata or {}), **metadata})
            pq.write_table(table, tmp)

        write_atomically(path, parquet)
    else:
        tab = name.endswith((".tsv", ".tsv.gz"))  # by the suffix: zinc.tsv_hits.csv is a CSV
        write_atomically(path, lambda tmp: write_delimited(frame, tmp, sep="\t" if tab else ","))


def report_skipped(skipped, table, what: str = "their output cells are left empty") -> None:
    """One warning naming the molecules that could not be used, by their line in the input file (a warning, so that
    the command line prints it as its other warnings: `moleclip COMMAND: warning: ...`)."""
    if skipped:
        import warnings

        from moleclip.processing.molecules import list_skipped
        from moleclip.training.outputs import SKIPPED_COLUMN

        warnings.warn(f"{len(skipped)} of {len(table)} molecules could not be used: "
                      f"{list_skipped(skipped, line_of=table.line)}; {what} and the reason is in the {SKIPPED_COLUMN} "
                      "column", UserWarning, stacklevel=2)


# ------------------------------------------------------------------ chunked, resumable runs (embed, predict)
def add_screening_arguments(parser) -> None:
    """The options of a chunked, resumable run (training/inference/screening.py)."""
    parser.add_argument("--chunk-size", type=int, default=5000,
                        help="molecules read, computed and written at a time (memory stays flat whatever the file "
                        "size; a killed run resumes from its last finished chunk)")
    parser.add_argument("--num-workers", type=int, default=None,
                        help="processes drawing the molecules (default: the free cores, one less than available)")
    parser.add_argument("--keep-parts", action="store_true",
                        help="keep the per-chunk shards (<output>.parts/) after the output is assembled")
    parser.add_argument("--overwrite", action="store_true",
                        help="start over, discarding the shards of an unfinished earlier run into the same output")


def screening_arguments(args) -> dict:
    """The keyword arguments of `training.screening.screen` that the options above give."""
    return {"smiles_column": args.smiles_column, "chunk_rows": args.chunk_size, "overwrite": args.overwrite,
            "keep_parts": args.keep_parts}


def screening_workers(args) -> int:
    from moleclip.training.inference.screening import default_workers

    if args.num_workers is not None and args.num_workers < 0:
        raise ValueError("--num-workers must be >= 0")
    return default_workers() if args.num_workers is None else args.num_workers


def report_screen(summary, skipped_what: str = "their output cells are left empty") -> None:
    """The lines a finished chunked run prints before its own: the molecules it could not use, how many rows repeat a
    molecule, and what a resumed run kept from the earlier one."""
    import warnings

    from moleclip.training.inference.screening import skipped_message

    if summary.skipped:
        warnings.warn(skipped_message(summary, skipped_what), UserWarning, stacklevel=2)
    if summary.repeated:  # said, not refused: a table may repeat a molecule on purpose (replicates, several IDs)
        warnings.warn(f"{summary.repeated} of {summary.rows} rows repeat the molecule of an earlier row (identical "
                      "canonical SMILES); every row keeps its own output", UserWarning, stacklevel=2)
    if summary.kept:
        print(f"resumed: {summary.kept} of {summary.chunks} chunks were kept from the earlier run")


def model_name(spec: str) -> str:
    """A model as recorded with results: a folder by its absolute path (so a resumed run elsewhere still matches),
    a Hub name or preset as given. A preset's name is the preset even where a folder has that name, as
    `load_backbone` takes it."""
    from moleclip.configuration_moleclip import MODEL_PRESETS

    return spec if spec in MODEL_PRESETS or not Path(spec).exists() else str(Path(spec).resolve())


def encoder_fingerprint(model) -> str:
    """SHA-256 of the weights a molecule's embedding comes from (the vision transformer and its projection), in
    float32: the same for the same encoder wherever its folder lies, whatever heads it carries; another encoder
    gives other embeddings, which must never be compared with these."""
    import hashlib

    import torch

    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        if name.startswith(("vision_model.", "visual_projection.")):
            digest.update(f"{name}{tuple(tensor.shape)}".encode())
            digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()

"""Embed molecules: a file of SMILES in, a file of MoleCLIP embeddings out (batched, with a progress bar).

The output keeps the input's columns and adds `emb_0..emb_<d-1>` (.csv or .parquet), or is a float32 matrix (.npy,
with the kept input rows in `<name>.rows.npy`). Molecules that cannot be drawn are reported and left out.
`--standardize parent` draws each molecule's standardised parent (default: the processor's saved setting) and adds a
`moleclip_standardized_smiles` column.

Examples:
  moleclip embed --model tiny --input molecules.smi --output embeddings.parquet
  moleclip embed --model my-moleclip/ --input data.csv --smiles-column SMILES --output data_emb.npy --batch-size 128
"""

from __future__ import annotations

NAME = "embed"
HELP = "compute MoleCLIP embeddings for a file of SMILES"


def add_arguments(parser) -> None:
    from ._common import add_input_arguments, add_standardize_argument

    parser.add_argument("--model", required=True, help="MoleCLIP/CLIP checkpoint (folder or Hub name), .pth, or preset")
    add_input_arguments(parser)
    parser.add_argument("--output", required=True, help=".parquet, .csv, .tsv (optionally .gz) or .npy")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: best available)")
    parser.add_argument("--r-groups", action="store_true", help="draw terminal atoms as R-group labels")
    add_standardize_argument(parser, None, "default: the setting saved with the model's processor (none unless the "
                             "model was finetuned with --standardize)")
    parser.add_argument("--no-progress", action="store_true")


def run(args) -> int:
    from moleclip.training.outputs import hold_output_file

    from ._common import TABLE_SUFFIXES, check_output_suffix

    check_output_suffix(args.output, (*TABLE_SUFFIXES, ".npy"))
    with hold_output_file(args.output):  # a second process writing the same file is refused, not silently lost
        return _embed(args)


def _provenance(args, processor, dimension: int) -> dict[bytes, bytes]:
    """What made these embeddings, for a Parquet file's metadata: `moleclip index` keeps it and `moleclip search`
    embeds its queries with the same model and drawing settings."""
    import json
    from pathlib import Path

    from moleclip.training.vector_index import EMBEDDED_WITH_KEY

    model = str(Path(args.model).resolve()) if Path(args.model).exists() else args.model
    record = {"model": model, "projection_dim": int(dimension), "r_groups": bool(args.r_groups),
              "standardize": processor.standardize}
    return {EMBEDDED_WITH_KEY: json.dumps(record).encode()}


def _embed(args) -> int:
    from pathlib import Path

    import numpy as np
    import pandas as pd

    from moleclip.training.hub import load_backbone, load_processor
    from moleclip.training.inference import embed_smiles

    from ._common import embedding_columns, mark_skipped, mark_standardized, read_input, report_skipped, write_table

    table = read_input(args.input, args.smiles_column)
    frame = table.frame
    if not len(frame):
        raise ValueError(f"{args.input} holds no molecules")
    model = load_backbone(args.model)
    processor = load_processor(args.model)
    extra = {"r_groups": True} if args.r_groups else {}
    if args.standardize is not None:
        processor.standardize = args.standardize
    embeddings, kept, skipped = embed_smiles(model, processor, table.smiles, batch_size=args.batch_size,
                                             device=args.device, progress=not args.no_progress, **extra)
    report_skipped(skipped, table, "their embedding cells are left empty (.npy: their rows are left out)")
    if not len(kept):
        raise ValueError(f"none of the {len(frame)} molecules in {args.input} could be drawn; nothing written")
    out = Path(args.output)
    if out.suffix == ".npy":
        from moleclip.training.outputs import write_atomically

        write_atomically(out.with_suffix(".rows.npy"), lambda tmp: np.save(tmp, np.asarray(kept)))
        write_atomically(out, lambda tmp: np.save(tmp, embeddings.astype(np.float32)))
    else:
        # every input row, in order; molecules that could not be drawn get empty embedding cells, like predict's
        full = np.full((len(frame), embeddings.shape[1]), np.nan, dtype=np.float32)
        full[np.asarray(kept)] = embeddings
        frame = pd.concat([frame.reset_index(drop=True), pd.DataFrame(embedding_columns(full))], axis=1)
        mark_skipped(frame, skipped)
        mark_standardized(frame, table.smiles, processor.standardize)
        write_table(frame, args.output, metadata=_provenance(args, processor, embeddings.shape[1]))
    print(f"wrote {len(kept)} embeddings of size {embeddings.shape[1]} to {out}")
    return 0

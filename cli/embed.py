"""Embed molecules: a file of SMILES in, a file of MoleCLIP embeddings out (batched, with a progress bar).

The output keeps the input's columns and adds `emb_0..emb_<d-1>` (.csv or .parquet), or is a float32 matrix (.npy,
with the kept input rows in `<name>.rows.npy`). Molecules that cannot be drawn are reported; a table keeps their rows,
with empty embedding cells and the reason in `moleclip_skipped`, and a .npy leaves them out. A .parquet output records
the model (and its encoder's weights) and drawing settings, for `moleclip index` and `moleclip search`.
`--standardize parent` draws each molecule's standardised parent (default: the processor's saved setting) and adds a
`moleclip_standardized_smiles` column.

Any file size: the input is read --chunk-size rows at a time, drawn by --num-workers processes, and each chunk is
written as it is done to `<output>.parts/`; the output is assembled from them at the end. A killed run started again
with the same arguments computes only the missing chunks (--overwrite starts over). Under `accelerate launch` each
process takes its share of the chunks. See training/inference/screening.py and training/inference/engine.py.

Examples:
  moleclip embed --model tiny --input molecules.smi --output embeddings.parquet
  moleclip embed --model my-moleclip/ --input data.csv --smiles-column SMILES --output data_emb.npy --batch-size 128
  accelerate launch -m moleclip_cli.main embed --model tiny --input zinc.csv.gz --output zinc_emb.parquet
"""

from __future__ import annotations

NAME = "embed"
HELP = "compute MoleCLIP embeddings for a file of SMILES"


def add_arguments(parser) -> None:
    from ._common import add_input_arguments, add_screening_arguments, add_standardize_argument

    parser.add_argument("--model", required=True, help="MoleCLIP/CLIP checkpoint (folder or Hub name), .pth, or preset")
    add_input_arguments(parser, smiles_default="the column a finetuned model was trained on, when it was named and "
                        "the table has it; else")
    parser.add_argument("--output", required=True, help=".parquet, .csv, .tsv (optionally .gz) or .npy")
    parser.add_argument("--batch-size", type=int, default=64, help="molecules per forward pass")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: best available)")
    parser.add_argument("--r-groups", action="store_true", help="draw terminal atoms as R-group labels")
    add_standardize_argument(parser, None, "default: the setting saved with the model's processor (none unless the "
                             "model was finetuned with --standardize)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_screening_arguments(parser)


def run(args) -> int:
    from moleclip.training.inference.screening import hold_output

    from ._common import TABLE_SUFFIXES, check_output_suffix

    check_output_suffix(args.output, (*TABLE_SUFFIXES, ".npy"), inputs={"--input": args.input})
    if args.batch_size < 1:
        raise ValueError("--batch-size must be >= 1")
    with hold_output(args.output):  # a second process writing the same file is refused, not silently lost
        return _embed(args)


def _provenance(args, model, processor, dimension: int) -> dict[bytes, bytes]:
    """What made these embeddings, for a Parquet file's metadata: `moleclip index` keeps it and `moleclip search`
    embeds its queries with the same model (checked by its encoder's weights) and drawing settings."""
    import json

    from moleclip.training.retrieval.index import EMBEDDED_WITH_KEY

    from ._common import encoder_fingerprint, model_name

    record = {"model": model_name(args.model), "projection_dim": int(dimension), "r_groups": bool(args.r_groups),
              "standardize": processor.standardize, "encoder_sha256": encoder_fingerprint(model)}
    if args.smiles_column is not None:  # named, not recognised: `moleclip index` reads the file with it by default
        record["smiles_column"] = args.smiles_column
    return {EMBEDDED_WITH_KEY: json.dumps(record).encode()}


def _embed(args) -> int:
    import json
    from pathlib import Path

    from moleclip.processing.tables import table_smiles_column
    from moleclip.training.inference import devices, screening
    from moleclip.training.inference.engine import EmbeddingChunks
    from moleclip.training.kinds import ImageKind
    from moleclip.training.serving.hub import PRESETS, load_encoder, load_processor

    from ._common import report_screen, screening_arguments, screening_workers

    device = devices.choose_device(args.device)  # a device this machine lacks: said before the model loads
    if args.model in PRESETS:
        # A preset's weights are random. Drawn from a fixed seed, every run (and so a resumed run's finished shards
        # and the rest) embeds with the same model.
        import torch

        torch.manual_seed(0)
    model = load_encoder(args.model)
    processor = load_processor(args.model)
    args.smiles_column = table_smiles_column(args.input, args.smiles_column,
                                             getattr(model.config, "smiles_column", None))
    if args.standardize is not None:
        processor.standardize = args.standardize
    # before the embedder moves the model to its device; also what lets a resumed run refuse a changed model folder
    provenance = _provenance(args, model, processor, model.config.projection_dim)
    embedder = EmbeddingChunks(ImageKind(model, processor), batch_size=args.batch_size,
                               num_workers=screening_workers(args), device=device,
                               options={"r_groups": True} if args.r_groups else {})
    # what decides the embeddings: a resumed run must have computed its finished shards the same way
    decides = {"command": "embed", "smiles_column": args.smiles_column,
               "embedded_with": [json.loads(value) for value in provenance.values()]}
    summary = screening.screen(args.input, args.output, embedder, decides, metadata=provenance,
                               progress=not args.no_progress, **screening_arguments(args))
    if devices.process_rank()[0] != 0:
        return 0  # the main process of the launch assembles and reports
    report_screen(summary, "their embedding cells are left empty (.npy: their rows are left out)")
    print(f"wrote {summary.written} embeddings of size {embedder.width} to {Path(args.output)}")
    return 0

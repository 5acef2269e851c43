"""Draw the pretraining pictures of every molecule once, ahead of training, for machines where drawing cannot keep up.

The store holds, per molecule, the plain drawing and N drawings in random styles (PNG, about 10 kB each at 224 px) in
Parquet shards: a Hugging Face dataset (`datasets.load_dataset("parquet", data_files=..., streaming=True)` reads it;
`--push-to-hub` uploads it). `moleclip pretrain --prerendered STORE` (or `training/pretrain.py`) then only decodes and
augments. An interrupted run is resumed by running the same command again (finished shards are kept). Pre-render the
same file you pretrain on (typically the output of `moleclip pseudo-labels`); molecules are matched by SMILES, and any
missing from the store are drawn during training as usual.

Examples:
  moleclip prerender --input chembl_labels.parquet --output prerendered/chembl --variants 4
  moleclip prerender --input molecules.smi --output store --variants 2 --n-jobs 8 --limit 10000
  moleclip prerender --input chembl.smi --output prerendered/chembl --variants 3 --push-to-hub lab/chembl-drawings
"""

from __future__ import annotations

NAME = "prerender"
HELP = "draw pretraining pictures ahead of time into a store read by `moleclip pretrain --prerendered`"


def add_arguments(parser) -> None:
    from ._common import add_input_arguments

    add_input_arguments(parser)
    parser.add_argument("--output", required=True,
                        help="folder of the store (finished once its manifest.json is written; rerun to resume)")
    parser.add_argument("--variants", type=int, default=2,
                        help="random-style drawings per molecule; training picks one per epoch at random (default 2)")
    parser.add_argument("--model", default=None,
                        help="the backbone you will pretrain (folder, Hub name, .pth or preset): its processor draws, "
                        "so its drawing settings (R-groups, drawing back end) are the pictures' (default: the default "
                        "processor)")
    parser.add_argument("--size", type=int, default=224, help="picture side in pixels (the model's image size)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random drawing styles")
    parser.add_argument("--n-jobs", type=int, default=None, help="drawing processes (default: all cores)")
    parser.add_argument("--limit", type=int, default=None, help="only the first N molecules")
    parser.add_argument("--shard-size", type=int, default=2048,
                        help="molecules per Parquet shard (default 2048: about 80 MB with 3 variants at 224 px)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing store, or start an interrupted one over (default: resume it)")
    parser.add_argument("--push-to-hub", metavar="REPO", default=None, help="upload the store to this Hub dataset repo")
    parser.add_argument("--private", action="store_true", help="make a new Hub repo private")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args, hub_api=None) -> int:
    from moleclip.processing.prerendered_store import prerender, push_store_to_hub

    from ._common import read_input

    if args.push_to_hub:
        from moleclip.training.serving.hub import check_push_possible

        check_push_possible(hub_api)  # now, not after drawing every molecule
    processor = None
    if args.model is not None:
        from moleclip.training.serving.hub import load_processor

        processor = load_processor(args.model, size=args.size)
    smiles = read_input(args.input, args.smiles_column, limit=args.limit).smiles
    store = prerender(smiles, args.output, size=args.size, n_variants=args.variants, seed=args.seed, n_jobs=args.n_jobs,
                      shard_size=args.shard_size, overwrite=args.overwrite, progress=not args.no_progress,
                      processor=processor)
    meta = store.meta
    pictures = meta["n_molecules"] * (1 + meta["n_variants"])
    print(f"wrote {store.path}: {meta['n_molecules']} molecules x {1 + meta['n_variants']} drawings, "
          f"{len(store.files)} shard(s), {meta['bytes'] / 1e6:.1f} MB ({meta['bytes'] / pictures / 1e3:.1f} kB a picture); "
          f"{meta['failed']} could not be drawn")
    if args.push_to_hub:
        url = push_store_to_hub(store.path, args.push_to_hub, private=args.private or None, api=hub_api)
        print(f"pushed to {args.push_to_hub}: {url}")
    return 0

"""Draw the pretraining pictures of every molecule once, ahead of training, for machines where drawing cannot keep up.

The store holds, per molecule, the plain drawing and N drawings in random styles (PNG, about 10 kB each at 224 px);
`moleclip pretrain --prerendered STORE` (or `training/pretrain.py`) then only decodes and augments. Pre-render the same file you pretrain on
(typically the output of `moleclip pseudo-labels`); molecules are matched by SMILES, and any missing from the store
are drawn during training as usual.

Examples:
  moleclip prerender --input chembl_labels.parquet --output prerendered/chembl --variants 4
  moleclip prerender --input molecules.smi --output store --variants 2 --n-jobs 8 --limit 10000
"""

from __future__ import annotations

NAME = "prerender"
HELP = "draw pretraining pictures ahead of time into a store read by `moleclip pretrain --prerendered`"


def add_arguments(parser) -> None:
    from ._common import add_input_arguments

    add_input_arguments(parser)
    parser.add_argument("--output", required=True, help="folder of the store (written as <output>.tmp, then renamed)")
    parser.add_argument("--variants", type=int, default=2,
                        help="random-style drawings per molecule; training picks one per epoch at random (default 2)")
    parser.add_argument("--size", type=int, default=224, help="picture side in pixels (the model's image size)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random drawing styles")
    parser.add_argument("--n-jobs", type=int, default=None, help="drawing processes (default: all cores)")
    parser.add_argument("--limit", type=int, default=None, help="only the first N molecules")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing store")
    parser.add_argument("--no-progress", action="store_true")


def run(args) -> int:
    from moleclip.processing.pretraining_data import prerender

    from ._common import read_input

    smiles = read_input(args.input, args.smiles_column, limit=args.limit).smiles
    store = prerender(smiles, args.output, size=args.size, n_variants=args.variants, seed=args.seed, n_jobs=args.n_jobs,
                      overwrite=args.overwrite, progress=not args.no_progress)
    meta = store.meta
    print(f"wrote {store.path}: {meta['n_molecules']} molecules x {1 + meta['n_variants']} drawings, "
          f"{meta['bytes'] / 1e6:.1f} MB ({meta['bytes'] / max(1, meta['n_molecules'] * (1 + meta['n_variants'])) / 1e3:.1f} "
          f"kB a picture); {meta['failed']} could not be drawn")
    return 0

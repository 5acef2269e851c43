"""Draw molecules the way MoleCLIP sees them and save PNG files.

Examples:
  moleclip render "c1ccccc1O" --output phenol.png
  moleclip render "CCO" "CCN" --output-dir drawings/ --randomize --augmentation default --seed 0
  moleclip render --input molecules.smi --output-dir drawings/ --r-groups
"""

from __future__ import annotations

NAME = "render"
HELP = "draw SMILES as the model sees them (PNG)"


def add_arguments(parser) -> None:
    from ._common import INPUT_HELP, add_input_arguments, add_standardize_argument

    parser.add_argument("smiles", nargs="*", help="SMILES strings to draw")
    add_input_arguments(parser, required=False, help="or " + INPUT_HELP)
    parser.add_argument("--output", help="PNG path, for a single molecule")
    parser.add_argument("--output-dir", help="folder for one PNG per molecule (mol_<position>.png)")
    parser.add_argument("--size", type=int, default=None, help="picture size in pixels (default: the --model "
                        "processor's, else 224)")
    parser.add_argument("--randomize", action="store_true", help="random drawing style (pretraining's second view)")
    parser.add_argument("--augmentation", default="none", help="none | default | intense")
    parser.add_argument("--r-groups", action="store_true", help="draw terminal C/O/N/S/F/Cl/Br/I atoms as R1..R8")
    parser.add_argument("--seed", type=int, default=None, help="seed for --randomize/--augmentation")
    parser.add_argument("--model", default=None, help="use the processor settings saved with this checkpoint")
    add_standardize_argument(parser, None, "default: the --model processor's setting, else none")


def run(args) -> int:
    from pathlib import Path

    from PIL import Image

    from moleclip import MoleCLIPImageProcessor

    from moleclip.processing.molecules import describe_skipped

    from ._common import read_input

    smiles = list(args.smiles)
    if args.input:
        smiles += read_input(args.input, args.smiles_column).smiles
    if not smiles:
        raise ValueError("give SMILES on the command line or an --input file")
    if bool(args.output) == bool(args.output_dir):
        raise ValueError("give exactly one of --output (one molecule) or --output-dir")
    if args.output and len(smiles) != 1:
        raise ValueError(f"--output takes one molecule, got {len(smiles)}: use --output-dir")
    if args.model:
        from moleclip.training.serving.hub import load_processor

        processor = load_processor(args.model)
    else:
        processor = MoleCLIPImageProcessor()
    if args.size is not None:  # also over a --model processor's own: the user asked for this size
        processor.size = {"height": args.size, "width": args.size}
    if args.standardize is not None:
        processor.standardize = args.standardize
    images, kept, skipped = processor.render_images(
        smiles, randomize_drawing=args.randomize or None, r_groups=args.r_groups or None,
        augmentation=args.augmentation, seed=args.seed, on_error="raise" if args.output else "skip",
    )
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(images[0]).save(args.output)
        print(f"wrote {args.output}")
        return 0
    if skipped:  # mixed command-line and file input: positions in the list of molecules, which PNGs are named by
        print(f"warning: {describe_skipped(skipped)} (of {len(smiles)}); no picture is written for them")
    if not len(images):
        raise ValueError(f"none of the {len(smiles)} molecules could be drawn; nothing written")
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    for index, image in zip(kept, images):
        Image.fromarray(image).save(out / f"mol_{index}.png")
    print(f"wrote {len(images)} PNG file{'s' if len(images) != 1 else ''} to {out}")
    return 0

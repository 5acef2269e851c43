"""Create a MoleCLIP checkpoint folder from a backbone, ready to pretrain, finetune, embed or share.

The backbone is a CLIP checkpoint (default openai/clip-vit-base-patch16, fetched from the Hub), a local folder, the
paper's released `MoleCLIP - Primary.pth`, or a randomly initialised preset: `tiny` (runs anywhere in seconds) or
`base` (the ViT-B/16 shape, for benchmarks). The folder holds config, safetensors weights, the image processor's
settings, the model code (for trust_remote_code loading) and a model card.

Examples:
  moleclip init --backbone openai/clip-vit-base-patch16 --output-dir moleclip-init
  moleclip init --backbone tiny --output-dir tiny-model
"""

from __future__ import annotations

NAME = "init"
HELP = "build a MoleCLIP checkpoint from CLIP, a .pth file or a preset"


def add_arguments(parser) -> None:
    parser.add_argument("--backbone", default="openai/clip-vit-base-patch16",
                        help="CLIP name or path, a MoleCLIP checkpoint, a .pth file, or a preset: tiny | base "
                             "(default: openai/clip-vit-base-patch16)")
    parser.add_argument("--output-dir", required=True, help="the folder to write the checkpoint to")
    add_head_arguments(parser, "K of each structural classification head (default 300 3000; none: no heads)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed for randomly initialised weights (default 0)")


def add_head_arguments(parser, heads_help: str) -> None:
    """--pseudo-label-classes, --push-to-hub and --overwrite, which init and convert-original share."""
    parser.add_argument("--pseudo-label-classes", type=_class_count, nargs="*", default=None, metavar="K",
                        help=heads_help)
    parser.add_argument("--push-to-hub", default=None, metavar="REPO", help="also upload the folder to this Hub repo")
    parser.add_argument("--overwrite", action="store_true",
                        help="write over a model already in --output-dir (its weights are replaced)")


def _class_count(text: str) -> int | None:
    """A K of --pseudo-label-classes, or None for the word none (no heads), as the help says."""
    import argparse

    if text.strip().lower() == "none":
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number or none: {text!r}") from None


# The files that make a folder a model: one there is a model's (a trained one's, perhaps), not to be silently replaced
# by new, often random, weights.
MODEL_FILES = ("config.json", "model.safetensors", "pytorch_model.bin")


def _replaced_by_a_save(name: str) -> bool:
    """Whether a file of this name is one that saving a model writes anew: config, processor, safetensors weights
    (transformers removes shards of an earlier save itself), the code files, the card. Not a pytorch_model.bin or a
    shard index, which a save of one safetensors file leaves in place: old weights beside the new."""
    import fnmatch

    return name.endswith(".py") or any(fnmatch.fnmatch(name, pattern) for pattern in (
        "config.json", "preprocessor_config.json", "README.md", "model*.safetensors", "__pycache__"))


def check_before_work(args) -> dict:
    """Refuse what would fail after the model is built (a model in the way, a push while offline) and return the
    config overrides the options ask for."""
    from pathlib import Path

    folder = Path(args.output_dir).expanduser()
    found = [name for name in MODEL_FILES if (folder / name).exists()]
    if found and not args.overwrite:
        raise FileExistsError(f"{args.output_dir} already holds a model ({', '.join(found)}): pass --overwrite to "
                              "replace it, or choose another folder")
    if found:
        # What a finetuned model keeps beside its weights (ensemble, intervals, domain, results) would stay, and go to
        # the Hub, with new weights it does not describe; it is not ours to delete here.
        others = sorted(p.name for p in folder.iterdir() if not _replaced_by_a_save(p.name))
        if others:
            raise FileExistsError(f"--overwrite replaces a model's weights, config, processor, code and card, but "
                                  f"{args.output_dir} also holds {', '.join(others[:6])}"
                                  f"{f' and {len(others) - 6} more' if len(others) > 6 else ''}, which belong to the "
                                  "model being replaced: remove them, or choose another folder")
    elif folder.is_dir():
        # Not a model's folder: a save would still write README.md, config files and its code files (*.py) there, over
        # a project's own files of those names.
        clashes = sorted(p.name for p in folder.iterdir() if p.is_file() and _replaced_by_a_save(p.name))
        if clashes:
            raise FileExistsError(f"{args.output_dir} holds {', '.join(clashes[:6])}"
                                  f"{f' and {len(clashes) - 6} more' if len(clashes) > 6 else ''} but no model; saving "
                                  "a model there would replace them (its card is README.md, its code *.py files): "
                                  "choose a new or empty folder")
    from moleclip.training.outputs import check_writable

    check_writable(folder / "config.json", "--output-dir")  # a file in the way, a read-only place: said now
    if args.push_to_hub:
        from moleclip.training.serving.hub import check_push_possible

        check_push_possible()
    ks = args.pseudo_label_classes
    if ks is None:
        return {}
    if None in ks:
        if len(ks) > 1:
            raise ValueError(f"--pseudo-label-classes {' '.join('none' if k is None else str(k) for k in ks)}: "
                             "none means no heads; give it alone, or give numbers only")
        ks = []
    return {"pseudo_label_classes": ks}


def run(args) -> int:
    import torch

    from moleclip.training.serving.hub import describe_backbone, load_backbone, load_processor, push_model_dir, save_model_dir

    overrides = check_before_work(args)  # before loading anything
    torch.manual_seed(args.seed)
    model = load_backbone(args.backbone, **overrides)
    processor = load_processor(args.backbone)
    card = {"title": f"MoleCLIP encoder initialised from {args.backbone}", "backbone": describe_backbone(args.backbone),
            "training_summary": "none yet (initial weights)", "repo_id": args.push_to_hub}
    folder = save_model_dir(args.output_dir, model, processor, card=card)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"wrote {folder} ({n_params / 1e6:.2f}M parameters, embedding size {model.config.projection_dim})")
    if args.push_to_hub:
        print(f"pushed: {push_model_dir(folder, args.push_to_hub)}")
    return 0

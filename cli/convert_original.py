"""Convert the paper's released encoder (`MoleCLIP - Primary.pth`, Zenodo record 13826016) to a Hugging Face folder.

The file is read with torch.load(weights_only=True): tensors only, no code from the pickle runs. The result loads with
`AutoModel.from_pretrained(folder)` (and, pushed to the Hub, with trust_remote_code=True anywhere).

Example:
  moleclip convert-original --input "MoleCLIP - Primary.pth" --output-dir moleclip-primary
"""

from __future__ import annotations

from .init import add_head_arguments, check_before_work

NAME = "convert-original"
HELP = "convert the paper's MoleCLIP .pth weights to a Hugging Face checkpoint"


def add_arguments(parser) -> None:
    parser.add_argument("--input", required=True, help="path of the released .pth file")
    parser.add_argument("--output-dir", required=True, help="the folder to write the checkpoint to")
    add_head_arguments(parser, "K of each pseudo-label head to add for further pretraining, freshly initialised "
                               "(default 300 3000; none: no heads)")


RELEASED_NAME = "MoleCLIP - Primary.pth"  # the paper's file, Zenodo record 13826016


def run(args) -> int:
    from pathlib import Path

    from moleclip.convert_original import convert_original_checkpoint, original_processor

    from moleclip.training.serving.hub import push_model_dir, save_model_dir

    overrides = check_before_work(args)  # a model in the way is refused before the file is read
    model = convert_original_checkpoint(args.input, **overrides)
    # The file records no training; the card says the paper's only of the file the paper released (by its name), not
    # of any checkpoint in the reference code's format (a user's own pretraining with it).
    name = Path(args.input).name
    if name == RELEASED_NAME:
        card = {"title": "MoleCLIP (paper's primary encoder, converted)",
                "backbone": f"`{name}` (Harnik et al. 2025)",
                "training_summary": "ChEMBL-25 pretraining by the paper's authors (4 epochs)"}
    else:
        card = {"title": f"MoleCLIP encoder converted from {name}", "backbone": f"`{name}` (the paper's format)",
                "training_summary": "not recorded in the converted file"}
    card["repo_id"] = args.push_to_hub
    # The released weights were trained on B, G, R pictures: the saved processor feeds them so (channel_order="bgr").
    folder = save_model_dir(args.output_dir, model, original_processor(), card=card)
    print(f"wrote {folder}")
    if args.push_to_hub:
        print(f"pushed: {push_model_dir(folder, args.push_to_hub)}")
    return 0

"""Serve a finetuned model as a web page (gradio): paste SMILES or upload a table, see each molecule's prediction.

The page shows, per molecule, the drawing the model sees, the prediction with its interval (regression) or calibrated
probability (classification) and the applicability-domain flag (the numbers `moleclip predict` writes), an atom map
(integrated gradients for MoleCLIP models, Morgan-bit occlusion for fingerprint models, as `moleclip explain`; a box
turns it off for speed) and the 3 nearest training molecules with their measured values. The results download as
CSV (the input's columns, in order, with the prediction columns). Bad input is answered in the page.

The same page runs as a Hugging Face Space: `model_cards/space_app.py`, saved as the Space's app.py, builds it from
the model folder or Hub repository named by $MOLECLIP_MODEL. Needs `pip install "moleclip[app]"`.

Examples:
  moleclip app --model runs/esol/model
  moleclip app --model lab/moleclip-esol --host 0.0.0.0 --port 7860
"""

from __future__ import annotations

NAME = "app"
HELP = "serve a finetuned model as a web page: predictions, intervals, atom maps, nearest training molecules"

__all__ = ["NAME", "HELP", "add_arguments", "run"]


def add_arguments(parser) -> None:
    parser.add_argument("--model", required=True,
                        help="finetuned model folder (`moleclip finetune`'s <output-dir>/model, MoleCLIP or "
                             "fingerprint baseline) or Hub name (downloaded whole: ensemble and domain too)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0 serves the network)")
    parser.add_argument("--port", type=int, default=None,
                        help="port (default: gradio's, 7860, or the next free one)")
    parser.add_argument("--steps", type=int, default=50,
                        help="integrated-gradients steps of a MoleCLIP atom map (default 50)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: best available)")
    parser.add_argument("--trust-pickle", action="store_true",
                        help="allow serving a random-forest folder, saved with joblib (loading it runs pickle)")


def run(args) -> int:
    from moleclip.training.serving.app import build_app, require_gradio

    require_gradio()  # before the model is loaded: the install advice at once
    if args.port is not None and not 1 <= args.port <= 65535:
        raise ValueError(f"--port must be 1 to 65535, got {args.port}")
    if args.device is not None:
        from moleclip.training.inference.devices import choose_device

        choose_device(args.device)  # a device this machine lacks: said before the model loads
    blocks = build_app(args.model, steps=args.steps, trust_pickle=args.trust_pickle, device=args.device)
    print(f"serving {args.model}; gradio prints the address below (Ctrl+C stops)")
    blocks.launch(server_name=args.host, server_port=args.port, show_error=False)
    return 0

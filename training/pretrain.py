#!/usr/bin/env python
"""`moleclip pretrain` as a script, for `accelerate launch training/pretrain.py ...` and `python training/pretrain.py`.

Continued pretraining of a MoleCLIP encoder with the paper's objective (contrastive between two drawings of each
molecule, negatives from the global batch, plus one cross-entropy per pseudo-label set) and optimiser (Adam with L2
weight decay, no gradient clipping). Everything lives in the package: the settings, whose fields are the options, in
`training/pretraining/config.py` (`PretrainConfig`), the input and pseudo-labels in `training/pretraining/table.py`, the run
in `training/pretraining/run.py`. `python training/pretrain.py --help` lists the
options; the final model is written to `<output-dir>/model`.

Examples:
  python training/pretrain.py --input molecules.smi --backbone tiny --output-dir runs/tiny --k 30 300 --max-steps 200
  accelerate launch training/pretrain.py --input chembl_labels.parquet --backbone openai/clip-vit-base-patch16 \\
      --output-dir runs/moleclip --batch-size 256 --epochs 4 --mixed-precision bf16 --resume latest
"""

if __name__ == "__main__":
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent))  # to find _script.py beside this file; it leaves again
    import _script  # noqa: E402

    raise SystemExit(_script.run_command("pretrain"))

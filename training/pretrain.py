#!/usr/bin/env python
"""Continued pretraining of a MoleCLIP encoder on pictures of molecules (an `accelerate launch` entry point).

A file of SMILES goes in; a run folder comes out, with the final MoleCLIP checkpoint (weights, config, image
processor, remote code, model card) in `<output-dir>/model`. The objective is the paper's: a symmetric contrastive
loss between a plain and a randomly styled, augmented drawing of each molecule, with the negatives taken from the
global batch across processes, plus one cross-entropy per K-means pseudo-label set of MACCS keys. Batches are groups
of molecules of the same fine class. The optimiser is the paper's: torch.optim.Adam with L2 weight decay 0.1 on the
encoder (`--optimizer adamw` for decoupled decay), betas (0.9, 0.98), eps 1e-6, no gradient clipping.

Runs on one CPU, one GPU or many (`accelerate launch`), survives being killed (`--resume latest` continues from the
newest checkpoint at the exact step, with the same data order and the same pictures), and can push the model folder
to the Hub (`--push-to-hub REPO`). Every setting lives in `PretrainConfig`; each field is a command-line option and the
whole config is saved as `<output-dir>/pretrain_config.json`. `moleclip pretrain` takes the same options.

Run folder: pretrain_config.json, pseudo_labels.parquet (when computed here), metrics.csv, validation_initial.json,
checkpoints/step_N (every --save-every steps and the last step), training_results.json, model/.

Examples:
  python training/pretrain.py --input molecules.smi --backbone tiny --output-dir runs/tiny --k 30 300 --max-steps 200
  accelerate launch training/pretrain.py --input chembl_labels.parquet --backbone openai/clip-vit-base-patch16 \\
      --output-dir runs/moleclip --batch-size 256 --epochs 4 --mixed-precision bf16 --resume latest
"""

from __future__ import annotations

import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent
if __name__ == "__main__" and sys.path and Path(sys.path[0] or ".").resolve() == _HERE:
    # `python training/pretrain.py` puts training/ first on sys.path, where its module names could shadow installed
    # packages; everything here is imported through the `moleclip` package instead.
    sys.path.pop(0)


def _ensure_package_importable() -> None:
    """Make `import moleclip` work from a source checkout that was not pip-installed.

    The repository keeps the folders `modeling_moleclip/`, `processing/`, `training/`, `model_cards/`, installed as
    `moleclip`, `moleclip.processing`, ...; this finder applies the same mapping when no installation provides it.
    """
    import importlib.abc
    import importlib.util

    try:
        import moleclip.training  # noqa: F401

        return
    except ImportError:
        pass
    root = _HERE.parent
    folders = {"moleclip": "modeling_moleclip", "moleclip.processing": "processing", "moleclip.training": "training",
               "moleclip.model_cards": "model_cards"}
    if not all((root / f / "__init__.py").is_file() for f in folders.values()):
        raise ImportError("the moleclip package is not installed and this script is not inside its source tree: "
                          "`pip install -e .` in the repository")

    class _SourceTreeFinder(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name in folders:
                folder = root / folders[name]
                return importlib.util.spec_from_file_location(name, folder / "__init__.py",
                                                              submodule_search_locations=[str(folder)])
            return None

    for name in [n for n in sys.modules if n == "moleclip" or n.startswith("moleclip.")]:
        del sys.modules[name]  # half-imported leftovers of the failed attempt
    sys.meta_path.insert(0, _SourceTreeFinder())


if __name__ == "__main__":
    _ensure_package_importable()

from moleclip.training.pretrain_config import KILL_ENV, MODEL_DIR, PretrainConfig  # noqa: E402
from moleclip.training.pretrain_run import build_param_groups, build_pretrain_optimizer, pretrain  # noqa: E402
from moleclip.training.pretrain_table import PretrainingTable, load_pretraining_table  # noqa: E402

__all__ = ["PretrainConfig", "pretrain", "main", "build_param_groups", "build_pretrain_optimizer",
           "load_pretraining_table", "PretrainingTable", "KILL_ENV", "MODEL_DIR"]


def main(argv: list[str] | None = None) -> int:
    config = PretrainConfig.from_args(argv, description=__doc__)
    pretrain(config)
    return 0


if __name__ == "__main__":
    sys.exit(main())

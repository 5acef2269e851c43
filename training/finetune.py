#!/usr/bin/env python
"""`moleclip finetune` as a script, for `accelerate launch training/finetune.py ...` and `python training/finetune.py`.

Everything lives in the package: the options in `cli/finetune.py`, the protocol in `training/finetuning/`.
`python training/finetune.py --help` lists the options.
"""

if __name__ == "__main__":
    import sys
    from pathlib import Path

    # Run as a script, training/ is first on sys.path, where its module names could shadow installed packages.
    here = Path(__file__).resolve().parent
    if sys.path and Path(sys.path[0] or ".").resolve() == here:
        sys.path.pop(0)
    sys.path.insert(0, str(here))
    import _script  # noqa: E402  (training/_script.py: makes `moleclip` importable from a source checkout)

    sys.path.remove(str(here))
    sys.exit(_script.run_command("finetune"))

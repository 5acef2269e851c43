#!/usr/bin/env python
"""`moleclip finetune` as a script, for `accelerate launch training/finetune.py ...` and `python training/finetune.py`.

Everything lives in the package: the options in `cli/finetune.py`, the protocol in `training/finetuning/`.
`python training/finetune.py --help` lists the options.
"""

if __name__ == "__main__":
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent))  # to find _script.py beside this file; it leaves again
    import _script  # noqa: E402

    raise SystemExit(_script.run_command("finetune"))

#!/usr/bin/env python
"""`moleclip finetune` as a script, for `accelerate launch training/finetune.py ...` and `python training/finetune.py`.

Everything lives in the package: the options in `cli/finetune.py`, the protocol in `training/finetuning/`.
`python training/finetune.py --help` lists the options.
"""

if __name__ == "__main__":
    import _script  # training/_script.py, found because this folder is first on sys.path (it takes it off again)

    raise SystemExit(_script.run_command("finetune"))

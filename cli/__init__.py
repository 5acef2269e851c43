"""The `moleclip` command line: `main.py` dispatches, one module per command, `_common.py` holds what they share.

A command module exposes `NAME` (the command's word), `HELP` (one line for `moleclip --help`), a module docstring
(the command's `--help` text, with examples), `add_arguments(parser)` and `run(args) -> int` (the exit status). Module
level code and `add_arguments` import nothing heavy (torch, transformers, RDKit, pandas...): those come inside `run`,
so `moleclip --help` and `moleclip COMMAND --help` answer at once.
"""

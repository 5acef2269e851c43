"""The `moleclip` command line: `main.py` dispatches, one module per command, `_common.py` holds what they share.

A command module exposes `NAME` (the command's word), `HELP` (one line for `moleclip --help`), a module docstring
(the command's `--help` text, with examples), `add_arguments(parser)` and `run(args) -> int` (the exit status). Module
level code and `add_arguments` import nothing heavy (torch, transformers, RDKit, pandas...): those come inside `run`,
so `moleclip --help` and `moleclip COMMAND --help` answer at once. The exception is a module that sets
`OPTIONS_FROM_PACKAGE = True` (pretrain, whose options are the fields of the library's `PretrainConfig`): its
`add_arguments` imports the model package, and `main.py` calls it only when that command is parsed or its help shown.
The library never imports this package.
"""

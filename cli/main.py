"""The `moleclip` command: one subcommand per module in `moleclip.training.commands`.

Each command module exposes `NAME`, `HELP`, `add_arguments(parser)` and `run(args) -> int`; this file only
dispatches, and turns the errors a user can fix (bad SMILES, missing files, an unreachable Hub) into one readable line
instead of a stack trace. Set MOLECLIP_DEBUG=1 to see the trace anyway.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

__all__ = ["main", "build_parser"]

COMMAND_MODULES = ("render", "init", "embed", "convert_original", "pseudo_labels", "prerender", "predict")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="moleclip",
        description="MoleCLIP: molecular representations from images of molecules (Hugging Face-native).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module_name in COMMAND_MODULES:
        module = importlib.import_module(f"moleclip.training.commands.{module_name}")
        command = sub.add_parser(module.NAME, help=module.HELP, description=module.__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(command)
        command.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from moleclip.processing.molecules import InvalidMoleculeError

    from .hub import HubUnavailableError

    try:
        return int(args._run(args) or 0)
    except (InvalidMoleculeError, HubUnavailableError, FileNotFoundError, ValueError, KeyError) as err:
        if os.environ.get("MOLECLIP_DEBUG"):
            raise
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"moleclip {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

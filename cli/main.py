"""The `moleclip` command: one subcommand per module of `moleclip_cli` (see that package's docstring for the protocol).

This file dispatches and stands between the commands and the user:

* building the parser imports only the command modules, which import nothing heavy, so `--help` answers at once
  (`moleclip pretrain`'s options, built from the library's `PretrainConfig`, are added when that command is chosen);
* an error a user can act on (a missing file or model, a bad SMILES or option, an unreachable Hub) is printed as one
  line, `moleclip COMMAND: error: ...`, with exit status 2; anything else as one line too, with status 1 and the
  advice to set MOLECLIP_DEBUG=1, which shows the traceback instead;
* an output folder that a failed command (an exception or a non-zero status) created and left empty is removed.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sys
import warnings
from pathlib import Path

__all__ = ["COMMANDS", "main", "build_parser"]

# Command word -> module of moleclip_cli, in the order `moleclip --help` lists them (roughly a project's workflow).
COMMANDS = {
    "init": "init",
    "convert-original": "convert_original",
    "render": "render",
    "pseudo-labels": "pseudo_labels",
    "prerender": "prerender",
    "pretrain": "pretrain",
    "finetune": "finetune",
    "predict": "predict",
    "explain": "explain",
    "embed": "embed",
    "index": "index",
    "search": "search",
    "app": "app",
}

DEBUG_ENV = "MOLECLIP_DEBUG"
# Options naming what a command writes; a folder they caused to be created is removed if the command fails and
# leaves it empty.
_OUTPUT_OPTIONS = ("output_dir", "output")


def command_module(name: str):
    """The module of command `name` (e.g. "pseudo-labels" -> moleclip_cli.pseudo_labels)."""
    return importlib.import_module(f"{__package__}.{COMMANDS[name]}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="moleclip",
        description="MoleCLIP: molecular representations from images of molecules (Hugging Face-native).",
        epilog=f"`moleclip COMMAND --help` describes a command. {DEBUG_ENV}=1 shows a failing command's traceback.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_CommandParser)
    for name in COMMANDS:
        module = command_module(name)
        command = sub.add_parser(module.NAME, help=module.HELP, description=module.__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
        command.set_defaults(_run=module.run)
        if getattr(module, "OPTIONS_FROM_PACKAGE", False):
            command.add_options_later(module.add_arguments, _state_defaults)
        else:
            module.add_arguments(command)
            _state_defaults(command)
    return parser


class _CommandParser(argparse.ArgumentParser):
    """A command's parser. A command whose options are built from the model package (pretrain's, from the library's
    `PretrainConfig`) gets them when it is parsed or its help printed: importing the package costs seconds, which
    `moleclip --help` and the other commands must not pay."""

    _later: tuple = ()

    def add_options_later(self, *builders) -> None:
        self._later = builders

    def options(self) -> "_CommandParser":
        """This parser with all its options added (the builders run once)."""
        builders, self._later = self._later, ()
        for build in builders:
            build(self)
        return self

    def parse_known_args(self, args=None, namespace=None):
        self.options()
        return super().parse_known_args(args, namespace)

    def format_usage(self) -> str:
        self.options()
        return super().format_usage()

    def format_help(self) -> str:
        self.options()
        return super().format_help()


def _state_defaults(parser: argparse.ArgumentParser) -> None:
    """Add "(default: X)" to the help of every option whose help does not say its default already (an option without
    help gets that alone): --help is where a user reads what a command does when not told otherwise. None, False and
    empty lists are no default worth stating."""
    for action in parser._actions:
        value = action.default
        if not action.option_strings or value is None or value is False or value is argparse.SUPPRESS or value == []:
            continue
        text = action.help or ""
        if "default" in text.lower():
            continue
        shown = " ".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)
        shown = shown.replace("%", "%%")  # argparse %-formats help texts
        action.help = f"{text} (default: {shown})" if text else f"default: {shown}"


def _debug() -> bool:
    return os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no", "off")


def _message(err: BaseException) -> str:
    if isinstance(err, OSError) and err.filename is not None and err.strerror and str(err).startswith("[Errno"):
        return f"{err.strerror}: {err.filename}"  # "[Errno 2] No such file ..." from the OS, said plainly
    if type(err).__str__ is KeyError.__str__ and err.args:
        return str(err.args[0])  # a bare KeyError would print its message in quotes
    return str(err) or type(err).__name__


# Errors of the setup, not of this package's code, that derive from RuntimeError: fonts and drawing back ends this
# machine lacks (their messages say what to install), and memory. Named, not imported: the parser imports nothing heavy.
_SETUP_ERRORS = ("FontNotFoundError", "DrawingBackendError", "BackendUnavailableError", "OutOfMemoryError")


def _user_error(err: BaseException) -> bool:
    """Errors that mean "your input or setup", not "a bug here": files, models, values, the network, imports, missing
    fonts or drawing back ends, memory."""
    if isinstance(err, MemoryError) or any(cls.__name__ in _SETUP_ERRORS for cls in type(err).__mro__):
        return True
    return isinstance(err, (OSError, ValueError, LookupError, ImportError))


def _advice(err: BaseException) -> str:
    if isinstance(err, MemoryError) or any(cls.__name__ == "OutOfMemoryError" for cls in type(err).__mro__):
        return " (out of memory: use a smaller batch size, fewer workers, or another device)"
    return ""


class _CreatedFolders:
    """Remembers, for each output option, the nearest folder that exists before the command runs; `clean()` removes
    the folders below it that the command created and left empty (never a file, never a folder with anything in it)."""

    def __init__(self, args: argparse.Namespace):
        self.paths: list[tuple[Path, Path]] = []
        for option in _OUTPUT_OPTIONS:
            value = getattr(args, option, None)
            if not isinstance(value, (str, os.PathLike)) or not str(value):
                continue
            path = Path(value).expanduser().absolute()
            existing = path
            while not existing.exists() and existing != existing.parent:
                existing = existing.parent
            if existing != path:
                self.paths.append((path, existing))

    def clean(self) -> None:
        for path, existing in self.paths:
            folder = path
            while folder != existing and existing in folder.parents:
                try:
                    if folder.is_dir() and not folder.is_symlink():
                        folder.rmdir()  # only succeeds when empty
                except OSError:
                    break
                folder = folder.parent


@contextlib.contextmanager
def _one_line_warnings(command: str):
    """The package's warnings (UserWarning) as one line each, `moleclip COMMAND: warning: ...`, like its errors, not
    Python's "path:line: UserWarning:" and the source line; others, and everything under MOLECLIP_DEBUG=1, as
    Python prints them. Only the formatting changes: warnings recorded or filtered by a caller stay so."""
    original = warnings.formatwarning

    def one_line(message, category, filename, lineno, line=None):
        if issubclass(category, UserWarning) and not _debug():
            return f"moleclip {command}: warning: {' '.join(str(message).split())}\n"
        return original(message, category, filename, lineno, line)

    warnings.formatwarning = one_line
    try:
        yield
    finally:
        warnings.formatwarning = original


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    created = _CreatedFolders(args)
    try:
        with _one_line_warnings(args.command):
            status = int(args._run(args) or 0)
    except KeyboardInterrupt:
        created.clean()
        if _debug():
            raise
        print(f"moleclip {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as err:
        created.clean()
        if _debug():
            raise
        message = " ".join(line.strip() for line in _message(err).splitlines() if line.strip())
        if _user_error(err):
            print(f"moleclip {args.command}: error: {message}{_advice(err)}", file=sys.stderr)
            return 2
        print(f"moleclip {args.command}: internal error ({type(err).__name__}): {message} "
              f"[{DEBUG_ENV}=1 shows the traceback]", file=sys.stderr)
        return 1
    if status:
        created.clean()
    return status


if __name__ == "__main__":
    sys.exit(main())

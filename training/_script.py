"""What the thin scripts in training/ (`pretrain.py`, `finetune.py`) share: run a `moleclip` command from a checkout.

A script calls :func:`run_command` with its command's name; the options are the command's own, so
``python training/finetune.py ARGS`` (or ``accelerate launch training/finetune.py ARGS``) is ``moleclip finetune ARGS``,
with the same error handling. It works in a source checkout that was never pip-installed, too:
:func:`ensure_package_importable` maps the repository's folders onto the `moleclip` package the way setup.cfg does.

Importable both as `moleclip.training._script` and, from a script in training/ (whose folder Python puts first on
sys.path), as the plain module `_script`; it imports nothing but the standard library before the package is found.
Imported the second way, it takes training/ off sys.path again, where its module names (`loop`, `search`, ...) could
shadow installed packages: everything else is imported through `moleclip`.
"""

from __future__ import annotations

import configparser
import importlib.abc
import importlib.util
import sys
from pathlib import Path

__all__ = ["ensure_package_importable", "run_command"]

_ROOT = Path(__file__).resolve().parent.parent  # the repository checkout
# The layout of setup.cfg's package_dir, for a checkout whose setup.cfg cannot be read.
_FALLBACK_FOLDERS = {"moleclip": "modeling_moleclip", "moleclip.processing": "processing",
                     "moleclip.training": "training", "moleclip.model_cards": "model_cards", "moleclip_cli": "cli"}


def _package_folders() -> dict[str, str]:
    """Package name -> folder of the checkout, from setup.cfg's `[options] package_dir`."""
    parser = configparser.ConfigParser()
    try:
        parser.read(_ROOT / "setup.cfg", encoding="utf-8")
        text = parser.get("options", "package_dir")
    except (configparser.Error, OSError):
        return dict(_FALLBACK_FOLDERS)
    folders = {}
    for line in text.splitlines():
        if "=" in line:
            name, folder = (part.strip() for part in line.split("=", 1))
            if name and folder:
                folders[name] = folder
    return folders or dict(_FALLBACK_FOLDERS)


class _SourceTreeFinder(importlib.abc.MetaPathFinder):
    """Finds `moleclip` and its subpackages in the checkout's folders (modeling_moleclip/, processing/, ...)."""

    def __init__(self, root: Path, folders: dict[str, str]):
        self.root, self.folders = root, folders

    def find_spec(self, name, path=None, target=None):
        folder = self.folders.get(name)
        if folder is None:
            return None
        location = self.root / folder
        return importlib.util.spec_from_file_location(name, location / "__init__.py",
                                                      submodule_search_locations=[str(location)])


def ensure_package_importable() -> None:
    """Make `import moleclip` (with `moleclip_cli`) work from a source checkout that was not pip-installed."""
    try:
        import moleclip_cli.main  # noqa: F401

        return
    except ImportError:
        pass
    folders = _package_folders()
    if not all((_ROOT / f / "__init__.py").is_file() for f in folders.values()):
        raise ImportError("the moleclip package is not installed and this script is not inside its source tree: "
                          "run `pip install -e .` in the repository")
    for name in [n for n in sys.modules if n == "moleclip" or n.startswith("moleclip.")]:
        del sys.modules[name]  # half-imported leftovers of the failed attempt
    sys.meta_path.insert(0, _SourceTreeFinder(_ROOT, folders))


if __name__ == "_script":  # imported by a script from this folder, which is on sys.path: take it off again
    sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != Path(__file__).resolve().parent]


def run_command(name: str, argv: list[str] | None = None) -> int:
    """Run `moleclip NAME ARGS` in this process, ARGS being `argv` or else the script's own arguments (sys.argv[1:]);
    returns the exit status."""
    ensure_package_importable()
    from moleclip_cli.main import main

    return main([name, *(sys.argv[1:] if argv is None else argv)])

"""The library (`moleclip`: modeling_moleclip/, processing/, training/, model_cards/) never imports its command line
(`moleclip_cli`, cli/): the command line is built on the library, not the other way round. training/_script.py is the
one exception: it exists to run the command line from a source checkout."""

import ast
from pathlib import Path

import pytest

from moleclip.training._script import _package_folders

REPO = Path(__file__).resolve().parent.parent
CLI = "moleclip_cli"
ALLOWED = {REPO / "training" / "_script.py"}


def _library_files() -> list[Path]:
    folders = {REPO / folder for name, folder in _package_folders().items() if name.split(".")[0] == "moleclip"}
    return sorted({path for folder in folders for path in folder.rglob("*.py")} - ALLOWED)


def _cli_imports(source: str) -> list[str]:
    """The modules of the command line that `source` imports: import statements, and importlib.import_module or
    __import__ of a literal name."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level:
            found.append(node.module or "")
        elif (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)
              and (getattr(node.func, "attr", None) == "import_module" or getattr(node.func, "id", None) == "__import__")):
            found.append(node.args[0].value)
    return [name for name in found if name == CLI or name.startswith(CLI + ".")]


def test_the_library_never_imports_the_command_line():
    files = _library_files()
    assert REPO / "training" / "pretraining" / "run.py" in files and REPO / "modeling_moleclip" / "__init__.py" in files
    offenders = {str(path.relative_to(REPO)): _cli_imports(path.read_text(encoding="utf-8")) for path in files}
    assert {path: names for path, names in offenders.items() if names} == {}


@pytest.mark.parametrize("source", [
    "from moleclip_cli.pretrain_config import PretrainConfig",
    "import moleclip_cli.main as m",
    "def f():\n    import moleclip_cli\n",
    "import importlib\nimportlib.import_module('moleclip_cli.pretrain')",
])
def test_the_check_sees_each_way_of_importing(source):
    assert _cli_imports(source)


def test_the_check_leaves_other_imports_alone():
    assert _cli_imports("import moleclip\nfrom moleclip.training import loop\nfrom . import cli\n") == []

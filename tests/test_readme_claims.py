"""README.md as a new user reads it: its commands parse, and the files it points to exist.

The README is copied from more than it is read against the code, so a renamed option or a moved module leaves it
quietly wrong; these checks read it as text and need no model or data.
"""

import re
import shlex
from pathlib import Path

import pytest

from moleclip_cli.main import build_parser

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _readme_commands() -> list[str]:
    """Every `moleclip ...` command the README shows: in its code blocks (continuation lines joined, comments cut)
    and in its table of commands. Placeholders (`...`, `DIR`, `(--smiles S ... | --input FILE)`) are left out."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", README, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #")[0].strip()
            if line.startswith("moleclip "):
                commands.append(line)
    commands += re.findall(r"^\| `(moleclip [^`]+)` \|", README, flags=re.M)
    return [c for c in commands if "..." not in c and "--help" not in c]


COMMANDS = _readme_commands()


def test_the_readme_shows_commands():
    # the reader below must keep finding them, or the next test checks nothing
    assert len(COMMANDS) >= 20
    assert any(c.startswith("moleclip search ") for c in COMMANDS)


@pytest.mark.parametrize("command", COMMANDS)
def test_each_readme_command_parses(command, capsys):
    argv = shlex.split(command)[1:]
    try:
        build_parser().parse_args(argv)
    except SystemExit:
        pytest.fail(f"README command does not parse: {command}\n{capsys.readouterr().err}")


def _where_things_live() -> list[str]:
    section = README.split("**Where things live.**", 1)[1].split("**The path of a molecule.**", 1)[0]
    paths = []
    for cell in re.findall(r"^\|[^|]*\| (.*) \|$", section, flags=re.M):
        for name in re.findall(r"`([^`]+)`", cell):
            brace = re.fullmatch(r"(.*)\{(.*)\}(.*)", name)
            paths += [f"{brace[1]}{part}{brace[3]}" for part in brace[2].split(",")] if brace else [name]
    return [p.replace("<command>", "main") for p in paths]


def test_every_file_the_module_table_names_exists():
    paths = _where_things_live()
    assert len(paths) > 30
    missing = [p for p in paths if not (ROOT / p).exists()]
    assert not missing, missing


def test_the_module_table_names_every_module():
    """'Each concept has one home': a module the table does not list is a home nobody is told about."""
    listed = set(_where_things_live())
    modules = [p.relative_to(ROOT).as_posix() for folder in ("processing", "modeling_moleclip", "training")
               for p in (ROOT / folder).rglob("*.py")
               if p.name != "__init__.py" and not p.name.startswith("_") and "evaluate_modules" not in p.parts]
    # the two scripts are the commands' own (`python training/pretrain.py` = `moleclip pretrain`)
    unlisted = [m for m in modules if m not in listed and m not in ("training/pretrain.py", "training/finetune.py")]
    assert not unlisted, unlisted


def _quickstart_command(title: str) -> str:
    block = README.split(f"**{title}**", 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    lines = [line for line in block.splitlines() if line.strip()]
    assert len(lines) == 1, lines  # one command a newcomer pastes
    return lines[0]


def test_ci_runs_exactly_the_readmes_test_command_in_a_fresh_venv():
    command = _quickstart_command("Tests")
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert command in ci, "the README's test command is not a line of .ci/run"
    # a venv of its own, without the system's packages: what a newcomer's install resolves today
    assert command.startswith("python3 -m venv .venv && . .venv/bin/activate && ")
    assert "--system-site-packages" not in command
    assert _quickstart_command("Main job").startswith("python3 -m venv .venv && . .venv/bin/activate && ")


def test_constraints_record_the_tested_versions_of_every_dependency():
    """constraints.txt (the last green run's versions) pins each of setup.cfg's requirements but torch, so
    `pip install -e ".[test]" -c constraints.txt` reproduces that run."""
    import configparser

    setup = configparser.ConfigParser()
    setup.read(ROOT / "setup.cfg", encoding="utf-8")
    required = setup["options"]["install_requires"].split() + setup["options.extras_require"]["test"].split()
    names = {re.split(r"[<>=!~ ]", r, maxsplit=1)[0].lower().replace("_", "-") for r in required if r.strip()}
    pinned = {}
    for line in (ROOT / "constraints.txt").read_text(encoding="utf-8").splitlines():
        if line and not line.startswith("#"):
            name, version = line.split("==")
            pinned[name.lower().replace("_", "-")] = version
    assert "torch" not in pinned  # installed first, for the user's hardware
    missing = sorted(names - {"torch"} - set(pinned))
    assert not missing, missing

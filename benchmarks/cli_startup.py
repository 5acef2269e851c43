"""How long the `moleclip` command takes to answer `--help`: the start-up cost a user pays before any work.

Each figure is the wall time of a fresh process (the installed console script), repeated --repeats times; the median
is the figure, min and max show the spread (a shared machine adds noise, so the load average at the start is kept).

  moleclip --help                     the command list
  moleclip COMMAND --help             each command's options
  python -c "import moleclip"         the model package alone (it registers the transformers auto classes, which
                                      imports torch and transformers): what every command pays once it runs; the
                                      command line itself lives in `moleclip_cli` so that `--help` does not
  python -c pass                      the interpreter

With --importtime, `python -X importtime` of `moleclip --help` lists the packages costing most (cumulative time of
each package's first import, nested ones included in their parent's).

Prints a table and writes benchmarks/results/cli_startup.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from machine_info import describe_machine

HERE = Path(__file__).resolve().parent



def _time(command: list[str], repeats: int) -> dict:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True)
        times.append(time.perf_counter() - start)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    return {"median_s": round(statistics.median(times), 3), "min_s": round(min(times), 3),
            "max_s": round(max(times), 3), "repeats": repeats}


def _import_offenders(exe: str, top: int) -> list[dict]:
    """The slowest top-level imports of `moleclip --help` by cumulative time (python -X importtime)."""
    code = "import sys; from moleclip_cli.main import main; sys.argv = ['moleclip', '--help']; main(['--help'])"
    done = subprocess.run([sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True)
    cumulative: dict[str, int] = {}
    for line in done.stderr.splitlines():
        match = re.match(r"import time:\s+(\d+) \|\s+(\d+) \| *(\S+)", line)
        if match and "." not in match.group(3):  # packages, wherever in the tree they were first imported
            name = match.group(3)
            cumulative[name] = max(cumulative.get(name, 0), int(match.group(2)))
    rows = [{"package": name, "cumulative_s": round(us / 1e6, 3)} for name, us in cumulative.items()]
    return sorted(rows, key=lambda r: -r["cumulative_s"])[:top]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--importtime", action="store_true", help="also list the slowest imports of `moleclip --help`")
    parser.add_argument("--output", default=str(HERE / "results" / "cli_startup.json"))
    args = parser.parse_args()

    machine = describe_machine()
    exe = shutil.which("moleclip")
    if exe is None:
        raise SystemExit("the moleclip console script is not installed: pip install -e . in the repository")
    sys.path.insert(0, str(HERE.parent))
    from moleclip_cli.main import COMMANDS  # noqa: E402  (after the machine's load was taken)

    cases = {"python -c pass": [sys.executable, "-c", "pass"],
             "python -c 'import moleclip'": [sys.executable, "-c", "import moleclip"],
             "moleclip --help": [exe, "--help"]}
    cases.update({f"moleclip {name} --help": [exe, name, "--help"] for name in COMMANDS})
    results = {}
    for label, command in cases.items():
        results[label] = _time(command, args.repeats)
        r = results[label]
        print(f"{label:<46} median {r['median_s']:6.2f} s   (min {r['min_s']:.2f}, max {r['max_s']:.2f}, "
              f"n={r['repeats']})", flush=True)
    report = {"benchmark": "cli_startup", "machine": machine, "console_script": exe, "wall_time": results}
    if args.importtime:
        report["importtime_top"] = _import_offenders(exe, 12)
        print("\nslowest imports of `moleclip --help` (cumulative):")
        for row in report["importtime_top"]:
            print(f"  {row['package']:<40} {row['cumulative_s']:6.2f} s")
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

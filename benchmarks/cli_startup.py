"""How long the `moleclip` command takes to answer `--help`: the start-up cost a user pays before any work.

Each figure is the wall time of a fresh process (the installed console script), repeated --repeats times; the median
is the figure, min and max show the spread (a shared machine adds noise, so the load average at the start is kept).

  moleclip --help                     the command list
  moleclip COMMAND --help             each command's options
  python -c "import moleclip"         the model package alone (it registers the transformers auto classes, which
                                      imports torch and transformers): what every command pays once it runs; the
                                      command line itself lives in `moleclip_cli` so that `--help` does not
  python -c "import torch"            what torch alone costs, and transformers' auto classes with CLIP: the part of
                                      `import moleclip` that is theirs (the auto registration needs the classes)
  python -c pass                      the interpreter

Each row gives the wall time and the child's CPU time (user + system), which moves less with a shared machine's load.

With --importtime, `python -X importtime` of `moleclip --help` lists the packages costing most (cumulative time of
each package's first import, nested ones included in their parent's).

Prints a table and writes benchmarks/results/cli_startup.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from machine_info import describe_machine

HERE = Path(__file__).resolve().parent



def _time(command: list[str], repeats: int) -> dict:
    """Wall time and the child's CPU time (user + system): on a shared machine the CPU time moves less with the
    load, so it is the figure to compare imports by."""
    times, cpu = [], []
    for _ in range(repeats):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True)
        times.append(time.perf_counter() - start)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    return {"median_s": round(statistics.median(times), 3), "min_s": round(min(times), 3),
            "max_s": round(max(times), 3), "cpu_median_s": round(statistics.median(cpu), 3), "repeats": repeats}


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

    # `import moleclip` registers MoleCLIP with transformers' auto classes, which needs the classes and so imports
    # torch and transformers: the two lines above it show how much of its cost is theirs.
    cases = {"python -c pass": [sys.executable, "-c", "pass"],
             "python -c 'import torch'": [sys.executable, "-c", "import torch"],
             "transformers' auto classes and CLIP": [sys.executable, "-c", "from transformers import AutoConfig, "
                                                     "AutoModel, AutoImageProcessor, CLIPVisionModel"],
             "python -c 'import moleclip'": [sys.executable, "-c", "import moleclip"],
             "python -c 'import moleclip.training.inference.screening'": [sys.executable, "-c",
                                                                "import moleclip.training.inference.screening"],
             "moleclip --help": [exe, "--help"]}
    cases.update({f"moleclip {name} --help": [exe, name, "--help"] for name in COMMANDS})
    results = {}
    for label, command in cases.items():
        results[label] = _time(command, args.repeats)
        r = results[label]
        print(f"{label:<50} median {r['median_s']:6.2f} s   (min {r['min_s']:.2f}, max {r['max_s']:.2f}, "
              f"n={r['repeats']}; CPU {r['cpu_median_s']:.2f} s)", flush=True)
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

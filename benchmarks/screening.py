"""Screening at scale: `moleclip embed` (tiny preset) on the first N molecules of ZINC/MOSES, chunked and drawn by
worker processes, writing shards as it goes (training/inference/screening.py).

Measures, for each N: wall time, molecules/s (and per core), and the peak resident memory of the command with its
worker processes (psutil, polled every 0.1 s; the RSS of the main process and its children summed, so pages shared
after fork are counted once per process: an upper bound). Flat peak memory against N is the goal. Then a kill and
resume: the smallest N run again, SIGKILLed once some shards are written, started again with the same arguments,
and its output compared byte for byte with the uninterrupted run's.

    nice python benchmarks/screening.py --sizes 12000 30000 [--chunk-size 2000] [--workers 1]

Prints the figures and writes benchmarks/results/screening.json (merging sizes measured by earlier calls; each run
records its own settings and load).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ZINC = Path("pretraining") / "zinc_moses_1.58m.csv.gz"  # under the data folder ($MOLECLIP_DATA_DIR, ../shared/data)
RESULTS = Path(__file__).parent / "results" / "screening.json"


def write_head(n: int, path: Path, data_dir: str | None = None) -> None:
    """The header and the first `n` molecules of ZINC/MOSES as a plain CSV."""
    from moleclip.processing.property_data import resolve_data_dir

    with gzip.open(Path(resolve_data_dir(data_dir)) / ZINC, "rt") as source, open(path, "w") as out:
        for i, line in enumerate(source):
            if i > n:
                break
            out.write(line)


def tree_rss(process: psutil.Process) -> int:
    total = 0
    for p in [process, *process.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.Error:  # a worker that just ended
            pass
    return total


def embed(input: Path, output: Path, chunk: int, workers: int, kill_when_shards: int | None = None,
          model: str = "tiny", device: str | None = None) -> dict:
    """Run `moleclip embed`; peak RSS of its process tree; optionally SIGKILL it once `kill_when_shards` shards exist."""
    command = [sys.executable, "-m", "moleclip_cli.main", "embed", "--model", model, "--input", str(input),
               "--output", str(output), "--no-progress", "--chunk-size", str(chunk), "--num-workers", str(workers)]
    if device:
        command += ["--device", device]
    start = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    process, peak, killed = psutil.Process(child.pid), 0, False
    parts = Path(f"{output}.parts")
    while child.poll() is None:
        try:
            peak = max(peak, tree_rss(process))
        except psutil.Error:
            pass
        if kill_when_shards is not None and len(list(parts.glob("part-*.parquet"))) >= kill_when_shards:
            child.send_signal(signal.SIGKILL)  # the main process only: its drawing workers must notice and go
            killed = True
            break
        time.sleep(0.1)
    out = child.communicate()[0]
    seconds = time.perf_counter() - start
    if not killed and child.returncode != 0:
        raise RuntimeError(f"embed failed ({child.returncode}): {out[-2000:]}")
    return {"seconds": round(seconds, 2), "peak_rss_mb": round(peak / 2**20, 1), "killed": killed,
            "shards_at_kill": len(list(parts.glob("part-*.parquet"))) if killed else None,
            "returncode": child.returncode, "output": out.strip().splitlines()[-2:] if out.strip() else []}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[12_000, 100_000])
    parser.add_argument("--chunk-size", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=None, help="default: the command's own (free cores)")
    parser.add_argument("--no-resume", action="store_true", help="skip the kill-and-resume check")
    parser.add_argument("--model", default="tiny", help="what embeds: the tiny preset here; `base` (ViT-B/16 shape) "
                        "on a GPU machine (benchmarks/gpu_session.sh)")
    parser.add_argument("--device", default=None, help="cpu, cuda (default: the command's: best available)")
    parser.add_argument("--data-dir", default=None, help="default: $MOLECLIP_DATA_DIR, else ../shared/data")
    parser.add_argument("--results", type=Path, default=RESULTS, help=f"where to write (default {RESULTS})")
    args = parser.parse_args()
    results = args.results
    from moleclip.processing.cores import available_cores
    from moleclip.training.inference.screening import default_workers

    cores = available_cores()
    workers = default_workers() if args.workers is None else args.workers
    record = json.loads(results.read_text()) if results.exists() else {}
    record.update({"machine": {"cores": cores, "cpu": _cpu(), "load_average_at_start": os.getloadavg()},
                   "preset": args.model, "device": args.device, "chunk_size": args.chunk_size, "workers": workers,
                   "note": "peak RSS sums the main process and its workers (shared pages counted per process)"})
    runs = record.setdefault("runs", {})
    with tempfile.TemporaryDirectory(prefix="screening-bench-") as tmp:
        tmp = Path(tmp)
        for n in sorted(args.sizes):
            data = tmp / f"zinc_{n}.csv"
            write_head(n, data, args.data_dir)
            load_before = os.getloadavg()
            result = embed(data, tmp / f"emb_{n}.parquet", args.chunk_size, workers, model=args.model,
                           device=args.device)
            # each run keeps its own conditions: the file merges sizes from calls made at other times and loads,
            # and the top-level machine entry describes the latest call only
            result.update(molecules=n, molecules_per_s=round(n / result["seconds"], 1),
                          molecules_per_s_per_core=round(n / result["seconds"] / cores, 1),
                          preset=args.model, device=args.device, chunk_size=args.chunk_size, workers=workers,
                          load_average_before=load_before, load_average_after=os.getloadavg())
            runs[str(n)] = result
            print(f"N={n}: {result['seconds']} s, {result['molecules_per_s']} mol/s "
                  f"({result['molecules_per_s_per_core']} per core), peak RSS {result['peak_rss_mb']} MB", flush=True)
            results.parent.mkdir(parents=True, exist_ok=True)
            results.write_text(json.dumps(record, indent=1) + "\n")
        if not args.no_resume:
            n = min(args.sizes)
            data, reference = tmp / f"zinc_{n}.csv", tmp / f"emb_{n}.parquet"
            output = tmp / f"resumed_{n}.parquet"
            first = embed(data, output, args.chunk_size, workers, kill_when_shards=2, model=args.model,
                          device=args.device)
            time.sleep(6)  # DataLoader workers look for their parent every 5 s
            second = embed(data, output, args.chunk_size, workers, model=args.model, device=args.device)
            chunks = -(-n // args.chunk_size)
            identical = output.read_bytes() == reference.read_bytes()
            record["kill_and_resume"] = {
                "molecules": n, "chunks": chunks, "killed_after_s": first["seconds"],
                "shards_at_kill": first["shards_at_kill"], "resume_seconds": second["seconds"],
                "uninterrupted_seconds": runs[str(n)]["seconds"], "identical_to_uninterrupted": identical,
                "resume_said": [line for line in second["output"] if line.startswith("resumed")],
                "parts_folder_removed": not Path(f"{output}.parts").exists()}
            print(f"kill and resume (N={n}): killed after {first['seconds']} s with {first['shards_at_kill']} of "
                  f"{chunks} shards; resumed in {second['seconds']} s (uninterrupted {runs[str(n)]['seconds']} s); "
                  f"output identical: {identical}", flush=True)
    results.write_text(json.dumps(record, indent=1) + "\n")


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


if __name__ == "__main__":
    main()

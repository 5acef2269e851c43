"""Benchmark: MACCS keys + mini-batch K-means pseudo-labels, wall time and peak memory, on real pretraining sets.

Each data set runs in its own child process so that its peak resident memory (``getrusage`` max RSS) is its own:
``peak_rss_main_mb`` is the process holding the data and running K-means, ``peak_rss_worker_mb`` the largest
fingerprint worker process.

    python benchmarks/pseudo_labels.py                       # 150k ChEMBL and 1.58M ZINC, K = 300 and 3000
    python benchmarks/pseudo_labels.py --sizes 150k --ks 300
    MOLECLIP_DATA_DIR=/path/to/data python benchmarks/pseudo_labels.py --sizes 1.58m --n-jobs 2

Results are printed and merged (by data set) into benchmarks/results/pseudo_labels.json.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

from machine_info import describe_machine

DATASETS = {
    "150k": "pretraining/chembl31_150k.smi.gz",
    "1.58m": "pretraining/zinc_moses_1.58m.csv.gz",
}
DEFAULT_DATA_DIR = "/work/shared/data"
RESULTS = Path(__file__).resolve().parent / "results" / "pseudo_labels.json"


def _max_rss_mb(who: int) -> float:
    # Linux reports ru_maxrss in KiB.
    return resource.getrusage(who).ru_maxrss / 1024


def _cpu_s(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def _worker(size: str, data_dir: str, ks: list[int], n_jobs: int | None, kmeans_threads: int | None,
            limit: int | None, seed: int) -> dict:
    """Runs in the child process: one data set, every step timed."""
    import numpy as np

    from moleclip.processing.fingerprints import maccs_keys
    from moleclip.processing.pseudo_labels import assign_clusters, fit_kmeans
    from moleclip.processing.tables import read_molecule_table

    path = os.path.join(data_dir, DATASETS[size])
    # Importing the package loads torch and transformers (the modelling package), a fixed cost in every figure below.
    result: dict = {"dataset": size, "file": DATASETS[size], "n_jobs": n_jobs, "kmeans_threads": kmeans_threads,
                    "seed": seed,
                    "rss_after_imports_mb": _max_rss_mb(resource.RUSAGE_SELF)}

    start = time.perf_counter()
    smiles = read_molecule_table(path).smiles
    if limit is not None:
        smiles = smiles[:limit]
    result["read_s"] = time.perf_counter() - start
    result["n_input"] = len(smiles)

    start, cpu = time.perf_counter(), _cpu_s(resource.RUSAGE_SELF) + _cpu_s(resource.RUSAGE_CHILDREN)
    fingerprints = maccs_keys(smiles, n_jobs=n_jobs, progress=sys.stderr.isatty())
    seconds = time.perf_counter() - start
    # CPU seconds (this process and its finished fingerprint workers) are less sensitive than wall time to other
    # jobs sharing the machine.
    cpu = _cpu_s(resource.RUSAGE_SELF) + _cpu_s(resource.RUSAGE_CHILDREN) - cpu
    print(f"[{size}] MACCS keys for {len(smiles)} molecules: {seconds:.1f} s wall, {cpu:.1f} CPU-s",
          file=sys.stderr, flush=True)
    result.update(maccs_s=seconds, maccs_cpu_s=cpu, maccs_mol_per_s=len(smiles) / seconds,
                  maccs_mol_per_cpu_s=len(smiles) / cpu, n_valid=int(len(fingerprints.kept)),
                  n_skipped=len(fingerprints.skipped), maccs_matrix_mb=fingerprints.bits.nbytes / 2**20,
                  rss_after_maccs_mb=_max_rss_mb(resource.RUSAGE_SELF))
    del smiles

    start = time.perf_counter()
    data = fingerprints.bits.astype(np.float32)
    fingerprints.bits = np.empty((0, data.shape[1]), dtype=np.uint8)
    result["float32_s"] = time.perf_counter() - start
    result["float32_matrix_mb"] = data.nbytes / 2**20

    result["kmeans"] = {}
    for k in ks:
        start, cpu = time.perf_counter(), time.process_time()
        model = fit_kmeans(data, k, seed=seed, n_threads=kmeans_threads)
        fit_s, fit_cpu = time.perf_counter() - start, time.process_time() - cpu
        start, cpu = time.perf_counter(), time.process_time()
        labels, inertia = assign_clusters(data, model.cluster_centers_, n_threads=kmeans_threads)
        assign_s, assign_cpu = time.perf_counter() - start, time.process_time() - cpu
        sizes = np.bincount(labels, minlength=k)
        result["kmeans"][str(k)] = {
            "fit_s": fit_s, "assign_s": assign_s, "total_s": fit_s + assign_s, "fit_cpu_s": fit_cpu,
            "assign_cpu_s": assign_cpu, "n_steps": int(model.n_steps_),
            "inertia": inertia, "empty_clusters": int((sizes == 0).sum()), "largest_cluster": int(sizes.max()),
            "median_cluster": float(np.median(sizes)),
        }
        print(f"[{size}] K={k}: fit {fit_s:.1f} s ({fit_cpu:.1f} CPU-s, {model.n_steps_} mini-batches), "
              f"assign {assign_s:.1f} s",
              file=sys.stderr, flush=True)
    result["peak_rss_main_mb"] = _max_rss_mb(resource.RUSAGE_SELF)
    result["peak_rss_worker_mb"] = _max_rss_mb(resource.RUSAGE_CHILDREN)
    return result


def _machine() -> dict:
    import sklearn

    return {**describe_machine(), "sklearn": sklearn.__version__}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", choices=sorted(DATASETS), default=["150k", "1.58m"])
    parser.add_argument("--ks", nargs="+", type=int, default=[300, 3000])
    parser.add_argument("--n-jobs", type=int, default=None, help="fingerprint processes (default: all cores)")
    parser.add_argument("--kmeans-threads", type=int, default=None,
                        help="BLAS/OpenMP threads for K-means (default: library default, all cores). On a machine "
                             "shared with other busy jobs, 1 avoids spinning threads that make K-means many times slower")
    parser.add_argument("--limit", type=int, default=None, help="only the first N molecules (quick check)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", default=os.environ.get("MOLECLIP_DATA_DIR", DEFAULT_DATA_DIR))
    parser.add_argument("--output", default=str(RESULTS))
    parser.add_argument("--_worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args._worker:
        print(json.dumps(_worker(args._worker, args.data_dir, args.ks, args.n_jobs, args.kmeans_threads, args.limit,
                                 args.seed)))
        return 0

    for size in args.sizes:
        if not os.path.isfile(os.path.join(args.data_dir, DATASETS[size])):
            parser.error(f"{DATASETS[size]} not found under {args.data_dir} (set --data-dir or MOLECLIP_DATA_DIR)")
    output = Path(args.output)
    merged = json.loads(output.read_text()) if output.is_file() else {}
    merged["machine"] = _machine()
    runs = merged.setdefault("runs", {})
    for size in args.sizes:
        command = [sys.executable, __file__, "--_worker", size, "--data-dir", args.data_dir, "--seed", str(args.seed),
                   "--ks", *map(str, args.ks)]
        if args.n_jobs is not None:
            command += ["--n-jobs", str(args.n_jobs)]
        if args.kmeans_threads is not None:
            command += ["--kmeans-threads", str(args.kmeans_threads)]
        if args.limit is not None:
            command += ["--limit", str(args.limit)]
        load_before = os.getloadavg()
        start = time.perf_counter()
        done = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=True)
        result = json.loads(done.stdout.strip().splitlines()[-1])
        result["wall_s"] = time.perf_counter() - start
        # Other jobs on a shared machine slow every step; the load average says how busy it was.
        result["load_average_before_after"] = [round(load_before[0], 2), round(os.getloadavg()[0], 2)]
        result["limit"] = args.limit
        runs[size if args.limit is None else f"{size}_first{args.limit}"] = result

        print(f"\n== {size}: {result['n_input']} molecules ({result['n_skipped']} skipped), "
              f"n_jobs={args.n_jobs or merged['machine']['cpu_cores']}, K-means threads={args.kmeans_threads or 'default'}")
        print(f"read {result['read_s']:.1f} s | MACCS {result['maccs_s']:.1f} s ({result['maccs_mol_per_s']:.0f} mol/s, "
              f"{result['maccs_mol_per_cpu_s']:.0f} mol per CPU-s) | "
              f"uint8 {result['maccs_matrix_mb']:.0f} MB, float32 {result['float32_matrix_mb']:.0f} MB")
        for k, row in result["kmeans"].items():
            print(f"K={k}: fit {row['fit_s']:.1f} s ({row['fit_cpu_s']:.1f} CPU-s) + assign {row['assign_s']:.1f} s "
                  f"({row['n_steps']} mini-batches, "
                  f"{row['empty_clusters']} empty clusters, largest {row['largest_cluster']})")
        print(f"peak RSS: main {result['peak_rss_main_mb']:.0f} MB (imports alone {result['rss_after_imports_mb']:.0f} MB), largest worker {result['peak_rss_worker_mb']:.0f} MB; "
              f"wall {result['wall_s']:.1f} s; load average {result['load_average_before_after']}")
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(merged, indent=2) + "\n")
    print(f"\nwritten: {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

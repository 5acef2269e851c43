"""Memory of the 2D-layout cache: how much one cached (prepared) molecule costs, so cache sizes can be set by memory.

    python benchmarks/coordinate_cache.py [--n 2000]

Fills a `CoordinateCache` with the first N drawable molecules of `pretraining/chembl25_3k.smi` in a fresh process and
reports the growth of the resident set size per cached molecule (RSS is what the operating system charges; RDKit's
C++ objects are invisible to Python's own accounting). Writes benchmarks/results/coordinate_cache.json.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from pathlib import Path

from machine_info import describe_machine

HERE = Path(__file__).resolve().parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--data-dir", default=None, help="default: $MOLECLIP_DATA_DIR, else ../shared/data")
    parser.add_argument("--output", default=str(HERE / "results" / "coordinate_cache.json"))
    args = parser.parse_args()

    import psutil

    from moleclip.processing.molecules import InvalidMoleculeError
    from moleclip.processing.property_data import resolve_data_dir
    from moleclip.processing.rendering import CoordinateCache
    from moleclip.processing.tables import read_molecule_table

    machine = describe_machine()
    smiles = read_molecule_table(resolve_data_dir(args.data_dir) / "pretraining" / "chembl25_3k.smi").smiles
    cache = CoordinateCache(max_size=len(smiles))
    process = psutil.Process()
    cache.get("CCO")  # RDKit's one-off allocations (drawing code, tables) before the measurement
    gc.collect()
    before, started = process.memory_info().rss, time.perf_counter()
    for item in smiles:
        if len(cache) >= args.n:
            break
        try:
            cache.get(item)
        except InvalidMoleculeError:
            continue
    gc.collect()
    grown = process.memory_info().rss - before
    per_molecule = grown / max(len(cache), 1)
    result = {"benchmark": "coordinate_cache", "machine": machine, "molecules": len(cache),
              "rss_growth_mib": round(grown / 2**20, 1), "kib_per_molecule": round(per_molecule / 1024, 1),
              "seconds": round(time.perf_counter() - started, 1),
              "gib_for": {str(n): round(n * per_molecule / 2**30, 2) for n in (10_000, 50_000, 100_000)}}
    print(f"{len(cache)} prepared ChEMBL molecules: RSS +{result['rss_growth_mib']} MiB, "
          f"{result['kib_per_molecule']} KiB each; 10k / 50k / 100k molecules would take "
          + " / ".join(f"{v} GiB" for v in result["gib_for"].values()))
    Path(args.output).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Memory of the 2D-layout cache: how much one cached (prepared) molecule costs, so cache sizes can be set by memory.

    python benchmarks/coordinate_cache.py [--n 2000]

Fills a `CoordinateCache` with the first N drawable molecules of `pretraining/chembl25_3k.smi` in a fresh process and
reports the growth of the resident set size per cached molecule and per atom or bond (RSS is what the operating system
charges; RDKit's C++ objects are invisible to Python's own accounting), for the first N and for the N largest
molecules: the per-atom-or-bond figure is what `rendering.BYTES_PER_ATOM_OR_BOND` estimates a cache's memory with.
Writes benchmarks/results/coordinate_cache.json.
"""

from __future__ import annotations

import argparse
import gc
import json
import multiprocessing
import sys
import time
from pathlib import Path

from machine_info import describe_machine

HERE = Path(__file__).resolve().parent


def _fill(group: list[str], n: int) -> dict:
    """Fill a cache with the first `n` drawable molecules of `group`; the RSS growth per molecule and per atom/bond."""
    import psutil

    from moleclip.processing.molecules import InvalidMoleculeError
    from moleclip.processing.rendering import CoordinateCache

    process = psutil.Process()
    cache = CoordinateCache(max_size=n + 1, max_mib=1e9)
    cache.get("CCO")  # RDKit's one-off allocations (drawing code, tables) before the measurement
    gc.collect()
    before, started = process.memory_info().rss, time.perf_counter()
    atoms_and_bonds = 0
    for item in group:
        if len(cache) > n:
            break
        try:
            prepared = cache.get(item)
        except InvalidMoleculeError:
            continue
        atoms_and_bonds += prepared.GetNumAtoms() + prepared.GetNumBonds()
    gc.collect()
    grown = process.memory_info().rss - before
    count = max(len(cache) - 1, 1)
    return {"molecules": count, "rss_growth_mib": round(grown / 2**20, 1),
            "kib_per_molecule": round(grown / count / 1024, 1),
            "bytes_per_atom_or_bond": round(grown / max(atoms_and_bonds, 1)),
            "seconds": round(time.perf_counter() - started, 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--data-dir", default=None, help="default: $MOLECLIP_DATA_DIR, else ../shared/data")
    parser.add_argument("--output", default=str(HERE / "results" / "coordinate_cache.json"))
    args = parser.parse_args()

    from moleclip.processing.property_data import resolve_data_dir
    from moleclip.processing.tables import read_molecule_table

    machine = describe_machine()
    smiles = read_molecule_table(resolve_data_dir(args.data_dir) / "pretraining" / "chembl25_3k.smi").smiles
    from rdkit import Chem

    from moleclip.processing.rendering import BYTES_PER_ATOM_OR_BOND

    def fill(group: list[str]) -> dict:
        # a fresh process per group: memory freed by one group would otherwise be reused by the next, unseen by RSS
        context = multiprocessing.get_context("spawn")
        with context.Pool(1) as pool:
            return pool.apply(_fill, (group, args.n))

    def heavy_atoms(s: str) -> int:
        mol = Chem.MolFromSmiles(s)
        return mol.GetNumHeavyAtoms() if mol is not None else 10**6

    first = fill(smiles)
    largest = fill(sorted((s for s in smiles if heavy_atoms(s) <= 250), key=heavy_atoms)[-args.n:])
    per_molecule = first["kib_per_molecule"] * 1024
    result = {"benchmark": "coordinate_cache", "machine": machine, **first, "largest": largest,
              "estimate_bytes_per_atom_or_bond": BYTES_PER_ATOM_OR_BOND,
              "gib_for": {str(n): round(n * per_molecule / 2**30, 2) for n in (10_000, 50_000, 100_000)}}
    print(f"{first['molecules']} prepared ChEMBL molecules: RSS +{first['rss_growth_mib']} MiB, "
          f"{first['kib_per_molecule']} KiB each, {first['bytes_per_atom_or_bond']} bytes per atom or bond; "
          f"the {largest['molecules']} largest: {largest['kib_per_molecule']} KiB each, "
          f"{largest['bytes_per_atom_or_bond']} bytes per atom or bond (the cache estimates {BYTES_PER_ATOM_OR_BOND}); "
          "10k / 50k / 100k typical molecules would take " + " / ".join(f"{v} GiB" for v in result["gib_for"].values()))
    Path(args.output).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

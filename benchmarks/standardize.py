"""What standardisation costs and does, on real tables: why `--standardize` offers "parent" and not canonical tautomers.

For each table: milliseconds per molecule, molecules changed, and molecules that change again when their
standardised SMILES is standardised a second time (not idempotent), for "parent" (the package's choice) and for
"parent" followed by RDKit's canonical tautomer (measured here only; the package does not offer it).

    python benchmarks/standardize.py             # 200 molecules of BBBP and of ChEMBL (a few minutes: tautomers)
    python benchmarks/standardize.py --n 50      # quicker

Prints a table and writes benchmarks/results/standardize.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from machine_info import describe_machine
from rdkit import Chem
from rdkit.Chem.MolStandardize import rdMolStandardize

from moleclip.processing.molecules import quiet_rdkit
from moleclip.processing.property_data import resolve_data_dir
from moleclip.processing.standardize import standardize_smiles
from moleclip.processing.tables import read_molecule_table

TABLES = {"bbbp": "moleculenet/bbbp.csv", "chembl": "pretraining/chembl25_3k.smi"}


def with_tautomer(smiles: list[str]) -> list[str]:
    enumerator = rdMolStandardize.TautomerEnumerator()
    parents = standardize_smiles(smiles, "parent").smiles
    with quiet_rdkit():
        return [Chem.MolToSmiles(enumerator.Canonicalize(Chem.MolFromSmiles(s))) for s in parents]


def measure(smiles: list[str]) -> dict:
    out = {}
    for name, run in (("parent", lambda s: standardize_smiles(s, "parent").smiles), ("parent_tautomer", with_tautomer)):
        started = time.perf_counter()
        once = run(smiles)
        seconds = time.perf_counter() - started
        twice = run(once)
        canonical = [Chem.MolToSmiles(Chem.MolFromSmiles(s)) for s in smiles]
        out[name] = {"ms_per_molecule": round(1000 * seconds / len(smiles), 2),
                     "changed": sum(a != b for a, b in zip(canonical, once)),
                     "not_idempotent": sum(a != b for a, b in zip(once, twice))}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=200, help="molecules per table (the first N)")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--output", type=Path, default=Path(__file__).parent / "results" / "standardize.json",
                        help="where to write (a quick --n check should not replace the recorded figures)")
    args = parser.parse_args()
    data_dir = resolve_data_dir(args.data_dir)
    # the load at the start: other jobs on a shared machine stretch every time here (the tautomer step most)
    results = {"n": args.n, "machine": describe_machine(), "tables": {}}
    print(f"{'table':8} {'method':16} {'ms/mol':>8} {'changed':>8} {'not idempotent':>15}")
    for table, relative in TABLES.items():
        smiles = read_molecule_table(Path(data_dir) / relative).smiles[: args.n]
        results["tables"][table] = measure(smiles)
        for method, row in results["tables"][table].items():
            print(f"{table:8} {method:16} {row['ms_per_molecule']:8.2f} {row['changed']:8d} {row['not_idempotent']:15d}")
    out = args.output
    out.write_text(json.dumps(results, indent=2))
    print(f"written: {out}")


if __name__ == "__main__":
    main()

"""The pre-rendered store, old formats against the new one, side by side in one run.

Three stores of the same drawings (the first --molecules ChEMBL molecules of chembl25_3k.smi, the plain drawing plus
--variants random styles each, 224 px PNG, drawn by --workers processes):

  loose_png      one PNG file per picture (the layout issue 11 set out from; never shipped, shown for its file count)
  packed_png_v1  the format before this change (moleclip-prerendered-png-v1): one images.bin of concatenated PNGs plus
                 offsets.npy, written by the parent process alone (workers only draw), read through a memory map
  parquet_v2     today's store (moleclip-prerendered-parquet-v2): Parquet shards with datasets Image columns, one row
                 per molecule, each shard written by its own worker

Measured: write speed (pictures/s, drawing included: the drawing is the same for all three, so the differences are
the writing), random-access read speed (pairs/s through ``read_pair``: fetch + PNG decode of the plain drawing and one
variant, and the fetch alone), disk bytes per picture (apparent, and allocated in file-system blocks) and files. The
reads run right after the writes, from the page cache (what a training node sees once a store is warm). The new store
is also streamed once through ``datasets.load_dataset(..., streaming=True)`` (pictures decoded to PIL).

Writes benchmarks/results/prerender.json.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
from machine_info import describe_machine

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "prerender.json"
DATA = ROOT.parent / "shared" / "data" / "pretraining" / "chembl25_3k.smi"
SEED = 0


def _pool(workers: int):
    return multiprocessing.get_context("fork").Pool(workers)


def _draw_chunk(task):
    """Worker side of both old formats: draw a chunk of molecules (the loose layout also writes its files here)."""
    from moleclip.processing.molecules import quiet_rdkit
    from moleclip.processing.image_processing_moleclip import MoleCLIPImageProcessor
    from moleclip.processing.prerendered_store import draw_molecule

    start, smiles, n_variants, loose_dir = task
    processor, out = MoleCLIPImageProcessor(cache_size=1), []
    with quiet_rdkit():
        for offset, s in enumerate(smiles):
            images = draw_molecule(s, start + offset, n_variants, SEED, processor) or [b""] * (1 + n_variants)
            if loose_dir is None:
                out.append(images)
            else:
                for j, raw in enumerate(images):
                    (Path(loose_dir) / f"{start + offset:07d}_{j}.png").write_bytes(raw)
    return out


def write_old(smiles: list[str], folder: Path, n_variants: int, workers: int, loose: bool) -> None:
    folder.mkdir(parents=True)
    tasks = [(i, smiles[i : i + 64], n_variants, str(folder) if loose else None) for i in range(0, len(smiles), 64)]
    with _pool(workers) as pool:
        if loose:
            for _ in pool.imap_unordered(_draw_chunk, tasks):
                pass
        else:  # as the v1 prerender did: chunks in order, one writer
            offsets, position = [0], 0
            with open(folder / "images.bin", "wb") as fh:
                for chunk in pool.imap(_draw_chunk, tasks):
                    for raw in (raw for images in chunk for raw in images):
                        fh.write(raw)
                        position += len(raw)
                        offsets.append(position)
            np.save(folder / "offsets.npy", np.array(offsets, dtype=np.int64))
            (folder / "meta.json").write_text(json.dumps({"format": "moleclip-prerendered-png-v1",
                                                          "n_molecules": len(smiles), "n_variants": n_variants}))
    (folder / "smiles.txt").write_text("\n".join(smiles) + "\n")


class OldReader:
    """Fetches a picture's PNG bytes from either old layout (as the v1 reader did for the packed one)."""

    def __init__(self, folder: Path, n_variants: int, loose: bool):
        self.folder, self.n_variants, self.loose = folder, n_variants, loose
        if not loose:
            self.offsets = np.load(folder / "offsets.npy", mmap_mode="r")
            self.data = np.memmap(folder / "images.bin", dtype=np.uint8, mode="r")

    def fetch(self, slot: int, variants: list[int | None]) -> list[bytes]:
        js = [0 if v is None else 1 + v for v in variants]
        if self.loose:
            return [(self.folder / f"{slot:07d}_{j}.png").read_bytes() for j in js]
        k = [slot * (1 + self.n_variants) + j for j in js]
        return [self.data[int(self.offsets[i]) : int(self.offsets[i + 1])].tobytes() for i in k]


def disk(folder: Path) -> dict:
    files = [p for p in folder.rglob("*") if p.is_file()]
    return {"files": len(files), "apparent_bytes": sum(p.stat().st_size for p in files),
            "allocated_bytes": sum(p.stat().st_blocks * 512 for p in files)}


def read_rates(fetch, n_molecules: int, n_variants: int, pairs: int, store=None) -> dict:
    """Pairs/s of random access: the fetch of the plain drawing and one variant alone, and with both PNGs decoded
    (and, given the new store, through its own ``read_pair``, which also draws the variant from a generator)."""
    import io

    from PIL import Image

    order = np.random.default_rng(1).integers(n_molecules, size=pairs)
    chosen = np.random.default_rng(2).integers(n_variants, size=pairs)
    fetch(int(order[0]), [None, 0])  # open / map once
    start = time.perf_counter()
    for slot, v in zip(order, chosen):
        fetch(int(slot), [None, int(v)])
    fetch_rate = pairs / (time.perf_counter() - start)
    start = time.perf_counter()
    for slot, v in zip(order, chosen):
        for raw in fetch(int(slot), [None, int(v)]):
            if raw:
                np.asarray(Image.open(io.BytesIO(raw)).convert("RGB"))
    rates = {"read_pair_pairs_per_s": pairs / (time.perf_counter() - start), "fetch_only_pairs_per_s": fetch_rate}
    if store is not None:
        rng = np.random.default_rng(3)
        start = time.perf_counter()
        for slot in order:
            store.read_pair(int(slot), rng)
        rates["store_read_pair_pairs_per_s"] = pairs / (time.perf_counter() - start)
    return rates


def main(argv=None) -> int:
    from moleclip.processing.prerendered_store import prerender
    from moleclip.processing.tables import read_molecule_table

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--molecules", type=int, default=2000)
    parser.add_argument("--variants", type=int, default=3, help="random styles per molecule (3: 4 pictures each)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--shard-size", type=int, default=256,
                        help="molecules per shard of the new store (the default 2048 would give 2,000 molecules one "
                             "shard, i.e. one writing process)")
    parser.add_argument("--pairs", type=int, default=3000, help="random pair reads timed per store and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--scratch", default="/tmp/moleclip_bench_prerender")
    parser.add_argument("--output", default=str(RESULTS))
    args = parser.parse_args(argv)

    smiles = read_molecule_table(DATA).smiles[: args.molecules]
    pictures = len(smiles) * (1 + args.variants)
    scratch = Path(args.scratch)
    shutil.rmtree(scratch, ignore_errors=True)
    out = {"machine": describe_machine(), "molecules": len(smiles), "variants": args.variants,
           "pictures": pictures, "workers": args.workers, "image_size": 224, "formats": {}}

    # Writes one after another (each uses all --workers); then the reads in --rounds rounds, the formats taking turns,
    # so that other work on a shared machine falls on all of them alike (medians reported, every round kept).
    fetchers, stores = {}, {}
    for name in ("parquet_v2", "packed_png_v1", "loose_png"):
        folder = scratch / name
        start = time.perf_counter()
        if name == "parquet_v2":
            store = stores[name] = prerender(smiles, folder, n_variants=args.variants, seed=SEED, n_jobs=args.workers,
                                             shard_size=args.shard_size, progress=False)

            def fetch(slot, variants, store=store):
                return store._read_row(slot, ["plain" if v is None else f"styled_{v}" for v in variants])
        else:
            write_old(smiles, folder, args.variants, args.workers, loose=name == "loose_png")
            fetch = OldReader(folder, args.variants, loose=name == "loose_png").fetch
        seconds = time.perf_counter() - start
        fetchers[name] = fetch
        figures = {"write_pictures_per_s": pictures / seconds, "write_seconds": seconds, **disk(folder)}
        figures["bytes_per_picture"] = figures["apparent_bytes"] / pictures
        figures["allocated_bytes_per_picture"] = figures["allocated_bytes"] / pictures
        if name == "parquet_v2":
            figures.update(shards=len(store.files), shard_size=store.shard_size, row_group_size=store.row_group_size,
                           failed=store.meta["failed"])
        out["formats"][name] = figures
        print(f"{name:14s} write {figures['write_pictures_per_s']:6.0f} pictures/s | "
              f"{figures['bytes_per_picture'] / 1e3:5.2f} kB a picture ({figures['allocated_bytes_per_picture'] / 1e3:5.2f} "
              f"allocated) | {figures['files']} files", flush=True)
    rounds = {name: [] for name in fetchers}
    for r in range(args.rounds):
        names = list(fetchers)
        for name in names[r % len(names):] + names[: r % len(names)]:
            rounds[name].append(read_rates(fetchers[name], len(smiles), args.variants, args.pairs, stores.get(name)))
    for name, measured in rounds.items():
        figures = out["formats"][name]
        for key in measured[0]:
            figures[key] = float(np.median([m[key] for m in measured]))
            figures[key.replace("_per_s", "_per_s_rounds")] = [m[key] for m in measured]
        print(f"{name:14s} read_pair {figures['read_pair_pairs_per_s']:6.0f} pairs/s (fetch only "
              f"{figures['fetch_only_pairs_per_s']:8.0f})", flush=True)
    store = stores["parquet_v2"]
    start = time.perf_counter()
    streamed = sum(sum(row[c] is not None for c in row if c not in ("row", "smiles")) for row in store.streaming())
    rate = streamed / (time.perf_counter() - start)
    out["formats"]["parquet_v2"].update(streaming_pictures_per_s=rate, streamed_pictures=streamed)
    print(f"parquet_v2 streamed through datasets: {rate:.0f} pictures/s decoded ({streamed} pictures)")
    out["load_average_1min_at_end"] = round(os.getloadavg()[0], 2)
    # At ChEMBL scale (issue 11: 1.87 M molecules x 4 pictures), files by format.
    chembl = 1_870_000
    out["files_at_chembl_scale"] = {
        "loose_png": chembl * (1 + args.variants) + 1, "packed_png_v1": 4,
        "parquet_v2_default_shards": -(-chembl // 2048) + 2}
    shutil.rmtree(scratch, ignore_errors=True)
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(out, indent=2))
    print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Searching a library by structure or by picture: retrieval of molecules from other drawings of them, and query
latency of exact vs HNSW indexes against library size (what `moleclip index --kind auto` decides by).

    nice -n 10 python benchmarks/retrieval.py            # N = 1,000 molecules; sizes 1k, 10k, 100k (+500k exact)
    nice -n 10 python benchmarks/retrieval.py --quick    # N = 200; sizes 1k, 10k

1. Retrieval (machinery only). N ZINC molecules (MOSES, from the shared data) are drawn plainly, embedded with the
   `tiny` preset and indexed (exact, cosine). Each molecule is then queried (a) by its plain drawing saved as a PNG
   and read back through the picture path of `moleclip search`, (b) by a drawing in a random style (the pretraining
   "generation-level" augmentation: line width, font, bond length, rotation...), (c) by a random style plus the
   processor's "default" augmentation. Top-1 / top-10 = how often the molecule itself is the first / among the first
   ten hits. The tiny model has RANDOM weights: (a) must be 100% (same pixels, same vector) and checks the
   machinery; (b) and (c) are at chance level and say nothing about MoleCLIP's quality, which needs trained weights
   that cannot be had here.
2. Latency. Random float32 vectors of 512 dimensions (a ViT-B/16 MoleCLIP's embedding) and 32 (tiny's): exact
   (IndexFlatIP) and HNSW (M=32, efConstruction=100, efSearch=128) at each library size: build time, one query at a
   time (median of 200 single-query calls, what an interactive search pays) and 200 queries in one call (per query),
   recall@10 of HNSW against exact on "structured" vectors (near a 24-dimensional subspace, as embeddings are) and on
   isotropic Gaussian ones (the worst case: in 512 dimensions every point is nearly as far as every other). The
   `auto` cutoff is the library size at which one exact query at 512 dimensions reaches a 50 ms budget (interpolated
   between the measured sizes).

Writes benchmarks/results/retrieval.json and retrieval.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from machine_info import describe_machine

HERE = Path(__file__).resolve().parent
LATENCY_BUDGET_MS = 50.0
N_QUERIES = 200


def zinc_sample(data_dir, n: int, seed: int) -> list[str]:
    """n distinct drawable ZINC SMILES, sampled from the first 50,000 rows of the MOSES file."""
    import pandas as pd

    from moleclip.processing.molecules import InvalidMoleculeError, to_mol

    frame = pd.read_csv(data_dir / "pretraining" / "zinc_moses_1.58m.csv.gz", nrows=50_000)
    pool = frame["SMILES"].drop_duplicates().sample(frac=1.0, random_state=seed).tolist()
    chosen = []
    for smiles in pool:
        try:
            to_mol(smiles)
        except InvalidMoleculeError:
            continue
        chosen.append(smiles)
        if len(chosen) == n:
            break
    return chosen


def retrieval(smiles: list[str], seed: int) -> dict:
    import torch
    from PIL import Image

    from moleclip.training.serving.hub import load_backbone, load_processor
    from moleclip.training.inference.engine import embed
    from moleclip.training.kinds import ImageKind
    from moleclip.training.retrieval.index import LibraryIndex, Query, build_faiss_index, embed_queries

    torch.manual_seed(seed)
    model, processor = load_backbone("tiny").eval(), load_processor("tiny")
    started = time.perf_counter()
    kind = ImageKind(model, processor)
    library, kept, skipped = embed(kind, smiles, progress=False)
    embed_seconds = time.perf_counter() - started
    assert not skipped and len(kept) == len(smiles)
    index = LibraryIndex(build_faiss_index(library, "cosine", "exact"), None, {"metric": "cosine", "kind": "exact"})
    truth = np.arange(len(smiles))
    results = {"n": len(smiles), "embedding_seconds_per_molecule": round(embed_seconds / len(smiles), 4),
               "chance_top1": 1 / len(smiles), "chance_top10": min(10, len(smiles)) / len(smiles)}

    def score(name, vectors):
        _, positions = index.search(vectors, 10)
        top1 = float(np.mean(positions[:, 0] == truth))
        top10 = float(np.mean((positions == truth[:, None]).any(axis=1)))
        results[name] = {"top1": round(top1, 4), "top10": round(top10, 4)}
        print(f"  {name:<28} top-1 {top1:6.1%}   top-10 {top10:6.1%}", flush=True)

    with tempfile.TemporaryDirectory() as folder:
        pictures, _, _ = processor.render_images(smiles)
        queries = []
        for i, picture in enumerate(pictures):
            path = Path(folder) / f"mol_{i}.png"
            Image.fromarray(picture).save(path)
            queries.append(Query(str(path), "picture"))
        score("plain_drawing_png", embed_queries(model, processor, queries))
    styled, _, _ = embed(kind, smiles, progress=False, randomize_drawing=True,
                         seed=np.random.default_rng(seed + 1))
    score("random_style", styled)
    augmented, _, _ = embed(kind, smiles, progress=False, randomize_drawing=True,
                            augmentation="default", seed=np.random.default_rng(seed + 2))
    score("random_style_augmented", augmented)
    spread = library / np.linalg.norm(library, axis=1, keepdims=True)
    cosines = spread @ spread.T
    results["mean_cosine_between_library_molecules"] = round(float(cosines[np.triu_indices(len(smiles), 1)].mean()), 5)
    return results


def _structured(n: int, d: int, rng, basis) -> np.ndarray:
    x = rng.standard_normal((n, basis.shape[0]), dtype=np.float32) @ basis
    x += 0.1 * rng.standard_normal((n, d), dtype=np.float32)
    return x


def latency(sizes: list[int], dimensions: list[int], exact_only: list[int], seed: int) -> list[dict]:
    from moleclip.training.retrieval.index import LibraryIndex, build_faiss_index

    rows = []
    for d in dimensions:
        rng = np.random.default_rng(seed)
        basis = (rng.standard_normal((24, d)) / np.sqrt(24)).astype(np.float32)
        for n in sizes + [s for s in exact_only if d == 512]:
            data = {"structured": _structured(n, d, rng, basis),
                    "isotropic": rng.standard_normal((n, d), dtype=np.float32)} if n not in exact_only else \
                {"structured": _structured(n, d, rng, basis)}
            queries = {"structured": _structured(N_QUERIES, d, rng, basis),
                       "isotropic": rng.standard_normal((N_QUERIES, d), dtype=np.float32)}
            row = {"dimension": d, "size": n}
            truth = {}
            for kind in ("exact", "hnsw"):
                if kind == "hnsw" and n in exact_only:
                    continue
                for distribution, vectors in data.items():
                    started = time.perf_counter()
                    index = LibraryIndex(build_faiss_index(vectors, "cosine", kind), None,
                                         {"metric": "cosine", "kind": kind})
                    build = time.perf_counter() - started
                    q = queries[distribution]
                    found = index.search(q, 10)[1]
                    if kind == "exact":
                        truth[distribution] = found
                    else:
                        recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, truth[distribution])])
                        row[f"hnsw_recall10_{distribution}"] = round(float(recall), 4)
                    if distribution != "structured":
                        continue  # timings on the structured vectors (HNSW's walk depends on the data)
                    single = []
                    for i in range(N_QUERIES):
                        t = time.perf_counter()
                        index.search(q[i:i + 1], 10)
                        single.append(time.perf_counter() - t)
                    t = time.perf_counter()
                    index.search(q, 10)
                    batch = (time.perf_counter() - t) / N_QUERIES
                    row[f"{kind}_build_s"] = round(build, 3)
                    row[f"{kind}_single_query_ms"] = round(float(np.median(single)) * 1e3, 4)
                    row[f"{kind}_batched_query_ms"] = round(batch * 1e3, 4)
                del index
            rows.append(row)
            print("  " + ", ".join(f"{k}={v}" for k, v in row.items()), flush=True)
    return rows


def cutoff(rows: list[dict]) -> dict:
    """Library size at which one exact query at 512 dimensions reaches LATENCY_BUDGET_MS: linear interpolation between
    the two measured sizes around the budget (extrapolated from the last two when none reaches it). Not a line through
    all points: small libraries fit in the CPU cache and are several times cheaper per vector than large ones."""
    points = sorted((r["size"], r["exact_single_query_ms"]) for r in rows if r["dimension"] == 512)
    if len(points) < 2:
        return {}
    pairs = list(zip(points, points[1:]))
    (n0, ms0), (n1, ms1) = next(((a, b) for a, b in pairs if a[1] < LATENCY_BUDGET_MS <= b[1]), pairs[-1])
    size = n0 + (LATENCY_BUDGET_MS - ms0) * (n1 - n0) / (ms1 - ms0)
    return {"budget_ms": LATENCY_BUDGET_MS, "between_sizes": [n0, n1],
            "exact_us_per_vector_at_512_largest": round(points[-1][1] / points[-1][0] * 1e3, 4),
            "size_at_512": int(round(size, -3)), "values": int(round(size * 512, -5))}


def markdown(result: dict) -> str:
    machine = result["machine"]
    r = result["retrieval"]
    lines = [
        "# Search a library by structure or by picture (benchmarks/retrieval.py)",
        "",
        f"Machine: {machine['processor']}, {machine['cpu_cores']} cores, faiss {result['faiss']} "
        f"({result['faiss_threads']} threads), torch {machine['torch']}; load average "
        f"{machine.get('load_average_1min_at_start')} at start, {result['load_average_1min_at_end']} at end "
        f"(shared machine, run under nice). {'Quick run. ' if result['quick'] else ''}Run took {result['seconds']} s.",
        "",
        f"## Retrieval of {r['n']} ZINC molecules from other drawings of them (tiny preset, RANDOM weights)",
        "",
        "Machinery check only: no quality figure for MoleCLIP can be measured without trained weights. The plain "
        "drawing read back from a PNG must find its molecule (same pixels); random styles are at chance with random "
        f"weights (mean cosine between library molecules {r['mean_cosine_between_library_molecules']}).",
        "",
        "| query | top-1 | top-10 |",
        "|---|---|---|",
    ]
    for name in ("plain_drawing_png", "random_style", "random_style_augmented"):
        lines.append(f"| {name.replace('_', ' ')} | {r[name]['top1']:.1%} | {r[name]['top10']:.1%} |")
    lines.append(f"| chance | {r['chance_top1']:.1%} | {r['chance_top10']:.1%} |")
    lines += [
        "",
        "## Query latency against library size (random vectors, k = 10)",
        "",
        "Single = one query per call (median of 200); batched = 200 queries in one call, per query. Recall@10 of "
        "HNSW (M 32, efConstruction 100, efSearch 128) against exact, on structured vectors (near a 24-dimensional "
        "subspace, like embeddings) and isotropic ones (worst case).",
        "",
        "| dim | size | exact single ms | exact batched ms | HNSW build s | HNSW single ms | HNSW batched ms | "
        "recall@10 structured | recall@10 isotropic |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in result["latency"]:
        cell = lambda key, fmt="{:.3f}": fmt.format(row[key]) if key in row else "-"  # noqa: E731
        lines.append(f"| {row['dimension']} | {row['size']:,} | {cell('exact_single_query_ms')} | "
                     f"{cell('exact_batched_query_ms')} | {cell('hnsw_build_s', '{:.1f}')} | "
                     f"{cell('hnsw_single_query_ms')} | {cell('hnsw_batched_query_ms')} | "
                     f"{cell('hnsw_recall10_structured', '{:.4f}')} | {cell('hnsw_recall10_isotropic', '{:.4f}')} |")
    c, values = result.get("cutoff"), result["auto_hnsw_values"]
    if c:
        low, high = c["between_sizes"]
        lines += ["", f"One exact query at 512 dimensions reaches {c['budget_ms']:.0f} ms at about "
                      f"{c['size_at_512']:,} molecules (size x dimension {c['values']:,}; interpolated between {low:,} "
                      f"and {high:,}; {c['exact_us_per_vector_at_512_largest']} µs per molecule at the largest size). "
                      f"`--kind auto` switches to HNSW above {values:,} (size x dimension: {values // 512:,} molecules "
                      f"at 512 dimensions, {values // 32:,} at 32); AUTO_HNSW_VALUES in training/retrieval/index.py says "
                      "from which runs. Timings on a shared machine vary with its load."]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="N = 200, sizes 1k and 10k")
    parser.add_argument("--n", type=int, default=None, help="library molecules for the retrieval part (1000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", default=None, help="default: $MOLECLIP_DATA_DIR, else ../shared/data")
    parser.add_argument("--output", default=str(HERE / "results" / "retrieval.json"))
    args = parser.parse_args()

    import faiss

    from moleclip.processing.property_data import resolve_data_dir
    from moleclip.training.retrieval.index import AUTO_HNSW_VALUES

    started = time.perf_counter()
    machine = describe_machine()
    n = args.n or (200 if args.quick else 1000)
    sizes = [1_000, 10_000] if args.quick else [1_000, 10_000, 100_000]
    exact_only = [] if args.quick else [500_000]
    print(f"retrieval of {n} ZINC molecules (tiny preset, random weights: machinery only)", flush=True)
    result = {"benchmark": "retrieval", "machine": machine, "quick": args.quick, "faiss": faiss.__version__,
              "faiss_threads": faiss.omp_get_max_threads(), "auto_hnsw_values": AUTO_HNSW_VALUES,
              "retrieval": retrieval(zinc_sample(resolve_data_dir(args.data_dir), n, args.seed), args.seed)}
    print("query latency against library size (random vectors)", flush=True)
    result["latency"] = latency(sizes, [512, 32], exact_only, args.seed)
    result["cutoff"] = cutoff(result["latency"])
    if result["cutoff"]:
        c = result["cutoff"]
        print(f"one exact query at d=512 reaches {c['budget_ms']:.0f} ms at ~{c['size_at_512']:,} vectors (size x dim "
              f"{c['values']:,}); AUTO_HNSW_VALUES = {AUTO_HNSW_VALUES:,}")
    result["load_average_1min_at_end"] = round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None
    result["seconds"] = round(time.perf_counter() - started, 1)
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result, indent=2) + "\n")
    output.with_suffix(".md").write_text(markdown(result))
    print(f"wrote {output} and {output.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

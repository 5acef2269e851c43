"""Drawing throughput on one core: the figures behind the rendering design (see processing/rendering.py).

Single process, one thread (torch too), on the first --n SMILES of pretraining/chembl25_3k.smi:

  coordinates      parse + 2D layout (prepare_for_drawing) through a CoordinateCache: molecules/s
  plain            render(DrawingStyle()): RDKit's Cairo drawer with its PNG round trip (the plain view)
  plain_fast       the same style through the PNG-free back end (backend="fast"), for comparison
  random_cairo     random_style + render through RDKit's Cairo drawer (backend="cairo"), for comparison
  random           random_style + render (default back end: fast)
  random_default_normalize
                   random_style + render + augment "default" + normalize: the randomised pretraining view,
                   the figure the rendering layer is judged on (target >= 200 images/s per core)
  plain_default_normalize
                   render plain + augment "default" + normalize: the other pretraining view

and, for the first --agreement-n molecules, whether the fast back end draws the plain view with the very pixels of
RDKit's Cairo drawer (where it did, the plain view could skip the PNG round trip without changing what the model sees):
pictures identical, share of pixels that differ, largest difference.

Every step after "coordinates" draws from the cache (layouts are computed once per molecule). Each figure is given
per wall-clock second and per CPU second of this process: on a shared machine (other jobs running) the CPU-time
figure is the fairer per-core rate; the load average at the start is recorded. Molecules that cannot be drawn
(over the package's 250 heavy-atom limit) are skipped and counted.

Prints a table and writes benchmarks/results/render.json.
"""

from __future__ import annotations

import os

# One core: no intra-op threads in torch / BLAS (set before they are imported).
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from machine_info import describe_machine  # noqa: E402
from tqdm import tqdm  # noqa: E402

from moleclip.processing.augment import augment  # noqa: E402
from moleclip.processing.image_processing_moleclip import MoleCLIPImageProcessor  # noqa: E402
from moleclip.processing.molecules import InvalidMoleculeError, quiet_rdkit  # noqa: E402
from moleclip.processing.rendering import (  # noqa: E402
    CoordinateCache,
    DrawingStyle,
    fast_backend_info,
    find_fonts,
    random_style,
    render,
)

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "render.json"
BATCH = 64  # normalisation runs on batches, as in the data pipeline


def default_data_dir() -> Path:
    return Path(os.environ.get("MOLECLIP_DATA_DIR", ROOT.parent / "shared" / "data"))


def read_smiles(data_dir: Path, n: int) -> list[str]:
    path = data_dir / "pretraining" / "chembl25_3k.smi"
    if not path.is_file():
        raise SystemExit(f"{path} not found; pass --data-dir (or set MOLECLIP_DATA_DIR) to the shared data folder")
    smiles = []
    with open(path) as handle:
        for line in handle:
            if line.strip():
                smiles.append(line.split()[0])
            if len(smiles) == n:
                break
    return smiles


def timed(label: str, items: list, step, unit: str = "images") -> dict:
    """Run ``step`` on every item; rates per wall second and per CPU second of this process."""
    wall, cpu = time.perf_counter(), time.process_time()
    for item in tqdm(items, desc=label, leave=False, mininterval=1.0, disable=None):
        step(item)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {"unit": unit, "count": len(items), "wall_s": round(wall, 3), "cpu_s": round(cpu, 3),
            "per_s_wall": round(len(items) / wall, 1), "per_s_cpu": round(len(items) / cpu, 1)}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=3000, help="number of SMILES from chembl25_3k.smi (default 3000)")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="shared data folder (default: $MOLECLIP_DATA_DIR or ../shared/data next to the repo)")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--embed-n", type=int, nargs=2, default=(256, 32), metavar=("TINY", "BASE"),
                        help="molecules embedded with the tiny and base presets (default 256 32)")
    parser.add_argument("--embed-batch-size", type=int, default=16)
    parser.add_argument("--agreement-n", type=int, default=200,
                        help="molecules whose plain drawings are compared between the back ends (default 200)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    machine = describe_machine()  # now: its load average must be the one the drawing started under, not ours after it

    data_dir = args.data_dir or default_data_dir()
    smiles = read_smiles(data_dir, args.n)
    find_fonts()  # one-off font discovery and checks, kept out of the timings
    fast_backend_info()

    cache = CoordinateCache(max_size=max(len(smiles), 1))
    prepared, skipped = [], []

    def prepare(item):
        index, text = item
        try:
            prepared.append(cache.get(text, index=index))
        except InvalidMoleculeError as err:
            skipped.append({"index": index, "reason": err.reason})

    results = {}
    with quiet_rdkit():
        results["coordinates"] = timed("coordinates", list(enumerate(smiles)), prepare, unit="molecules")
        size = args.size
        plain = DrawingStyle()
        results["plain"] = timed("plain", prepared, lambda m: render(m, size, plain))
        results["plain_fast"] = timed("plain_fast", prepared, lambda m: render(m, size, plain, backend="fast"))

        rng = np.random.default_rng(args.seed)
        results["random_cairo"] = timed(
            "random_cairo", prepared, lambda m: render(m, size, random_style(rng), backend="cairo"))
        rng = np.random.default_rng(args.seed)
        results["random"] = timed("random", prepared, lambda m: render(m, size, random_style(rng)))

        normalize = MoleCLIPImageProcessor(size=size).pictures_to_pixel_values

        def pipeline(style_of):
            rng = np.random.default_rng(args.seed)
            pending = []

            def step(mol):
                pending.append(augment(render(mol, size, style_of(rng)), "default", rng))
                if len(pending) == BATCH:
                    normalize(pending)
                    pending.clear()
            return step, pending

        step, pending = pipeline(random_style)
        results["random_default_normalize"] = timed("random+default+normalize", prepared, step)
        if pending:
            normalize(pending)
        step, pending = pipeline(lambda rng: plain)
        results["plain_default_normalize"] = timed("plain+default+normalize", prepared, step)

        agreement = backend_agreement(prepared[: args.agreement_n], size)

    report = {
        "benchmark": "render",
        "data": str(data_dir / "pretraining" / "chembl25_3k.smi"),
        "n_smiles": len(smiles),
        "n_drawn": len(prepared),
        "n_skipped": len(skipped),
        "skipped": skipped[:20],
        "size": args.size,
        "seed": args.seed,
        "machine": machine,
        "fast_backend": fast_backend_info(),
        "results": results,
        "plain_backend_agreement": agreement,
    }

    print(f"{len(prepared)} of {len(smiles)} molecules drawn ({len(skipped)} skipped), {args.size} px, one core")
    print(f"{'step':28s} {'per wall s':>12s} {'per CPU s':>12s}")
    for name, row in results.items():
        print(f"{name:28s} {row['per_s_wall']:>12.1f} {row['per_s_cpu']:>12.1f}  {row['unit']}/s")
    print(f"fast back end: {'on' if report['fast_backend']['available'] else 'off'}, "
          f"{report['fast_backend']['fallbacks']} drawings fell back to RDKit's Cairo drawer")
    print(f"plain view, fast vs Cairo: {agreement['identical']} of {agreement['n']} pictures identical; "
          f"median {100 * agreement['median_fraction_differing']:.1f} % of pixels differ, largest difference "
          f"{agreement['max_difference']} (median per picture {agreement['median_max_difference']:.0f})")

    # ------------------------------------------------------------------------------------------------------------
    # Embedding throughput of the randomly initialised presets, on every core (inference uses them all): the encoder
    # forward alone on ready pixel tensors, and end to end (drawing + normalising + forward) through the engine's embed.
    # ------------------------------------------------------------------------------------------------------------
    report["embedding"] = embedding_throughput(smiles, args)
    print(f"{'embedding (all cores)':28s} {'forward/s':>12s} {'end-to-end/s':>12s}")
    for name, row in report["embedding"].items():
        print(f"{name:28s} {row['forward_per_s']:>12.1f} {row['end_to_end_per_s']:>12.1f}  images/s "
              f"(batch {row['batch_size']}, {row['n']} molecules, {row['threads']} threads)")

    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"written to {args.output}")
    return report


def backend_agreement(prepared: list, size: int) -> dict:
    """How far the fast back end's plain drawings are from RDKit's Cairo drawer's, picture by picture."""
    plain = DrawingStyle()
    identical, fractions, largest = 0, [], []
    for mol in prepared:
        difference = np.abs(render(mol, size, plain, backend="cairo").astype(np.int16)
                            - render(mol, size, plain, backend="fast").astype(np.int16)).max(axis=2)
        identical += int(difference.max() == 0)
        fractions.append(float((difference > 0).mean()))
        largest.append(int(difference.max()))
    return {
        "n": len(prepared),
        "identical": identical,
        "median_fraction_differing": float(np.median(fractions)) if fractions else 0.0,
        "median_max_difference": float(np.median(largest)) if largest else 0.0,
        "max_difference": max(largest, default=0),
    }


def embedding_throughput(smiles: list[str], args) -> dict:
    from moleclip import MoleCLIPConfig, MoleCLIPImageProcessor, MoleCLIPModel
    from moleclip.training.inference.engine import embed
    from moleclip.training.kinds import ImageKind

    from moleclip.processing.cores import available_cores

    threads = available_cores()  # the cores this process may use (a container narrows them), not the host's count
    torch.set_num_threads(threads)
    processor = MoleCLIPImageProcessor()
    rows = {}
    for preset, n in zip(("tiny", "base"), args.embed_n):
        if n <= 0:
            continue
        torch.manual_seed(0)
        model = MoleCLIPModel(MoleCLIPConfig.from_preset(preset, pseudo_label_classes=[])).eval()
        batch = smiles[:n]
        pixels = processor(batch[: args.embed_batch_size], on_error="skip")["pixel_values"]
        with torch.inference_mode():
            model(pixel_values=pixels)  # warm-up: first-call allocations are not throughput
            start = time.perf_counter()
            done = 0
            while done < n:
                model(pixel_values=pixels)
                done += pixels.shape[0]
            forward = done / (time.perf_counter() - start)
        start = time.perf_counter()
        embeds, kept, _ = embed(ImageKind(model, processor), batch, batch_size=args.embed_batch_size, device="cpu",
                                progress=False)
        end_to_end = len(kept) / (time.perf_counter() - start)
        rows[preset] = {"forward_per_s": forward, "end_to_end_per_s": end_to_end, "n": n,
                        "batch_size": args.embed_batch_size, "threads": threads, "dtype": "float32"}
    torch.set_num_threads(1)
    return rows


if __name__ == "__main__":
    main()

"""Pretraining benchmarks: pseudo-labels, the two-view data pipeline, and training throughput on CPU and GPU.

Sections (all by default; choose with --sections):
  pseudo_labels  time and peak memory (the whole process tree) of MACCS keys + K-means (K = 300, 3000) for the sizes
                 given with --pseudo-label-sizes (150k: ChEMBL-31 subset; larger: the 1.58M ZINC/MOSES set); without
                 sizes, the figures of benchmarks/results/pseudo_labels.json are reported when that file exists.
  data           two views per molecule through DataLoader workers: images/s and images/s per core, first pass
                 (2D layouts computed) and second pass (layouts cached), and from a pre-rendered store.
  pipeline       the store route's cost per image on the CPU, CPU-seconds of this process (--quick: fewer molecules):
                 today's worker (decode the pair from the store + per-image `default` augmentation) against a worker
                 that only decodes while the augmentation runs batched on the device (`augment_batch`); the batched
                 augmentation's own cost on the CPU (not representative of a GPU) and, with CUDA, on the GPU.
                 Written to benchmarks/results/pretrain_pipeline.json (--pipeline-output: elsewhere).
  train_cpu      training step throughput (forward + backward + optimizer step, both views) of the `tiny` preset on CPU.
  gpu            only with CUDA: the ViT-B/16 shape (`base` preset) at batch 256 molecules (512 images) in bf16:
                 images/s, achieved FLOP/s and the fraction of the GPU's dense bf16 peak; then the data pipeline with
                 --gpu-workers workers (drawing, and reading a pre-rendered store; the workers augmenting, and only
                 drawing or decoding as under --augment-on device, the default on a GPU) against the training step
                 rate.

The training sections step pretraining's own optimizer (`build_pretrain_optimizer`: Adam with L2 weight decay, the
paper's). Figures recorded before pretraining had --optimizer were measured with AdamW, whose update costs the same
(one extra elementwise pass over the weights either way).

FLOPs of a ViT training step are counted analytically (2 FLOPs per multiply-add; backward = 2 x forward, so a
training step is 3 x forward). With N = (image/patch)^2 + 1 tokens, width d, MLP width m, L layers, patch p:
  forward = 2 (N-1) d 3p^2                      patch embedding
          + L [2 N 4 d^2 + 2 N 2 d m + 4 N^2 d]   q, k, v, out projections; MLP; scores and weighted sum
          + 2 d e                               visual projection to e dims
ViT-B/16 at 224 px: 35.1 GFLOPs forward, 105.4 GFLOPs per image per training step.

Results are printed and written to benchmarks/results/pretrain.json (merged with what is already there, so sections
can be run on different machines).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch
from machine_info import describe_machine
from moleclip.processing.cores import available_cores

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "pretrain.json"
PIPELINE_RESULTS = ROOT / "benchmarks" / "results" / "pretrain_pipeline.json"
DATA_DIR = Path(os.environ.get("MOLECLIP_DATA_DIR", ROOT.parent / "shared" / "data"))

# Dense (no sparsity) bf16 tensor-core peaks, FLOP/s, from the vendors' data sheets.
BF16_PEAK = [("H100 PCIe", 756e12), ("H100", 989.4e12), ("H200", 989.4e12), ("GH200", 989.4e12), ("A100", 312e12),
             ("L40S", 362e12), ("A10G", 70e12)]


def drawable(smiles: list[str]) -> list[str]:
    """The molecules the drawing code accepts (parsable, at most MAX_HEAVY_ATOMS heavy atoms)."""
    from moleclip.processing.molecules import parse_many

    _, kept, _ = parse_many(smiles, on_error="skip")
    return [smiles[i] for i in kept]


def read_smiles_file(name: str, n: int | None = None) -> list[str]:
    from moleclip.processing.tables import read_molecule_table

    path = DATA_DIR / "pretraining" / name
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: set MOLECLIP_DATA_DIR to the shared data folder")
    if n is not None and name.endswith(".smi.gz"):
        with gzip.open(path, "rt") as fh:  # no need to read 150k lines for a 2k sample
            return [line.split()[0] for _, line in zip(range(n), fh) if line.strip()]
    smiles = read_molecule_table(path).smiles
    return smiles[:n] if n else smiles


# ---------------------------------------------------------------------------------------------------- pseudo-labels
class PeakMemory:
    """Samples the resident memory of this process and all its children (worker pools included)."""

    def __init__(self, pid: int, interval: float = 0.2):
        import psutil

        self.process, self.interval, self.peak = psutil.Process(pid), interval, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        import psutil

        while not self._stop.is_set():
            total = 0
            try:
                for p in [self.process, *self.process.children(recursive=True)]:
                    try:
                        total += p.memory_info().rss
                    except psutil.Error:
                        pass
            except psutil.Error:
                break
            self.peak = max(self.peak, total)
            time.sleep(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


_PSEUDO_CHILD = """
import json, sys, time
from moleclip.processing.pseudo_labels import compute_pseudo_labels
sys.path.insert(0, {bench!r})
from pretrain import read_smiles_file
smiles = read_smiles_file({name!r}, {n!r})
start = time.perf_counter()
table, info = compute_pseudo_labels(smiles, [300, 3000], seed=0)
print("RESULT" + json.dumps({{"molecules": len(smiles), "labelled": len(table), "seconds": time.perf_counter() - start}}))
"""


def bench_pseudo_labels(sizes: list[int]) -> dict:
    out = {}
    existing = ROOT / "benchmarks" / "results" / "pseudo_labels.json"
    if existing.is_file():
        out["from_pseudo_labels_benchmark"] = json.loads(existing.read_text())
        print(f"pseudo-labels: figures of {existing.relative_to(ROOT)} included")
        for name, run in out["from_pseudo_labels_benchmark"].get("runs", {}).items():
            kmeans = ", ".join(f"K={k} {v.get('total_s', float('nan')):.0f} s" for k, v in run.get("kmeans", {}).items())
            print(f"  {name} ({run.get('n_input', '?')} molecules): {run.get('wall_s', float('nan')):.0f} s in all "
                  f"(MACCS {run.get('maccs_s', float('nan')):.0f} s; {kmeans}); peak RSS main "
                  f"{run.get('peak_rss_main_mb', float('nan')):.0f} MB, largest worker "
                  f"{run.get('peak_rss_worker_mb', float('nan')):.0f} MB")
    for n in sizes:
        name = "chembl31_150k.smi.gz" if n <= 150_000 else "zinc_moses_1.58m.csv.gz"
        code = _PSEUDO_CHILD.format(bench=str(Path(__file__).parent), name=name, n=n)
        proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        with PeakMemory(proc.pid) as memory:
            stdout, _ = proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"pseudo-label benchmark for {n} molecules failed (exit {proc.returncode})")
        result = json.loads(next(line for line in stdout.splitlines() if line.startswith("RESULT"))[6:])
        result.update(source=name, peak_rss_gib=memory.peak / 2**30, ks=[300, 3000], cores=available_cores())
        out[f"n{n}"] = result
        print(f"pseudo-labels for {result['molecules']:,} molecules ({name}), K = 300, 3000: {result['seconds']:.1f} s, "
              f"peak memory {result['peak_rss_gib']:.2f} GiB (process tree), {available_cores()} cores")
    return out


# ---------------------------------------------------------------------------------------------------- data pipeline
class _Batches:
    """Consecutive batches of a fixed order, with the loop's sampler protocol."""

    def __init__(self, n: int, batch_size: int):
        self.n, self.batch_size, self.start = n, batch_size, 0

    def set_epoch(self, epoch, start_batch=0):
        self.start = start_batch

    def __len__(self):
        return self.n // self.batch_size

    def __iter__(self):
        for b in range(self.start, len(self)):
            yield list(range(b * self.batch_size, (b + 1) * self.batch_size))


def loader_throughput(dataset, workers: int, batch_size: int = 32, passes: int = 2) -> list[float]:
    """Images/s (two per molecule) of each pass over `dataset` through persistent workers."""
    from torch.utils.data import DataLoader

    from moleclip.processing.pretraining_data import collate_two_views
    from moleclip.training.samplers import EpochBatches

    sampler = EpochBatches(_Batches(len(dataset), batch_size))
    kwargs = dict(persistent_workers=True, prefetch_factor=4) if workers else {}
    loader = DataLoader(dataset, batch_sampler=sampler, num_workers=workers, collate_fn=collate_two_views, **kwargs)
    rates = []
    for epoch in range(passes):
        sampler.set_epoch(epoch)
        start, images = time.perf_counter(), 0
        for batch in loader:
            images += 2 * batch["pixel_values"].shape[0]
        rates.append(images / (time.perf_counter() - start))
    del loader
    return rates


def bench_data(n_molecules: int, worker_counts: list[int], store_dir: Path) -> dict:
    from moleclip.processing.pretraining_data import PrerenderedImages, TwoViewDataset, prerender

    smiles = drawable(read_smiles_file("chembl25_3k.smi", n_molecules))
    labels = np.zeros((len(smiles), 1), dtype=np.int64)
    out = {"molecules": len(smiles), "augmentation": "default", "image_size": 224, "drawing": {}, "prerendered": {}}
    for workers in worker_counts:
        first, second = loader_throughput(TwoViewDataset(smiles, labels, seed=0), workers)
        used = max(1, workers)
        out["drawing"][f"workers_{workers}"] = {
            "first_pass_images_per_s": first, "cached_layout_images_per_s": second,
            "first_pass_images_per_s_per_core": first / used, "cached_layout_images_per_s_per_core": second / used}
        print(f"data, drawing, {workers} worker(s): {first:.0f} images/s first pass ({first / used:.0f}/core), "
              f"{second:.0f} images/s with cached 2D layouts ({second / used:.0f}/core)")
    start = time.perf_counter()
    n_jobs = max(worker_counts) or 1
    store = prerender(smiles, store_dir, n_variants=2, n_jobs=n_jobs, overwrite=True, progress=False)
    seconds = time.perf_counter() - start
    out["prerendered"]["write"] = {
        "molecules_per_s": len(smiles) / seconds, "molecules_per_s_per_core": len(smiles) / seconds / n_jobs,
        "processes": n_jobs, "variants": 2, "kb_per_picture": store.meta["bytes"] / (3 * len(smiles)) / 1e3}
    print(f"pre-render: {len(smiles) / seconds:.0f} molecules/s with {n_jobs} processes (3 drawings each), "
          f"{out['prerendered']['write']['kb_per_picture']:.1f} kB a picture")
    for workers in worker_counts:
        dataset = TwoViewDataset(smiles, labels, seed=0, prerendered=PrerenderedImages(store_dir))
        rate = loader_throughput(dataset, workers, passes=1)[0]
        out["prerendered"][f"workers_{workers}"] = {"images_per_s": rate, "images_per_s_per_core": rate / max(1, workers)}
        print(f"data, pre-rendered store, {workers} worker(s): {rate:.0f} images/s ({rate / max(1, workers):.0f}/core)")
    return out


def _cpu_rate(images: int, work) -> tuple[float, float]:
    """(images per CPU-second of this process, images per wall-second) of running ``work()``."""
    cpu, wall = time.process_time(), time.perf_counter()
    work()
    return images / (time.process_time() - cpu), images / (time.perf_counter() - wall)


def bench_pipeline(n_molecules: int, epochs: int, batch: int, store_dir: Path) -> dict:
    """Per-image worker augmentation against decode-only workers plus `augment_batch` on the device (store route)."""
    from moleclip.processing.augment_batched import augment_batch, sample_parameters, sample_seed
    from moleclip.processing.pretraining_data import (
        AUGMENT_DRAWS, TRAIN_STREAM, PrerenderedImages, TwoViewDataset, prerender)

    smiles = drawable(read_smiles_file("chembl25_3k.smi", n_molecules))
    prerender(smiles, store_dir, n_variants=2, n_jobs=available_cores(), overwrite=True, progress=False)
    keys = [(epoch, i) for epoch in range(epochs) for i in range(len(smiles))]
    images = 2 * len(keys)
    # Both workers run the dataset's own __getitem__ (in this process, as a DataLoader worker would): the same
    # store reads and PNG decodes; the second one with augmentation "none", what workers do when the device augments.
    per_image = TwoViewDataset(smiles, seed=0, prerendered=PrerenderedImages(store_dir))
    decode_only = TwoViewDataset(smiles, seed=0, prerendered=PrerenderedImages(store_dir), augmentation="none")
    for dataset in (per_image, decode_only):  # warm: memory map, noise bank, first-call overheads
        dataset[(0, 0)]
    per_image_rate, per_image_wall = _cpu_rate(images, lambda: [per_image[key] for key in keys])
    items = []
    decode_rate, decode_wall = _cpu_rate(images, lambda: items.extend(decode_only[key] for key in keys))

    # The device's share: batches of both views, every sample seeded from its coordinates (per view: the two views
    # of a sample must not share their augmentation).
    def seeds_of(chunk):
        return [sample_seed(0, TRAIN_STREAM, epoch, i, AUGMENT_DRAWS, view) for view in (0, 1) for epoch, i in chunk]

    batches = []
    for start in range(0, len(keys), batch):
        chunk = keys[start : start + batch]
        pictures = torch.stack([it[k] for k in ("pixel_values", "augmented_pixel_values") for it in items[start : start + batch]])
        batches.append((pictures, seeds_of(chunk)))
    threads = torch.get_num_threads()
    params_rate, _ = _cpu_rate(images, lambda: [sample_parameters("default", len(s), s) for _, s in batches])
    augment_batch(batches[0][0], "default", batches[0][1], device="cpu")  # warm
    cpu_rate, cpu_wall = _cpu_rate(images, lambda: [augment_batch(p, "default", s, device="cpu") for p, s in batches])
    out = {
        "molecules": len(smiles), "epochs": epochs, "images": images, "image_size": 224, "augmentation": "default",
        "route": "pre-rendered store", "batch_images": 2 * batch,
        "per_image_cpu_path": {"images_per_cpu_s": per_image_rate, "images_per_wall_s": per_image_wall,
                               "what": "TwoViewDataset.__getitem__: store read + PNG decode + per-image augment"},
        "accelerator_batched_path": {
            "images_per_cpu_s": decode_rate, "images_per_wall_s": decode_wall,
            "what": "TwoViewDataset.__getitem__ with augmentation 'none': store read + PNG decode only"},
        "ratio": decode_rate / per_image_rate,
        "augment_batch_on_cpu": {
            "images_per_cpu_s": cpu_rate, "images_per_wall_s": cpu_wall, "torch_threads": threads,
            "note": "the batched augmentation run on the CPU device: not representative of a GPU"},
        "sample_parameters_host": {"images_per_cpu_s": params_rate,
                                   "note": "drawing the per-sample choices on the host, part of augment_batch on any device"},
        "target": {"ratio": 2.0, "accelerator_batched_images_per_cpu_s": 600.0},
    }
    out["target"]["met"] = out["ratio"] >= 2.0 and decode_rate >= 600.0
    print(f"pipeline detail: per-image path {per_image_wall:.0f} images/s wall; decode-only {decode_wall:.0f} images/s "
          f"wall; augment_batch on CPU ({threads} threads, not representative of a GPU) {cpu_rate:.0f} images/CPU-s, "
          f"{cpu_wall:.0f} images/s wall; host-side parameter draws {params_rate:.0f} images/CPU-s")
    if torch.cuda.is_available():
        cuda = [(p.pin_memory(), s) for p, s in batches]

        def on_gpu():
            for p, s in cuda:
                augment_batch(p.to("cuda", non_blocking=True), "default", s, device="cuda")
            torch.cuda.synchronize()

        on_gpu()  # warm: kernels, noise bank
        wall = time.perf_counter()
        gpu_cpu_rate, _ = _cpu_rate(images, on_gpu)
        gpu_wall = images / (time.perf_counter() - wall)
        out["augment_batch_on_cuda"] = {"images_per_s": gpu_wall, "host_images_per_cpu_s": gpu_cpu_rate,
                                        "gpu": torch.cuda.get_device_name(0)}
        print(f"pipeline detail: augment_batch on {torch.cuda.get_device_name(0)}: {gpu_wall:.0f} images/s, "
              f"{gpu_cpu_rate:.0f} images per host CPU-s")
    else:
        print("pipeline detail: no CUDA here; augment_batch on a GPU not measured")
    print(f"pipeline: per-image CPU path {per_image_rate:.0f} images/CPU-s, accelerator-batched path "
          f"{decode_rate:.0f} images/CPU-s (ratio {out['ratio']:.1f})")
    return out


# ---------------------------------------------------------------------------------------------------- training
def vit_forward_flops(vision_config, projection_dim: int) -> float:
    """Forward FLOPs of one image through a CLIP ViT plus projection (formula in the module docstring)."""
    p, d, m, layers = vision_config.patch_size, vision_config.hidden_size, vision_config.intermediate_size, vision_config.num_hidden_layers
    n = (vision_config.image_size // p) ** 2 + 1
    patch = 2 * (n - 1) * d * 3 * p * p
    per_layer = 2 * n * 4 * d * d + 2 * n * 2 * d * m + 4 * n * n * d
    return float(patch + layers * per_layer + 2 * d * projection_dim)


def synthetic_batch(batch: int, size: int, ks: list[int], device) -> dict:
    g = torch.Generator().manual_seed(0)
    images = lambda: torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8, generator=g)  # noqa: E731
    labels = torch.stack([torch.randint(0, k, (batch,), generator=g) for k in ks], dim=1)
    return {k: v.to(device) for k, v in
            {"pixel_values": images(), "augmented_pixel_values": images(), "pseudo_labels": labels}.items()}


def train_throughput(preset: str, batch: int, steps: int, warmup: int, device: str, bf16: bool, compile_model: bool) -> dict:
    """Images/s of full training steps (both views forward + backward + pretraining's optimizer step) on a fixed
    synthetic batch."""
    from moleclip import MoleCLIPConfig, MoleCLIPModel
    from moleclip.processing.image_processing_moleclip import MoleCLIPImageProcessor
    from moleclip.training.pretraining.config import PretrainConfig
    from moleclip.training.pretraining.run import build_pretrain_optimizer

    ks = [300, 3000]
    model = MoleCLIPModel(MoleCLIPConfig.from_preset(preset, pseudo_label_classes=ks)).to(device).train()
    optimizer = build_pretrain_optimizer(model, PretrainConfig(input="-", output_dir="-"))
    forward = torch.compile(model) if compile_model else model
    size = model.config.vision_config.image_size
    data = synthetic_batch(batch, size, ks, device)
    cuda = device.startswith("cuda")
    processor = MoleCLIPImageProcessor(size=size)

    def normalize_pixels(pixels):
        return processor.normalize_pixels(pixels, input_data_format="channels_first")

    def step():
        with torch.autocast(device_type="cuda" if cuda else "cpu", dtype=torch.bfloat16, enabled=bf16):
            out = forward(pixel_values=normalize_pixels(data["pixel_values"]),
                          augmented_pixel_values=normalize_pixels(data["augmented_pixel_values"]),
                          pseudo_labels=data["pseudo_labels"])
        out.loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(warmup):
        step()
    if cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    images_per_s = 2 * batch * steps / seconds
    flops = 3 * vit_forward_flops(model.config.vision_config, model.config.projection_dim)
    result = {"preset": preset, "batch_molecules": batch, "images_per_step": 2 * batch, "steps": steps,
              "step_seconds": seconds / steps, "images_per_s": images_per_s, "molecules_per_s": images_per_s / 2,
              "train_flops_per_image": flops, "achieved_flops_per_s": flops * images_per_s, "bf16": bf16,
              "compiled": compile_model, "device": device}
    if cuda:
        result["peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
    return result


def bench_train_cpu(batch: int, steps: int) -> dict:
    out = {}
    default_threads = torch.get_num_threads()
    for threads in sorted({1, available_cores()}):
        torch.set_num_threads(threads)
        torch.manual_seed(0)
        result = train_throughput("tiny", batch, steps, warmup=2, device="cpu", bf16=False, compile_model=False)
        result["threads"] = threads
        out[f"threads_{threads}"] = result
        print(f"training, tiny preset on CPU ({threads} thread(s)), batch {batch} molecules: "
              f"{result['images_per_s']:.0f} images/s ({result['step_seconds'] * 1e3:.0f} ms a step)")
    torch.set_num_threads(default_threads)
    return out


def bench_gpu(steps: int, workers: int, store_dir: Path, compile_model: bool) -> dict:
    name = torch.cuda.get_device_name(0)
    peak = next((value for key, value in BF16_PEAK if key in name), None)
    torch.backends.cuda.matmul.allow_tf32 = True
    result = train_throughput("base", 256, steps, warmup=5, device="cuda", bf16=True, compile_model=compile_model)
    result.update(gpu=name, bf16_peak_flops_per_s=peak,
                  fraction_of_peak=result["achieved_flops_per_s"] / peak if peak else None)
    fraction = f"{100 * result['fraction_of_peak']:.1f}% of the {peak / 1e12:.0f} TFLOP/s bf16 peak" if peak else "peak unknown"
    print(f"GPU training ({name}), ViT-B/16 shape, batch 256 molecules (512 images), bf16: {result['images_per_s']:.0f} "
          f"images/s, {result['achieved_flops_per_s'] / 1e12:.0f} TFLOP/s = {fraction}")

    # Can the workers feed it? Images/s of the loader alone against images/s of the training step.
    n = 4 * 256 * workers  # four batches a worker, so worker start-up is a small part of the time
    smiles = drawable(read_smiles_file("chembl31_150k.smi.gz", n))
    result["data_pipeline"] = data_pipeline(smiles, workers, store_dir, result["images_per_s"], batch_size=256)
    return result


def data_pipeline(smiles: list[str], workers: int, store_dir: Path, need: float, batch_size: int) -> dict:
    """Images/s of the DataLoader alone, drawing and reading a pre-rendered store, with the workers augmenting each
    picture (`--augment-on workers`) and with the workers only drawing or decoding (`--augment-on device`, pretraining's
    default on a GPU, where the batch is augmented on the device), against the `need` of the training step."""
    from moleclip.processing.pretraining_data import PrerenderedImages, TwoViewDataset, prerender

    labels = np.zeros((len(smiles), 1), dtype=np.int64)
    prerender(smiles, store_dir, n_variants=2, n_jobs=max(1, workers), overwrite=True, progress=False)
    out = {"workers": workers, "molecules": len(smiles), "training_images_per_s": need}
    for augment_on in ("workers", "device"):
        drawing = loader_throughput(TwoViewDataset(smiles, labels, augment_on=augment_on), workers,
                                    batch_size=batch_size, passes=1)[0]
        stored = loader_throughput(TwoViewDataset(smiles, labels, prerendered=PrerenderedImages(store_dir),
                                                  augment_on=augment_on), workers, batch_size=batch_size, passes=1)[0]
        # the first keys keep the names of the figures recorded before the device path was measured
        suffix = "" if augment_on == "workers" else "_augment_on_device"
        out.update({f"drawing_images_per_s{suffix}": drawing, f"prerendered_images_per_s{suffix}": stored,
                    f"drawing_keeps_up{suffix}": drawing >= need, f"prerendered_keeps_up{suffix}": stored >= need})
        print(f"data pipeline, {workers} workers, augmentation on the {augment_on}: drawing {drawing:.0f} images/s, "
              f"pre-rendered {stored:.0f} images/s, training needs {need:.0f} images/s -> drawing "
              f"{'keeps up' if drawing >= need else 'starves the GPU'}, pre-rendered "
              f"{'keeps up' if stored >= need else 'starves the GPU'}")
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sections", nargs="+", default=["pseudo_labels", "data", "pipeline", "train_cpu", "gpu"],
                        choices=["pseudo_labels", "data", "pipeline", "train_cpu", "gpu"])
    parser.add_argument("--quick", action="store_true", help="pipeline section: 48 molecules (6 epochs) instead of 256 (2)")
    parser.add_argument("--pipeline-batch", type=int, default=64, help="molecules a batch (two views each) for "
                        "the batched augmentation")
    parser.add_argument("--pseudo-label-sizes", type=int, nargs="*", default=[],
                        help="molecules to label here (150000: ChEMBL subset; 1580000: the ZINC/MOSES set); by default "
                             "only the figures of benchmarks/pseudo_labels.py are collected")
    parser.add_argument("--data-molecules", type=int, default=512, help="molecules through the data pipeline")
    parser.add_argument("--workers", type=int, nargs="+", default=None, help="worker counts (default: 1 and all cores)")
    parser.add_argument("--train-batch", type=int, default=16, help="molecules a step for the CPU training benchmark")
    parser.add_argument("--train-steps", type=int, default=10)
    parser.add_argument("--gpu-steps", type=int, default=20)
    parser.add_argument("--gpu-workers", type=int, default=16)
    parser.add_argument("--compile", action="store_true", help="torch.compile the model for the GPU benchmark")
    parser.add_argument("--scratch", default="/tmp/moleclip_bench_store", help="folder for the pre-rendered stores")
    parser.add_argument("--output", default=str(RESULTS))
    parser.add_argument("--pipeline-output", default=str(PIPELINE_RESULTS),
                        help="where the pipeline section writes (a GPU machine's run must not replace the CPU figures)")
    args = parser.parse_args(argv)

    output = Path(args.output)
    results = json.loads(output.read_text()) if output.is_file() else {}
    workers = args.workers or sorted({1, available_cores()})
    # Sections are merged into the file from runs on different days and machines: each keeps its own conditions.
    machine = describe_machine()

    def measured(section: dict) -> dict:
        return {"machine": machine, **section}

    if "pseudo_labels" in args.sections:
        results["pseudo_labels"] = measured(bench_pseudo_labels(args.pseudo_label_sizes))
    if "data" in args.sections:
        results["data"] = measured(bench_data(args.data_molecules, workers, Path(args.scratch) / "cpu"))
    if "pipeline" in args.sections:
        # Several epochs over few molecules in --quick: the prerender dominates, the timed loops stay long enough.
        n, epochs = (48, 6) if args.quick else (256, 2)
        figures = measured(bench_pipeline(n, epochs, args.pipeline_batch, Path(args.scratch) / "pipeline"))
        pipeline_output = Path(args.pipeline_output)
        pipeline_output.parent.mkdir(parents=True, exist_ok=True)
        pipeline_output.write_text(json.dumps(figures, indent=2))
        print(f"wrote {pipeline_output}")
        if set(args.sections) == {"pipeline"}:
            return 0  # its own file: pretrain.json is left as it is
    if "train_cpu" in args.sections:
        results["train_cpu"] = measured(bench_train_cpu(args.train_batch, args.train_steps))
    if "gpu" in args.sections:
        if torch.cuda.is_available():
            results["gpu"] = measured(bench_gpu(args.gpu_steps, args.gpu_workers, Path(args.scratch) / "gpu",
                                                args.compile))
        else:
            print("gpu: skipped (torch.cuda.is_available() is False); run this script on an H100/H200 machine with "
                  "--sections gpu to fill it in")
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=2))
    print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

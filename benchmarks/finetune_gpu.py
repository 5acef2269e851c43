"""Full finetuning of the `base` (ViT-B/16-shaped) model on one MoleculeNet set, with its time per epoch.

The backbone is the randomly initialised `base` preset by default, so the benchmark needs no download; any checkpoint
(`--model openai/clip-vit-base-patch16`, a MoleCLIP folder) times the same. Images are drawn and augmented by
DataLoader workers while the GPU trains; plain drawings are made once and kept in memory.

    MOLECLIP_DATA_DIR=/path/to/data python benchmarks/finetune_gpu.py --dataset bbbp --epochs 5 --num-workers 14
    # smoke test on a CPU with the tiny shape:
    python benchmarks/finetune_gpu.py --model tiny --limit 64 --epochs 1 --num-workers 0 --mixed-precision no

Writes benchmarks/results/finetune_gpu.json: per-epoch training and evaluation seconds, images/s, peak GPU memory,
and the run's test score at its best-validation epoch.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import time
from pathlib import Path

import torch

from moleclip_cli.finetune import build_parser as finetune_parser
from moleclip.training.finetuning import finetune

RESULTS = Path(__file__).resolve().parent / "results" / "finetune_gpu.json"


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="base")
    p.add_argument("--dataset", default="bbbp", help="a named MoleculeNet set (scaffold split)")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--head-lr", type=float, default=1e-4)
    p.add_argument("--augmentation", default="default", choices=("none", "default", "intense"))
    p.add_argument("--num-workers", type=int, default=max(0, min(14, (os.cpu_count() or 1) - 2)))
    p.add_argument("--mixed-precision", default="bf16", choices=("no", "fp16", "bf16"))
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--output-dir", default="runs/finetune_gpu")
    p.add_argument("--results", type=Path, default=RESULTS)
    p.add_argument("--cpu", action="store_true")
    args = p.parse_args(argv)

    ft_argv = ["--model", args.model, "--dataset", args.dataset, "--output-dir", args.output_dir, "--split", "scaffold",
               "--seeds", str(args.seed), "--epochs", str(args.epochs), "--batch-size", str(args.batch_size),
               "--head-lr", str(args.head_lr), "--augmentation", args.augmentation, "--num-workers", str(args.num_workers),
               "--mixed-precision", args.mixed_precision, "--no-plots"]
    if args.data_dir:
        ft_argv += ["--data-dir", args.data_dir]
    if args.limit:
        ft_argv += ["--limit", str(args.limit)]
    if args.cpu:
        ft_argv.append("--cpu")
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    out = finetune(finetune_parser().parse_args(ft_argv))
    wall = time.perf_counter() - start

    run = out["final"]["runs"][0]
    with open(run["metrics_csv"], newline="") as fh:
        rows = list(csv.DictReader(fh))
    evals = [r for r in rows if r.get("train_seconds")]
    epochs = [{"epoch": int(float(r["epoch"])), "train_seconds": round(float(r["train_seconds"]), 2),
               "eval_seconds": round(float(r["eval_seconds"]), 2)} for r in evals]
    steady = epochs[1:] or epochs  # the first epoch includes start-up (worker launch, kernel selection)
    report = {
        "model": args.model, "dataset": args.dataset, "n_molecules": out["dataset"]["n_used"],
        "split_sizes": run["split_sizes"], "batch_size": args.batch_size, "augmentation": args.augmentation,
        "mixed_precision": args.mixed_precision, "num_workers": args.num_workers,
        "device": out["device"],
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() and not args.cpu else None,
        "peak_gpu_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if torch.cuda.is_available() else None,
        "epochs": epochs,
        "train_seconds_per_epoch": round(sum(e["train_seconds"] for e in steady) / len(steady), 2),
        "train_images_per_s": round(run["split_sizes"][0] * len(steady) / sum(e["train_seconds"] for e in steady), 1),
        "best_epoch": run["best_epoch"], "valid": run["valid"], "test": run["test"],
        "wall_seconds": round(wall, 1),
        "environment": {"python": platform.python_version(), "torch": torch.__version__, "cpu_count": os.cpu_count()},
    }
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(report, indent=2))
    print(f"{args.model} on {args.dataset} ({report['n_molecules']} molecules, {report['device']}"
          f"{', ' + report['gpu'] if report['gpu'] else ''}): {report['train_seconds_per_epoch']} s per training epoch "
          f"(+ {epochs[-1]['eval_seconds'] if epochs else 0} s evaluation), test {run['test']}")
    print(f"Results written to {args.results}")
    return report


if __name__ == "__main__":
    main()

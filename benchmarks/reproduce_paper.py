"""The paper's finetuning protocol on its eight headline sets, for one checkpoint, printed beside the paper's table.

Protocol (the paper's): BACE, BBBP, FreeSolv, ESOL on the deterministic scaffold split 0.8/0.1/0.1 with seeds 1-3
(mean ± std); DHBDs, NHCs, phosphine yield and selectivity on random 0.8/0.1/0.1 splits with seeds 1-5 (mean ± 95%
confidence half-width). For every set: a grid over head learning rate x augmentation preset, each setting trained
once per seed, the test score of a run taken at its best-validation-loss epoch, the setting chosen on mean
validation loss; optionally the chosen setting retrained for `--final-epochs`.

    # a checkpoint (MoleCLIP folder or Hub name, the paper's .pth, or a CLIP model), full finetuning on a GPU:
    MOLECLIP_DATA_DIR=/path/to/data python benchmarks/reproduce_paper.py --model path/to/moleclip --final-epochs 200
    # frozen encoder (CPU-friendly):
    python benchmarks/reproduce_paper.py --model path/to/moleclip --freeze-encoder --augmentation none default
    # the paper's fixed-representation baseline (Morgan r2 2048 bits + the same MLP head), CPU:
    python benchmarks/reproduce_paper.py --baseline fingerprint

Writes benchmarks/results/reproduce_<mode>.json (baselines_fp_mlp.json for the fingerprint baseline), rewritten after
each dataset so an interrupted run keeps what it finished; each dataset's full output goes to <output-root>/<name>.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
import warnings
from pathlib import Path

import torch

from moleclip.processing.property_data import DATASETS, PAPER_TABLE_SEEDS, resolve_data_dir
from moleclip_cli.finetune import AUGMENTATIONS, HEAD_LRS
from moleclip_cli.finetune import build_parser as finetune_parser
from moleclip.training.finetuning import finetune
from moleclip.training.evaluation.search import format_number, paper_reference

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="checkpoint to evaluate (not needed for --baseline fingerprint)")
    p.add_argument("--baseline", choices=("fingerprint",), default=None)
    p.add_argument("--freeze-encoder", action="store_true")
    p.add_argument("--datasets", nargs="+", default=list(PAPER_TABLE_SEEDS), choices=list(PAPER_TABLE_SEEDS))
    p.add_argument("--epochs", type=int, default=60, help="epochs per search run (the paper: 60)")
    p.add_argument("--final-epochs", type=int, default=None, help="retrain the chosen setting (the paper: 180-300)")
    p.add_argument("--head-lr", nargs="+", type=float, default=list(HEAD_LRS))
    p.add_argument("--augmentation", nargs="+", choices=AUGMENTATIONS, default=list(AUGMENTATIONS))
    p.add_argument("--select-on", choices=("loss", "metric"), default="loss")
    p.add_argument("--seeds", nargs="+", type=int, default=None,
                   help="seeds for every set (default: the paper's, 1-3 for scaffold sets and 1-5 for random ones)")
    p.add_argument("--data-dir", default=None, help="defaults to $MOLECLIP_DATA_DIR")
    p.add_argument("--output-root", default="runs/reproduce_paper", help="per-dataset finetuning outputs")
    p.add_argument("--results", type=Path, default=None, help="summary JSON (default under benchmarks/results/)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (1 is fastest on a busy machine)")
    p.add_argument("--extra", nargs=argparse.REMAINDER, default=[],
                   help="further finetune.py arguments, passed as they are (e.g. --extra --num-workers 8)")
    return p


def _mode(args) -> str:
    return "fp_mlp" if args.baseline == "fingerprint" else ("frozen" if args.freeze_encoder else "full")


def _cell(summary: dict, split: str, metric: str) -> str:
    digits = 4 if abs(summary["mean"]) < 0.1 else 3
    spread = summary["std"] if split == "scaffold" else summary["ci95"]
    text = format_number(summary["mean"], digits)
    return text + (f" ± {format_number(spread, digits)}" if math.isfinite(spread) else "")


def _entries_of_this_run(results: Path, mode: str, model: str | None) -> dict:
    """The dataset entries already in `results` for this mode and checkpoint (none from another model: the table
    would print that model's scores as this one's)."""
    if not results.is_file():
        return {}
    current = json.loads(results.read_text())
    if current.get("mode") != mode or current.get("model") != model:
        return {}
    return current.get("datasets", {})


def table(report: dict, data_dir) -> str:
    """The paper's Fig. 2/3 numbers beside ours, one line per set."""
    ours = "FP-MLP (ours)" if report["mode"] == "fp_mlp" else f"MoleCLIP {report['mode']} (ours)"
    header = f"{'dataset':<24}{'split':<10}{'metric':<9}{ours:<24}{'paper MoleCLIP':<17}{'paper FP-MLP':<15}"
    lines = [header, "-" * len(header)]
    for name in PAPER_TABLE_SEEDS:
        entry = report["datasets"].get(name)
        if entry is None:
            continue
        paper = paper_reference(name, data_dir) or {}
        if paper.get("split") and paper["split"] != entry["split"]:
            paper = {}  # the paper's numbers are for its own split, not comparable with another
        lines.append(f"{name:<24}{entry['split']:<10}{entry['metric']:<9}"
                     f"{_cell(entry['test'], entry['split'], entry['metric']):<24}"
                     f"{paper.get('moleclip', '-'):<17}{paper.get('fingerprint_baseline', '-'):<15}")
    lines.append("Scaffold sets: mean ± std over seeds (one split; seeds vary the model); random sets: mean ± 95% CI over "
                 "seeds (split and model). Each entry's seeds are in the results file.")
    lines.append("Phosphine yields are fractions (0..1) here and in paper_results.csv; the paper prints percent.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    if args.baseline is None and args.model is None:
        raise SystemExit("--model is required unless --baseline fingerprint is given")
    if args.threads:
        torch.set_num_threads(args.threads)
    data_dir = resolve_data_dir(args.data_dir)
    mode = _mode(args)
    results = args.results or RESULTS_DIR / ("baselines_fp_mlp.json" if mode == "fp_mlp" else f"reproduce_{mode}.json")
    previous = _entries_of_this_run(results, mode, args.model)
    if results.is_file() and not previous:
        print(f"{results} holds another checkpoint's or mode's scores; this run replaces them", flush=True)
    report = {
        "description": ("the paper's fixed-representation baseline: Morgan r2 2048 bits + the MoleCLIP MLP head"
                        if mode == "fp_mlp" else f"MoleCLIP finetuning ({mode}) of {args.model}")
        + "; each dataset entry records its grid, epochs and selection rule",
        "mode": mode,
        "model": args.model,
        "environment": {"python": platform.python_version(), "torch": torch.__version__, "cpu_count": os.cpu_count(),
                        "threads": torch.get_num_threads(),
                        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None},
        "datasets": previous,
    }
    done: dict[str, dict] = {}  # this invocation's entries: they replace older ones, never the other way round
    results.parent.mkdir(parents=True, exist_ok=True)
    seeds = {name: tuple(args.seeds) if args.seeds else PAPER_TABLE_SEEDS[name] for name in args.datasets}
    for name in args.datasets:
        spec = DATASETS[name]
        argv_ft = ["--dataset", name, "--data-dir", str(data_dir), "--output-dir", str(Path(args.output_root) / mode / name),
                   "--split", spec.default_split, "--seeds", *map(str, seeds[name]), "--epochs", str(args.epochs),
                   "--head-lr", *map(str, args.head_lr), "--select-on", args.select_on, "--no-progress"]
        if mode == "fp_mlp":
            argv_ft += ["--baseline", "fingerprint", "--augmentation", "none"]
        else:
            argv_ft += ["--model", args.model, "--augmentation", *args.augmentation]
            if args.freeze_encoder:
                argv_ft.append("--freeze-encoder")
        if args.final_epochs:
            argv_ft += ["--final-epochs", str(args.final_epochs)]
        argv_ft += list(args.extra)
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            out = finetune(finetune_parser().parse_args(argv_ft))
        seconds = time.perf_counter() - start
        metric = spec.metric
        entry = {
            # as the run did them: --extra may name another split or other seeds (the last of a repeated option wins)
            "split": out["protocol"].get("split", spec.default_split), "metric": metric,
            "seeds": list(out["protocol"].get("seeds", seeds[name])),
            "grid": {"head_lr": args.head_lr, "augmentation": ["none"] if mode == "fp_mlp" else args.augmentation},
            "epochs": args.epochs, "final_epochs": args.final_epochs, "select_on": args.select_on,
            "n_molecules": out["dataset"]["n_used"], "chosen": out["chosen_setting"],
            "optimizer": out["protocol"].get("optimizer"), "selection": out["protocol"].get("selection"),
            "test": out["final"]["summary"]["test"][metric], "valid": out["final"]["summary"]["valid"][metric],
            "test_all": {k: v["mean"] for k, v in out["final"]["summary"]["test"].items()},
            "seconds": round(seconds, 1), "output_dir": str(Path(args.output_root) / mode / name),
        }
        # Re-read before writing, so several invocations (one per dataset, in parallel) can fill one file; what was
        # read at the start may be older than what another invocation has written since.
        done[name] = entry
        report["datasets"] = {**_entries_of_this_run(results, mode, args.model), **done}
        results.write_text(json.dumps(report, indent=2, allow_nan=True))
        print(f"{name}: test {metric} {_cell(entry['test'], entry['split'], metric)} "
              f"({seconds:.0f} s)", flush=True)
    print(table(report, data_dir))
    print(f"Results written to {results}")
    return report


if __name__ == "__main__":
    main()
    sys.exit(0)

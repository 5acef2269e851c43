"""Are the intervals honest? Test-part coverage and width of the conformal intervals, calibration of probabilities,
and the applicability domain's split of the test errors, on the paper's four MoleculeNet sets and two catalysis sets.

    python benchmarks/uncertainty.py                      # fingerprint MLP and the tiny preset (frozen), 3 seeds
    python benchmarks/uncertainty.py --modes fingerprint  # the fingerprint MLP only (minutes)

Each (data set, mode) is one `moleclip finetune` job with the package's defaults apart from a shorter grid (head lr
1e-3 and 1e-4, no augmentation); everything reported is read from its results.json ("trust"): fitted on validation,
measured on test. The tiny preset has random weights: its rows check the machinery (conformal coverage holds for any
model on exchangeable data), not MoleCLIP's quality. Prints a table and writes benchmarks/results/uncertainty.json.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path

from machine_info import describe_machine

from moleclip.tasks import is_regression

HERE = Path(__file__).resolve().parent
DATASETS = ("esol", "freesolv", "bace", "bbbp", "nhcs", "phosphines_yield")
MODES = {
    "fingerprint": ["--baseline", "fingerprint"],
    "tiny_frozen": ["--model", "tiny", "--freeze-encoder", "--init-factor", "5"],
}


def run_one(dataset: str, mode: str, seeds: list[int], epochs: int, data_dir: str | None, folder: Path) -> dict:
    from moleclip_cli.main import main as cli

    argv = ["finetune", "--dataset", dataset, "--output-dir", str(folder), "--seeds", *map(str, seeds),
            "--epochs", str(epochs), "--head-lr", "1e-3", "1e-4", "--augmentation", "none", "--no-progress",
            "--no-plots", *MODES[mode]]
    if data_dir:
        argv += ["--data-dir", data_dir]
    started = time.perf_counter()
    if cli(argv) != 0:
        raise RuntimeError(f"finetune failed for {dataset} / {mode}")
    results = json.loads((folder / "results.json").read_text())
    trust = results["trust"]
    unc, domain = trust["uncertainty"], trust["applicability"]
    row = {"dataset": dataset, "mode": mode, "task": unc["task"], "split": results["protocol"]["split"],
           "scope": trust["scope"], "seconds": round(time.perf_counter() - started, 1),
           "out_of_domain": domain.get("fraction_out_of_domain")}
    mean = unc.get("mean", {})
    if is_regression(unc["task"]):
        row.update(coverage=mean.get("coverage"), mean_width=mean.get("mean_width"), n=mean.get("n"),
                   spearman=mean.get("spearman_spread_error"), methods=sorted(set(unc.get("methods", {}).values())))
        row.update(in_domain_mae=domain["in_domain"].get("mae"), out_of_domain_mae=domain["out_of_domain"].get("mae"))
    else:
        row.update({k: mean.get(k) for k in ("brier_raw", "brier", "ece_raw", "ece", "n")},
                   methods=sorted(set(unc.get("methods", {}).values())))
        row.update(in_domain_auc=domain["in_domain"].get("roc_auc"), out_of_domain_auc=domain["out_of_domain"].get("roc_auc"))
    return row


def _fmt(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}g}" if isinstance(value, float) else str(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS))
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--output", type=Path, default=HERE / "results" / "uncertainty.json",
                        help="where to write (rows of other data sets and modes already there are kept)")
    args = parser.parse_args()
    results = {"benchmark": "uncertainty", "machine": describe_machine(), "seeds": args.seeds, "epochs": args.epochs,
               "rows": []}
    out = args.output
    if out.is_file():  # keep the rows of other data sets and modes, measured by earlier runs (with their machine)
        planned = {(d, m) for d in args.datasets for m in args.modes}
        earlier = json.loads(out.read_text())
        results["earlier_rows"] = [dict(r, machine=r.get("machine", earlier.get("machine"))) for r in earlier.get("rows", []) + [
            r for r in earlier.get("earlier_rows", [])] if (r["dataset"], r["mode"]) not in planned]
    with tempfile.TemporaryDirectory() as tmp:
        for mode in args.modes:
            for dataset in args.datasets:
                row = run_one(dataset, mode, args.seeds, args.epochs, args.data_dir, Path(tmp) / f"{mode}_{dataset}")
                results["rows"].append(row)
                out.write_text(json.dumps(results, indent=2, default=str) + "\n")  # partial results survive a stop
    print("\n| data set | mode | split | task | calibrated on | coverage (target 0.9) or Brier raw -> calibrated | "
          "mean width or ECE raw -> calibrated | spread-error Spearman | test out of domain | error in / out of domain |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in results.get("earlier_rows", []) + results["rows"]:
        if is_regression(r["task"]):
            cells = [_fmt(r["coverage"]), _fmt(r["mean_width"]), _fmt(r["spearman"]),
                     f"{_fmt(r['in_domain_mae'])} / {_fmt(r['out_of_domain_mae'])} (MAE)"]
        else:
            cells = [f"{_fmt(r['brier_raw'])} -> {_fmt(r['brier'])}", f"{_fmt(r['ece_raw'])} -> {_fmt(r['ece'])}", "-",
                     f"{_fmt(r['in_domain_auc'])} / {_fmt(r['out_of_domain_auc'])} (ROC-AUC)"]
        frac = r["out_of_domain"]
        print(f"| {r['dataset']} | {r['mode']} | {r['split']} | {r['task']} | {r['scope']} | {cells[0]} | {cells[1]} | "
              f"{cells[2]} | {_fmt(100 * frac if frac is not None else None)} % | {cells[3]} |")
    print(f"written: {out}")


if __name__ == "__main__":
    main()

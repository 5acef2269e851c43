"""What a person reads after a finetuning job: results.json / results.md, the protocol in words, plots, model-index.

Every file is written to a temporary name and renamed when complete, so a crash never leaves a half-written result
that reads cleanly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import yaml

from moleclip.processing.property_data import PropertyDataset
from moleclip.tasks import is_classification, is_regression
from moleclip.training.evaluation import plots
from moleclip.training.loop import OPTIMIZER_TEXT
from moleclip.training.outputs import json_text, write_atomically, write_delimited, write_text_atomically
from moleclip.training.evaluation.scoring import TASK_METRICS
from moleclip.training.evaluation.search import format_number, format_summary, public_view, setting_name

from .parts import JobRows, prediction_frame
from .run import Member
from .trust import trust_markdown

__all__ = ["write_results", "results_markdown", "per_target_markdown", "protocol_text", "model_card", "model_index",
           "write_plots"]

# What `inputs.ENCODER_ADAM` and `inputs.HEAD_ADAM` set, in words.
BETAS_TEXT = "betas (0.9, 0.98), eps 1e-6 for the encoder; PyTorch's defaults (0.9, 0.999), eps 1e-8 for the head"


def write_results(output_dir: Path, results: dict, markdown: str) -> None:
    write_text_atomically(output_dir / "results.json", json_text(public_view(results)))
    write_text_atomically(output_dir / "results.md", markdown + "\n")


def loss_name(task: str, regression_loss: str | None) -> str:
    """The training loss in words: L1 or squared error for regression, binary cross-entropy for classification."""
    if not is_regression(task):
        return "binary cross-entropy"
    return {"l1": "L1", "mse": "squared error"}.get(regression_loss or "l1", regression_loss)


def selection_text(task: str, n_targets: int, select_key: str, regression_loss: str | None) -> str:
    """How epochs and settings are chosen, exactly, including how it differs from the reported metric."""
    if select_key != "loss":
        return f"validation {select_key}, the reported metric itself"
    if not is_regression(task):
        return f"validation loss ({loss_name(task, None)}, missing labels masked, averaged over the labelled entries)"
    text = (f"validation loss: the {loss_name(task, regression_loss)} on targets standardised with the training "
            "part's mean and std (the training loss)")
    if n_targets == 1:
        return text + "; for one target this ranks epochs exactly as the raw error does"
    return (text + f"; with {n_targets} targets each target's error is divided by its training std before "
            "averaging, while the reported MAE/RMSE average the raw errors, so a target with a large spread weighs "
            "less in the choice than in the reported metric (use --select-on metric to choose on the reported metric)")


def protocol_text(args, data: PropertyDataset, split_kind: str, mode: str, grid: dict, options) -> str:
    def show(v):
        return "default" if v is None else format(v, "g") if isinstance(v, float) else str(v)

    axes = ", ".join(f"{k} {{{', '.join(show(v) for v in vals)}}}" for k, vals in grid.items() if len(vals) > 1)
    fixed = ", ".join(f"{k} {show(vals[0])}" for k, vals in grid.items() if len(vals) == 1)
    fractions = "/".join(format(f, "g") for f in args.fractions)
    training = {"full": "encoder and head finetuned", "frozen": "frozen encoder, head trained on its embeddings",
                "fingerprint": "Morgan fingerprints (radius 2, 2048 bits) into the MLP head"}[mode]
    split = f"{split_kind} split {fractions}"
    if getattr(args, "split_column", None):
        split = (f"fixed split from column {args.split_column!r} (validation carved from its training rows by a "
                 f"{split_kind} split per seed when it marks none)")
    text = (f"{split}, seeds {', '.join(map(str, args.seeds))}; {training}; "
            f"{OPTIMIZER_TEXT[options.optimizer]}, {BETAS_TEXT}, batch {args.batch_size}, "
            f"{args.epochs} epochs per search run, {fixed}")
    if args.final_epochs:
        text += f", {args.final_epochs} epochs for the final runs"
    text += f"; grid over {axes}" if axes else ""
    if is_regression(data.task):
        text += "; regression targets standardised with the training part's mean and std, predictions in raw units"
    text += (f"; the test score of a run is taken at its best-validation epoch and settings are chosen on the mean "
             f"over seeds of the same validation value: "
             f"{selection_text(data.task, data.n_targets, options.select_key, options.regression_loss)}")
    if mode == "frozen":
        text += f"; {args.frozen_views} augmented embedding view(s) per training molecule and augmentation preset"
    if getattr(args, "r_groups", False):
        text += "; molecules drawn with R-group labels"
    return text


def model_card(args, data: PropertyDataset, n_molecules: int, results: dict, mode: str, protocol: str,
               select_on: str, backbone: str, model_dir: Path) -> tuple[str, dict]:
    """The card kind and what fills it, for the model folder of any mode: a MoleCLIP checkpoint ("property") or a
    fingerprint MLP / random forest / Tanimoto SVM ("baseline"), each with the job's protocol, table and model-index scores."""
    title = f"moleclip-{data.name}" if mode in ("full", "frozen") else f"moleclip-{data.name}-{mode}-baseline"
    seeds = results["protocol"]["seeds"]
    card = {
        "title": title, "dataset": f"{data.name} ({n_molecules} molecules)", "protocol": protocol,
        "results_table": results["final_table"] + "\n\nSearch (mean ± std over seeds; chosen on validation):\n\n"
        + results["search_table"],
        "select_on": select_on, "backbone": backbone,
        "model_index": model_index(getattr(args, "push_to_hub", None) or title, data, results["protocol"]["split"],
                                   results["final"]["summary"], list(TASK_METRICS[data.task]), len(seeds)),
        "targets": ", ".join(data.target_names), "task": data.task,
    }
    if mode in ("full", "frozen"):
        if args.push_to_hub:
            card["repo_id"] = args.push_to_hub
        return "property", card
    if mode == "fingerprint":
        card["model_summary"] = (f"Morgan fingerprints (radius 2, 2048 bits) into the paper's MLP head "
                                 f"({args.head_num_layers or 3} x {args.head_hidden_size or 512} hidden units)")
        card["selection"] = (f"each run's score is taken at its epoch with the best validation {select_on}, and "
                             "settings were chosen on validation only.")
    elif mode == "svr":
        card["model_summary"] = ("a support vector machine per target (SVR, or SVC with sigmoid calibration) on a "
                                 "Tanimoto kernel of Morgan fingerprints (radius 2, 2048 bits)")
        card["selection"] = ("C was chosen per target and seed on validation only, from "
                             + ", ".join(f"{c:g}" for c in args.svr_c) + "; test scores never entered any choice.")
    else:
        card["model_summary"] = (f"a random forest of {args.rf_estimators} trees per seed on Morgan fingerprints "
                                 "(radius 2, 2048 bits)")
        card["selection"] = "the forests' hyperparameters were fixed in advance: nothing was chosen on test scores."
        card["predict_options"] = " --trust-pickle"
        card["predict_note"] = (" The forests are saved with joblib, and loading them runs pickle: hence "
                                "`--trust-pickle`, for a folder you made or trust.")
    card.setdefault("predict_options", "")
    card.setdefault("predict_note", "")
    card["model_path"] = str(model_dir)
    return "baseline", card


def model_index(title: str, data: PropertyDataset, split_kind: str, summary: dict, metrics: Sequence[str],
                n_seeds: int) -> str:
    """The model card's `model-index` block (YAML) with the test scores."""
    def seeds(m: str) -> str:
        # a seed without a finite score (one class in its test part) is not in the mean
        n = summary["test"][m].get("n", n_seeds)
        return f"{n} seeds" if n == n_seeds else f"{n} of {n_seeds} seeds"

    scores = [{"type": m, "value": round(float(summary["test"][m]["mean"]), 6),
               "name": f"test {m.upper() if m != 'roc_auc' else 'ROC-AUC'} (mean of {seeds(m)})"}
              for m in metrics if m in summary["test"] and math.isfinite(summary["test"][m]["mean"])]
    block = {"model-index": [{"name": title, "results": [{
        "task": {"type": "tabular-regression" if is_regression(data.task) else "tabular-classification",
                 "name": "Molecular property prediction"},
        "dataset": {"name": data.name, "type": data.name, "split": f"test ({split_kind} split)"},
        "metrics": scores,
    }]}]}
    return yaml.safe_dump(block, sort_keys=False).rstrip()


def write_plots(output_dir: Path, job_rows: JobRows, kept: Member, metric: str, varied: Sequence[str],
                regression_loss: str | None = None) -> dict:
    """Test-set parity / ROC plot, learning curves and the test predictions of the saved run (`job_rows`: the job's
    rows, whose input columns the table keeps as the run's own test_predictions.csv does)."""
    folder = output_dir / "plots"
    data = job_rows.data
    rows = kept.rows["test"]
    pred = kept.predictions["test"]
    table = prediction_frame(job_rows, rows, pred, kept.seed)
    if is_classification(data.task):
        pred = 1.0 / (1.0 + np.exp(-pred))
    run = kept.run
    title = f"{data.name}, {setting_name(kept.setting, varied) or 'fixed setting'}, seed {run['seed']}"
    written = {}
    name = "parity_test.png" if is_regression(data.task) else "roc_test.png"
    written["test"] = str(plots.plot_predictions(data.task, data.targets[rows], pred, folder / name,
                                                 data.target_names, title=f"{title}: test part", units=data.units))
    curves = Path(run["metrics_csv"])
    if curves.is_file():
        loss = loss_name(data.task, regression_loss) + (", standardised targets" if is_regression(data.task) else "")
        units = {data.units.get(target, "") for target in data.target_names}
        written["learning_curves"] = str(plots.learning_curves(
            curves, folder / "learning_curves.png", metric=metric, best_epoch=run["best_epoch"], title=title,
            loss=loss, unit=units.pop() if len(units) == 1 else "", n_targets=data.n_targets))
    write_atomically(folder / "test_predictions.csv", lambda tmp: write_delimited(table, tmp))
    written["test_predictions"] = str(folder / "test_predictions.csv")
    return written


def _summary_table(summary: dict, title: str) -> list[str]:
    names = [k for k in summary if k != "n"]
    return ["", title, "", "| " + " | ".join(names) + " |", "|" + "---|" * len(names),
            "| " + " | ".join(format_summary(summary[k]) for k in names) + " |"]


def _served_line(scores: dict | None) -> list[str]:
    """The ensemble's scores on a part (see `trust.ensemble_scores`), as one line under that part's per-seed table."""
    shown = {k: v for k, v in (scores or {}).items() if k not in ("n", "loss")}
    if not shown:
        return []
    return ["", "The ensemble of the seeds' models (what `moleclip predict` serves): "
            + ", ".join(f"{k} {format_number(v)}" for k, v in shown.items()) + "."]


def parts_markdown(results: dict) -> list[str]:
    """The external test set's scores and the subgroup's test scores (mean ± std [95% CI] over seeds, then the
    served ensemble's)."""
    final, lines = results["final"], []
    served = final.get("ensemble") or {}
    if "external_summary" in final:
        d = results["dataset"]
        lines += _summary_table(final["external_summary"], f"### External test set (`{d.get('test_file')}`, "
                                f"{d.get('n_external_used')} molecules; never used for any choice)")
        lines += _served_line(served.get("external"))
        if d.get("external_in_training"):
            lines.append(f"\n{d['external_in_training']} external molecules are also in a training part.")
    if "group_summary" in final:
        counts = ", ".join(map(str, final["group_summary"].get("n", [])))
        lines += _summary_table(final["group_summary"], f"### Test subgroup: rows where "
                                f"`{results['protocol'].get('group_column')}` is true ({counts} test molecules per seed)")
        lines += _served_line(served.get("test_group"))
    return lines


def per_target_markdown(runs: Sequence[dict], metrics: Sequence[str]) -> str:
    """Test scores per target (mean ± std over seeds) and every target a metric left out, per seed and split part."""
    targets = list(next(iter(runs[0]["per_target"]["test"].values())))
    header = "| target | " + " | ".join(f"test {m}" for m in metrics) + " |"
    lines = [header, "|" + "---|" * (len(metrics) + 1)]
    for target in targets:
        cells = []
        for metric in metrics:
            values = np.array([run["per_target"]["test"][metric][target] for run in runs], dtype=float)
            finite = values[np.isfinite(values)]
            if not len(finite):
                cells.append("n/a")
            else:
                # one value has no spread to show (it is unknown, not zero), as in the main table
                spread = f" ± {finite.std(ddof=1):.2g}" if len(finite) > 1 else ""
                cells.append(f"{finite.mean():.4g}{spread}"
                             + (f" ({len(finite)} of {len(values)} seeds)" if len(finite) < len(values) else ""))
        lines.append(f"| {target} | " + " | ".join(cells) + " |")
    left = [f"- seed {run['seed']}, {part}: {metric} leaves out {target} ({reason})"
            for run in runs for part in ("valid", "test") for metric, reasons in run["left_out"][part].items()
            for target, reason in reasons.items()]
    if left:
        lines += ["", "Targets left out of a metric's mean (at the reported epoch):", "", *left]
    return "\n".join(lines)


def results_markdown(results: dict, data: PropertyDataset) -> str:
    p = results["protocol"]
    n = results["dataset"].get("n_used", len(data))  # the main table's molecules (an external test set is apart)
    split = f"{p['split']} split {'/'.join(format(f, 'g') for f in p['fractions'])}"
    if "column" in p.get("split_source", ""):
        split = "split from a column (below)"
    lines = [
        f"# {data.name}: {results['mode']} finetuning",
        "",
        f"{n} molecules, {split}, seeds "
        f"{', '.join(map(str, p['seeds']))}. Backbone: {results['backbone']}.",
        f"Each run's test score is taken at its best-validation epoch ({p['select_key']}); the setting is chosen on "
        f"{results['search']['selected_by']} - test scores never enter the choice.",
    ]
    if results["mode"] == "random_forest":  # no epochs, and nothing is chosen per run
        lines[-1] = (f"A forest is grown once per seed, with {results['search']['selected_by']}: its test score is "
                     "that forest's, and test scores never enter any choice.")
    if results["mode"] == "svr":
        lines[-1] = (f"One SVM per target is fitted once per seed, with {results['search']['selected_by']} (chosen C "
                     "per seed in results.json); test scores never enter any choice.")
    if p.get("selection"):
        lines.append(f"Selection criterion: {p['selection']}.")
    if p.get("split_source"):
        lines.append(f"Split: {p['split_source']}.")
    lines += [
        "",
        f"## Final: {results['chosen_name']}" + (f", {p['final_epochs']} epochs" if p.get("final_epochs") else ""),
        "",
        "Test scores over seeds: mean ± sample std (n - 1 degrees of freedom) [95% confidence interval of the mean, "
        "Student's t].",
        "",
        results["final_table"],
    ]
    served = results["final"].get("ensemble")
    if served and served.get("test") is not None:
        lines += ["", "Two rows, two measurements: the mean over seeds scores each seed's model alone; the ensemble row "
                  "scores the same models combined, as `moleclip predict` combines them (mean prediction; mean "
                  "probability), once on the same test part. The model folder serves the ensemble."]
    elif served:
        lines += ["", f"The ensemble of the {served['n_members']} seeds' models, which `moleclip predict` serves, has "
                  f"no test score here: {served['note']}."]
    runs = results["final"]["runs"]
    if runs and "per_target" in runs[0] and (data.n_targets > 1 or any(
            reasons for run in runs for part in run["left_out"].values() for reasons in part.values())):
        metrics = list(runs[0]["per_target"]["test"])
        lines += ["", "### Per target", "", per_target_markdown(runs, metrics)]
    lines += parts_markdown(results)
    lines += trust_markdown(results)
    lines += [
        "",
        "## Search",
        "",
        results["search_table"],
    ]
    if "saved_model" in results:
        s = results["saved_model"]
        when = f"epoch {s['best_epoch']}" if "best_epoch" in s else s.get("chosen_by", "")
        lines += ["", f"Saved model: `{s['dir']}` ({setting_name(s['setting'], results['search']['varied'])}, seed "
                  f"{s['seed']}, {when}).", f"Wall time: {results.get('wall_seconds', 0):.0f} s."]
    if results.get("predictions"):
        lines.append(f"Per-molecule test predictions of every seed: `{results['predictions']}` (input columns as "
                     "written; each run's own in runs/<phase>/<setting>/seed_<s>/test_predictions.csv).")
    if results["paper"] and data.name == "phosphines_yield":
        lines.append("Phosphine yields are fractions here and in paper_results.csv; the paper prints them in percent.")
    return "\n".join(lines)

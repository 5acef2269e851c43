"""Hyperparameter search and repeats with the paper's rule: settings are compared on validation only.

A *setting* is one point of a grid (head learning rate x augmentation preset x any other axis). Each setting is
trained once per seed; each run reports its validation and test scores at its own best-validation epoch. Settings
are ranked by the mean over seeds of one validation value (the validation loss or metric); test scores are carried
along for the table and never looked at when choosing. (The reference code of the paper tracked test scores during
the search; that leaks the test set into model selection.)

This module knows nothing about models: `run_search` takes a `train_fn(setting, seed) -> run` callable, so the same
logic serves MoleCLIP finetuning, the fingerprint MLP and tests with made-up numbers.
"""

from __future__ import annotations

import csv
import itertools
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from moleclip.processing.property_data import resolve_data_dir
from moleclip.training.evaluation.scoring import mean_std_ci

__all__ = [
    "expand_grid",
    "setting_name",
    "summarize_values",
    "summarize_runs",
    "choose_setting",
    "run_search",
    "format_summary",
    "format_number",
    "search_markdown",
    "final_markdown",
    "paper_reference",
    "public_view",
]


def expand_grid(axes: Mapping[str, Sequence]) -> list[dict]:
    """Every combination of the axes' values, in the order given (the first axis varies slowest).

    Repeated values on an axis are dropped (they would only repeat work). An axis without values is an error.
    """
    names, values = [], []
    for name, options in axes.items():
        options = list(options)
        if not options:
            raise ValueError(f"grid axis {name!r} has no values")
        unique = []
        for option in options:
            if option not in unique:
                unique.append(option)
        names.append(name)
        values.append(unique)
    return [dict(zip(names, combo)) for combo in itertools.product(*values)]


def _short(value) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def setting_name(setting: Mapping, varied: Iterable[str] | None = None) -> str:
    """A readable, file-name-safe label such as ``head_lr=0.0001,augmentation=none``.

    Only the axes in `varied` are named (all of them when None), so a one-value axis does not clutter every label.
    """
    keys = list(setting) if varied is None else [k for k in setting if k in set(varied)]
    if not keys:
        return "default"
    return ",".join(f"{k}={_short(setting[k])}" for k in keys)


def summarize_values(values: Sequence[float], confidence: float = 0.95) -> dict:
    """Mean, sample std and the 95% confidence half-width (Student t) of the finite values, with their count.

    Non-finite values (an ROC-AUC that could not be computed on a one-class validation set) are left out and counted
    in ``n_missing``, so one bad seed does not turn the whole summary into NaN.
    """
    values = [float(v) for v in values]
    finite = [v for v in values if math.isfinite(v)]
    summary = {"mean": math.nan, "std": math.nan, "ci95": math.nan, "n": len(finite),
               "n_missing": len(values) - len(finite), "values": values}
    if finite:
        summary["mean"], summary["std"], summary["ci95"] = mean_std_ci(finite, confidence)
    return summary


def summarize_runs(runs: Sequence[Mapping]) -> dict:
    """``{"valid": {key: summary}, "test": {key: summary}}`` over runs shaped ``{"valid": {...}, "test": {...}}``."""
    out: dict[str, dict] = {}
    for part in ("valid", "test"):
        keys: list[str] = []
        for run in runs:
            keys += [k for k in run.get(part, {}) if k not in keys]
        out[part] = {k: summarize_values([run.get(part, {}).get(k, math.nan) for run in runs]) for k in keys}
    return out


def choose_setting(entries: Sequence[Mapping], key: str, mode: str) -> int:
    """Index of the entry whose mean *validation* `key` is best (`mode` "min" or "max"); ties go to the first.

    Only ``entry["summary"]["valid"]`` is read. Entries whose validation mean is not finite rank last.
    """
    if mode not in ("min", "max"):
        raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
    if not entries:
        raise ValueError("no settings to choose from")
    best, best_value = 0, None
    for i, entry in enumerate(entries):
        valid = entry["summary"]["valid"]
        if key not in valid:
            raise KeyError(f"validation results have {sorted(valid)}, no {key!r} to choose settings on")
        value = valid[key]["mean"]
        if not math.isfinite(value):
            continue
        if best_value is None or (value < best_value if mode == "min" else value > best_value):
            best, best_value = i, value
    return best


def run_search(
    settings: Sequence[Mapping],
    seeds: Sequence[int],
    train_fn: Callable[[dict, int], dict],
    select_key: str,
    select_mode: str,
    on_entry: Callable[[dict, bool], None] | None = None,
    progress: bool = True,
    varied: Iterable[str] | None = None,
) -> dict:
    """Train every setting once per seed and choose the setting with the best mean validation `select_key`.

    Args:
        settings: grid points (dicts), e.g. from :func:`expand_grid`.
        seeds: one run per seed and setting.
        train_fn: ``train_fn(setting, seed)`` returns a run dict with ``"valid"`` and ``"test"`` score dicts taken at
            the run's best-validation epoch (other keys are kept; keys starting with ``_`` are private, e.g. weights).
        select_key: the validation key to rank settings on (``"loss"``, ``"rmse"``, ``"roc_auc"``...).
        select_mode: ``"min"`` or ``"max"``.
        on_entry: called as ``on_entry(entry, is_leader)`` after each setting's seeds are done; ``is_leader`` says
            whether it is now the best on validation (lets callers keep only the leader's weights in memory).
        varied: axes to name settings by (default: those that take more than one value).

    Returns:
        ``{"entries": [...], "chosen": index, "selected_by": text}``; each entry holds ``setting``, ``name``,
        ``runs`` and ``summary`` (see :func:`summarize_runs`).
    """
    settings = [dict(s) for s in settings]
    seeds = [int(s) for s in seeds]
    if not settings:
        raise ValueError("no settings to search")
    if not seeds:
        raise ValueError("at least one seed is needed")
    if varied is None:
        varied = [k for k in settings[0] if len({repr(s.get(k)) for s in settings}) > 1]
    varied = list(varied)
    entries: list[dict] = []
    bar = tqdm(total=len(settings) * len(seeds), desc="search", unit="run", disable=not progress or len(settings) * len(seeds) == 1)
    for setting in settings:
        name = setting_name(setting, varied)
        runs = []
        for seed in seeds:
            bar.set_postfix_str(f"{name} seed {seed}")
            run = dict(train_fn(dict(setting), seed))
            run.setdefault("seed", seed)
            runs.append(run)
            bar.update(1)
        entry = {"setting": setting, "name": name, "runs": runs, "summary": summarize_runs(runs)}
        entries.append(entry)
        is_leader = choose_setting(entries, select_key, select_mode) == len(entries) - 1
        if on_entry is not None:
            on_entry(entry, is_leader)
    bar.close()
    chosen = choose_setting(entries, select_key, select_mode)
    return {
        "entries": entries,
        "chosen": chosen,
        "varied": varied,
        "selected_by": f"{'lowest' if select_mode == 'min' else 'highest'} mean validation {select_key} over seeds "
        f"{', '.join(map(str, seeds))}",
    }


def public_view(obj):
    """A JSON-ready copy: private keys (``_...``) dropped, numpy scalars and arrays turned into Python values."""
    if isinstance(obj, Mapping):
        return {str(k): public_view(v) for k, v in obj.items() if not str(k).startswith("_")}
    if isinstance(obj, (list, tuple)):
        return [public_view(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    return obj


def format_number(value: float, digits: int | None = None) -> str:
    """Fixed decimals suited to the magnitude (0.0138, 0.197, 2.001, 123.4) unless `digits` is given."""
    if value is None or not math.isfinite(value):
        return "n/a"
    if digits is None:
        size = abs(value)
        digits = 1 if size >= 100 else 3 if size >= 1 else 4 if size >= 0.001 or size == 0 else 6
    return f"{value:.{digits}f}"


def format_summary(summary: Mapping, ci: bool = True, digits: int | None = None) -> str:
    """``mean ± std [low, high]`` with the 95% confidence interval of the mean (``mean`` alone for one run), and
    ``(n of m seeds)`` when some runs had no finite value (see :func:`summarize_values`)."""
    mean, std, half = summary["mean"], summary["std"], summary["ci95"]
    text = format_number(mean, digits)
    if math.isfinite(std):
        text += f" ± {format_number(std, digits)}"
    if ci and math.isfinite(half):
        text += f" [{format_number(mean - half, digits)}, {format_number(mean + half, digits)}]"
    if summary.get("n_missing"):
        # the table's heading says "over seeds": a mean over fewer of them must say which share it is
        text += f" ({summary['n']} of {summary['n'] + summary['n_missing']} seeds)"
    return text


def search_markdown(search: Mapping, select_key: str, metric: str) -> str:
    """One row per setting: mean validation selection value, validation and test metric, chosen setting in bold."""
    head = f"valid {select_key}"
    columns = [head] + ([f"valid {metric}"] if metric != select_key else []) + [f"test {metric}"]
    lines = ["| setting | " + " | ".join(columns) + " | runs |", "|---" * (len(columns) + 2) + "|"]
    for i, entry in enumerate(search["entries"]):
        summary = entry["summary"]
        cells = [format_summary(summary["valid"].get(select_key, _missing()), ci=False)]
        if metric != select_key:
            cells.append(format_summary(summary["valid"].get(metric, _missing()), ci=False))
        cells.append(format_summary(summary["test"].get(metric, _missing()), ci=False))
        name = f"**{entry['name']}** (chosen)" if i == search["chosen"] else entry["name"]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {len(entry['runs'])} |")
    return "\n".join(lines)


def _missing() -> dict:
    return {"mean": math.nan, "std": math.nan, "ci95": math.nan}


def final_markdown(summary: Mapping, metrics: Sequence[str], label: str, paper: Mapping | None = None,
                   primary: str | None = None, split: str | None = None, ensemble: Mapping | None = None) -> str:
    """Test metrics of the final runs (mean ± std [95% CI]), and the paper's numbers for the same set when known.

    A paper cell goes under the metric the paper reports it in (``paper["metric"]``; `primary` only when the row does
    not say), which need not be the metric this run selects on: a table file named esol.csv is scored with MAE first,
    while the paper's ESOL number is an RMSE. When this table has no column for that metric, or `split` (this run's
    split kind, when given) is not the paper's, the paper rows are left out: they would not be the same measurement.

    `ensemble` (``{"n_members": M, "test": {metric: value} or None}``): the seeds' models combined as predict serves
    them, one score on the same test part, in a row of its own below the per-seed mean; each row says which it is.
    """
    lines = ["| model | " + " | ".join(f"test {m}" for m in metrics) + " |", "|---" * (len(metrics) + 1) + "|"]
    mean_label = f"{label}: mean over seeds" if ensemble is not None else label
    lines.append(f"| {mean_label} | " + " | ".join(format_summary(summary["test"].get(m, _missing())) for m in metrics)
                 + " |")
    if ensemble is not None and ensemble.get("test") is not None:
        lines.append(f"| {label}: ensemble of the {ensemble['n_members']} seeds' models (what predict serves) | "
                     + " | ".join(format_number(ensemble["test"].get(m, math.nan)) for m in metrics) + " |")
    paper_metric = (paper or {}).get("metric") or primary
    same_split = split is None or not (paper or {}).get("split") or paper["split"] == split
    if paper and paper_metric in metrics and same_split:
        for column, title in (("moleclip", "MoleCLIP (paper)"), ("fingerprint_baseline", "FP-MLP baseline (paper)"),
                              ("imagemol", "ImageMol (paper)"), ("gem", "GEM (paper)")):
            value = paper.get(column)
            if not value:
                continue
            cells = [value if m == paper_metric else "" for m in metrics]
            lines.append(f"| {title} | " + " | ".join(cells) + " |")
        paper_split = paper.get("split")
        if paper_split:
            # the paper's ± is not always a std: on its random (catalysis) splits it is a 95% confidence half-width
            spread = {"scaffold": "std", "random": "95% confidence half-width"}.get(paper_split, "spread")
            lines += ["", f"The paper's rows: its {paper_split} split, mean ± {spread} over its seeds."]
    return "\n".join(lines)


def paper_reference(dataset: str, data_dir: str | Path | None = None) -> dict | None:
    """The paper's row for a named set from ``<data dir>/reference/paper_results.csv`` (None when unavailable)."""
    try:
        root = resolve_data_dir(data_dir)
    except FileNotFoundError:
        return None
    path = root / "reference" / "paper_results.csv"
    if not path.is_file():
        return None
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            if row.get("dataset", "").strip().lower() == str(dataset).strip().lower():
                return {k: (v or "").strip() for k, v in row.items()}
    return None

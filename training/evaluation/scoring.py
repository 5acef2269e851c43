"""Metrics for property prediction: the package's own `evaluate` modules, one call per task, and summary statistics.

The metric scripts live in ``training/evaluate_modules/<name>.py`` and are loaded from that local path, never from the
Hub, so evaluation works offline and cannot change under a fixed package version. All of them take ``[N]`` or
``[N, T]`` inputs with NaN for missing labels and average over targets; the input checks and the per-target averaging
they share sit next to them in ``masked_targets.py``, which evaluate copies into its module cache along with each
script.

Which metrics a task is scored with, which one is its default, and which way each improves are defined once, in
``moleclip.tasks``; the names here (`TASK_METRICS`, `PRIMARY_METRIC`, `higher_is_better`) read them from there.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy import stats

from moleclip.tasks import METRIC_HIGHER_IS_BETTER, TASK_TYPES, get_task
from moleclip.tasks import higher_is_better as _higher_is_better

__all__ = [
    "METRICS",
    "METRICS_DIR",
    "METRICS_HELPER",
    "PRIMARY_METRIC",
    "TASK_METRICS",
    "MetricReport",
    "compute_metrics",
    "higher_is_better",
    "load_metric",
    "mean_std_ci",
]

METRICS_DIR = Path(__file__).resolve().parent.parent / "evaluate_modules"
# imported relatively by every metric script; evaluate copies it only from the script's own folder
METRICS_HELPER = METRICS_DIR / "masked_targets.py"
# Every metric a task type uses; each has its evaluate script here.
METRICS = tuple(METRIC_HIGHER_IS_BETTER)
# Metrics of each task type, the default (for selection) first.
TASK_METRICS = {name: task.metrics for name, task in TASK_TYPES.items()}
# Metric used for selection when a dataset does not name its own (the named sets carry theirs in `.metric`).
PRIMARY_METRIC = {name: task.default_metric for name, task in TASK_TYPES.items()}


def _check_name(name: str) -> str:
    if name not in METRIC_HIGHER_IS_BETTER:
        raise ValueError(f"Unknown metric {name!r}; available: {', '.join(METRICS)}")
    return name


def load_metric(name: str, **kwargs):
    """The package's `evaluate` module for ``name`` (``roc_auc``, ``rmse``, ``mae``, ``r2``), loaded from disk.

    Extra keyword arguments go to :func:`evaluate.load`. The module keeps its inputs in memory unless told otherwise:
    metrics here are computed on gathered predictions, so evaluate's cache files would only add disk traffic.
    """
    # evaluate is not loaded by `import moleclip` (it pulls in datasets); only scoring needs it
    import evaluate

    script = METRICS_DIR / f"{_check_name(name)}.py"
    for path in (script, METRICS_HELPER):
        if not path.is_file():
            raise FileNotFoundError(
                f"The metric file {path} is missing: the package was installed without its evaluate_modules data "
                "files (check [options.package_data] in setup.cfg)."
            )
    kwargs.setdefault("keep_in_memory", True)
    return evaluate.load(str(script), **kwargs)


@functools.lru_cache(maxsize=None)
def _cached_metric(name: str):
    # compute(predictions=..., references=...) starts from a clean state each call, so one instance can be reused
    return load_metric(name)


def higher_is_better(name: str) -> bool:
    """True for ROC-AUC and R^2, False for RMSE and MAE (from ``moleclip.tasks``)."""
    return _higher_is_better(_check_name(name))


class MetricReport(dict):
    """Scores of one set of predictions.

    The mapping itself holds the mean of each metric over targets (``report["roc_auc"]``), so it reads, iterates and
    serialises like the plain ``{metric: mean}`` dict callers have always had. Besides it:

    * ``per_task``: ``{metric: {target name: value}}``, NaN for a target left out;
    * ``left_out``: ``{metric: {target name: reason}}`` for the targets a mean leaves out (e.g. ROC-AUC of a task whose
      labels in this set are all one class, or a target without labels here); empty dicts when none is.

    ``as_dict()`` gives all three in one JSON-ready dict.
    """

    def __init__(self, means: dict[str, float], per_task: dict[str, dict[str, float]],
                 left_out: dict[str, dict[str, str]]):
        super().__init__(means)
        self.per_task = per_task
        self.left_out = left_out

    def as_dict(self) -> dict:
        """``{metric: mean, ..., "per_task": {metric: {target: value}}, "left_out": {metric: {target: reason}}}``."""
        return {**self, "per_task": {m: dict(v) for m, v in self.per_task.items()},
                "left_out": {m: dict(v) for m, v in self.left_out.items()}}

    def __repr__(self) -> str:
        left = {m: list(v) for m, v in self.left_out.items() if v}
        return f"MetricReport({dict(self)!r}, left_out={left!r})"


def compute_metrics(
    task: str,
    y_true,
    y_pred,
    target_names: Sequence[str] | None = None,
) -> MetricReport:
    """Score predictions for a task with each of its metrics (``moleclip.tasks.TASK_TYPES[task].metrics``).

    Args:
        task: ``"classification"`` (ROC-AUC; ``y_pred`` are scores or logits for the positive class) or
            ``"regression"`` (MAE, RMSE, R^2).
        y_true: labels ``[N]`` or ``[N, T]``, NaN for missing.
        y_pred: predictions of the same shape.
        target_names: names of the targets, for ``per_task`` / ``left_out`` and warnings (default "0", "1", ...).

    Returns:
        A :class:`MetricReport`: ``report["roc_auc"]`` (or ``"mae"``, ``"rmse"``, ``"r2"``) is the equal-weight mean over
        the targets the metric is defined for; ``report.per_task`` has each target's value and ``report.left_out``
        the targets left out of each mean, with the reason.
    """
    get_task(task)
    y_true = np.asarray(y_true, dtype=np.float64)
    y_pred = np.asarray(y_pred, dtype=np.float64)
    if y_true.ndim == 1:
        y_true = y_true[:, None]
    if y_pred.ndim == 1:
        y_pred = y_pred[:, None]
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true has shape {y_true.shape} but y_pred {y_pred.shape}")
    if y_true.shape[0] == 0:
        raise ValueError("Cannot compute metrics on zero molecules")
    if target_names is not None and len(target_names) != y_true.shape[1]:
        raise ValueError(f"{len(target_names)} target names for {y_true.shape[1]} targets")
    names = list(target_names) if target_names is not None else [str(j) for j in range(y_true.shape[1])]

    means: dict[str, float] = {}
    per_task: dict[str, dict[str, float]] = {}
    left_out: dict[str, dict[str, str]] = {}
    for metric in TASK_METRICS[task]:
        extra = {"target_names": names} if metric == "roc_auc" else {}
        out = _cached_metric(metric).compute(predictions=y_pred, references=y_true, **extra)
        means[metric] = float(out[metric])
        per_task[metric] = {name: float(v) for name, v in zip(names, out["per_target"])}
        left_out[metric] = {names[j]: why for j, why in zip(out["left_out"], out["left_out_reasons"])}
    return MetricReport(means, per_task, left_out)


def mean_std_ci(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """Mean, sample standard deviation (ddof 1) and the half-width of the ``confidence`` interval of the mean.

    The interval uses Student's t with ``n - 1`` degrees of freedom (``t * std / sqrt(n)``), appropriate for the
    handful of seeds behind each reported number. With one value the spread is unknown: std and half-width are NaN.
    """
    arr = np.asarray(list(values), dtype=np.float64).reshape(-1)
    if arr.size == 0:
        raise ValueError("mean_std_ci needs at least one value")
    if not np.isfinite(arr).all():
        raise ValueError(f"mean_std_ci got non-finite values: {arr.tolist()}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1, got {confidence}")
    mean = float(arr.mean())
    if arr.size == 1:
        return mean, math.nan, math.nan
    std = float(arr.std(ddof=1))
    half = float(stats.t.ppf(0.5 + confidence / 2, df=arr.size - 1) * std / math.sqrt(arr.size))
    return mean, std, half

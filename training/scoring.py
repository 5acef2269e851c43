"""Metrics for property prediction: the package's own `evaluate` modules, one call per task, and summary statistics.

The metric scripts live in ``training/evaluate_modules/<name>.py`` and are loaded from that local path, never from the
Hub, so evaluation works offline and cannot change under a fixed package version. All of them take ``[N]`` or
``[N, T]`` inputs with NaN for missing labels and average over targets; the input checks and the per-target averaging
they share sit next to them in ``masked_targets.py``, which evaluate copies into its module cache along with each
script.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from moleclip.processing.property_data import DEFAULT_METRIC, TASKS

__all__ = [
    "METRICS",
    "METRICS_DIR",
    "METRICS_HELPER",
    "PRIMARY_METRIC",
    "TASK_METRICS",
    "compute_metrics",
    "higher_is_better",
    "load_metric",
    "mean_std_ci",
]

METRICS_DIR = Path(__file__).resolve().parent / "evaluate_modules"
# imported relatively by every metric script; evaluate copies it only from the script's own folder
METRICS_HELPER = METRICS_DIR / "masked_targets.py"
# Direction of each metric, which model selection needs to know which epoch/configuration is best.
_HIGHER_IS_BETTER = {"roc_auc": True, "r2": True, "rmse": False, "mae": False}
METRICS = tuple(_HIGHER_IS_BETTER)
TASK_METRICS = {"classification": ("roc_auc",), "regression": ("rmse", "mae", "r2")}
# Metric used for selection when a dataset does not name its own (the named sets carry theirs in `.metric`).
PRIMARY_METRIC = dict(DEFAULT_METRIC)


def _check_name(name: str) -> str:
    if name not in _HIGHER_IS_BETTER:
        raise ValueError(f"Unknown metric {name!r}; available: {', '.join(METRICS)}")
    return name


def load_metric(name: str, **kwargs):
    """The package's `evaluate` module for ``name`` (``roc_auc``, ``rmse``, ``mae``, ``r2``), loaded from disk.

    Extra keyword arguments go to :func:`evaluate.load`. The module keeps its inputs in memory unless told otherwise:
    metrics here are computed on gathered predictions, so evaluate's cache files would only add disk traffic.
    """
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
    """True for ROC-AUC and R^2, False for RMSE and MAE."""
    return _HIGHER_IS_BETTER[_check_name(name)]


def compute_metrics(
    task: str,
    y_true,
    y_pred,
    target_names: Sequence[str] | None = None,
    per_target: bool = False,
) -> dict[str, float]:
    """Score predictions for a task.

    Args:
        task: ``"classification"`` (ROC-AUC; ``y_pred`` are scores or logits for the positive class) or
            ``"regression"`` (RMSE, MAE, R^2).
        y_true: labels ``[N]`` or ``[N, T]``, NaN for missing.
        y_pred: predictions of the same shape.
        target_names: names used for the per-target keys and in warnings.
        per_target: also return ``"<metric>/<target>"`` entries for each target.

    Returns:
        ``{"roc_auc": ...}`` or ``{"rmse": ..., "mae": ..., "r2": ...}`` (averages over targets), plus per-target
        entries when asked.
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
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

    results: dict[str, float] = {}
    for metric in TASK_METRICS[task]:
        extra = {"target_names": names} if metric == "roc_auc" else {}
        out = _cached_metric(metric).compute(predictions=y_pred, references=y_true, **extra)
        results[metric] = float(out[metric])
        if per_target:
            values = out["per_task"] if metric == "roc_auc" else out["per_target"]
            results.update({f"{metric}/{name}": float(v) for name, v in zip(names, values)})
    return results


def mean_std_ci(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """Mean, sample standard deviation (ddof 1) and the half-width of the ``confidence`` interval of the mean.

    The interval uses Student's t with ``n - 1`` degrees of freedom (``t * std / sqrt(n)``), appropriate for the
    handful of seeds behind each reported number. With one value the spread is unknown: std and half-width are NaN.
    """
    from scipy import stats

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

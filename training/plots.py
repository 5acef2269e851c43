"""Figures for a finetuning run: parity plot (regression), ROC curves (classification), learning curves.

matplotlib runs on the non-interactive Agg backend so figures can be written on servers without a display.
Missing labels (NaN) are left out of every figure, per target.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

__all__ = ["parity_plot", "roc_plot", "learning_curves", "plot_predictions"]


def _as_2d(values) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    return arr[:, None] if arr.ndim == 1 else arr


def _grid(n: int) -> tuple[plt.Figure, list]:
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 4.0 * rows), squeeze=False)
    flat = list(axes.reshape(-1))
    for ax in flat[n:]:
        ax.axis("off")
    return fig, flat[:n]


def _names(n: int, target_names: Sequence[str] | None) -> list[str]:
    if target_names is not None and len(target_names) != n:
        raise ValueError(f"{len(target_names)} target names for {n} targets")
    return list(target_names) if target_names is not None else [f"target {j}" for j in range(n)]


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def parity_plot(y_true, y_pred, path: str | Path, target_names: Sequence[str] | None = None, title: str = "") -> Path:
    """Predicted against measured values, one panel per target, with the y = x line and RMSE / MAE / R^2."""
    y_true, y_pred = _as_2d(y_true), _as_2d(y_pred)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true has shape {y_true.shape} but y_pred {y_pred.shape}")
    names = _names(y_true.shape[1], target_names)
    fig, axes = _grid(y_true.shape[1])
    for j, ax in enumerate(axes):
        mask = ~np.isnan(y_true[:, j]) & np.isfinite(y_pred[:, j])
        t, p = y_true[mask, j], y_pred[mask, j]
        ax.set_title(f"{title} {names[j]}".strip())
        ax.set_xlabel("measured")
        ax.set_ylabel("predicted")
        if t.size == 0:
            ax.text(0.5, 0.5, "no labels", ha="center", va="center", transform=ax.transAxes)
            continue
        low, high = float(min(t.min(), p.min())), float(max(t.max(), p.max()))
        pad = 0.05 * (high - low or 1.0)
        ax.plot([low - pad, high + pad], [low - pad, high + pad], color="grey", lw=1, ls="--")
        ax.scatter(t, p, s=12, alpha=0.7)
        rmse = float(np.sqrt(np.mean((t - p) ** 2)))
        mae = float(np.mean(np.abs(t - p)))
        ss_tot = float(np.sum((t - t.mean()) ** 2))
        r2 = 1.0 - float(np.sum((t - p) ** 2)) / ss_tot if ss_tot > 0 else float("nan")
        ax.text(0.04, 0.96, f"RMSE {rmse:.3g}\nMAE {mae:.3g}\nR² {r2:.3f}\nn = {t.size}", transform=ax.transAxes,
                va="top", fontsize=9, bbox=dict(facecolor="white", alpha=0.8, edgecolor="none"))
        ax.set_xlim(low - pad, high + pad)
        ax.set_ylim(low - pad, high + pad)
        ax.set_aspect("equal")
    return _save(fig, path)


def roc_plot(y_true, y_score, path: str | Path, target_names: Sequence[str] | None = None, title: str = "") -> Path:
    """ROC curve per task with its AUC; a task whose labels here are all one class is marked as such."""
    from sklearn.metrics import roc_auc_score, roc_curve

    y_true, y_score = _as_2d(y_true), _as_2d(y_score)
    if y_true.shape != y_score.shape:
        raise ValueError(f"y_true has shape {y_true.shape} but y_score {y_score.shape}")
    names = _names(y_true.shape[1], target_names)
    fig, axes = _grid(y_true.shape[1])
    for j, ax in enumerate(axes):
        mask = ~np.isnan(y_true[:, j])
        t, s = y_true[mask, j], y_score[mask, j]
        ax.plot([0, 1], [0, 1], color="grey", lw=1, ls="--")
        ax.set_title(f"{title} {names[j]}".strip())
        ax.set_xlabel("false positive rate")
        ax.set_ylabel("true positive rate")
        if np.unique(t).size < 2:
            ax.text(0.5, 0.5, "one class only", ha="center", va="center", transform=ax.transAxes)
            continue
        fpr, tpr, _ = roc_curve(t, s)
        ax.plot(fpr, tpr, lw=2, label=f"AUC {roc_auc_score(t, s):.3f} (n = {t.size})")
        ax.legend(loc="lower right")
        ax.set_aspect("equal")
    return _save(fig, path)


def plot_predictions(task: str, y_true, y_pred, path: str | Path, target_names: Sequence[str] | None = None,
                     title: str = "") -> Path:
    """Parity plot for regression, ROC curves for classification."""
    if task == "regression":
        return parity_plot(y_true, y_pred, path, target_names, title)
    if task == "classification":
        return roc_plot(y_true, y_pred, path, target_names, title)
    raise ValueError(f"no plot for task {task!r}")


def _read_metrics(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    out = []
    for row in rows:
        parsed = {}
        for key, value in row.items():
            try:
                parsed[key] = float(value) if value not in (None, "") else math.nan
            except ValueError:
                parsed[key] = math.nan
        out.append(parsed)
    return out


_PART_COLOURS = {"valid": "tab:blue", "test": "tab:orange"}  # the same colour for a part in every panel


def learning_curves(metrics_csv: str | Path, path: str | Path, metric: str | None = None,
                    best_epoch: int | None = None, title: str = "") -> Path:
    """Losses and a metric against epochs, from the training loop's metrics CSV.

    Left: training loss (the loop's logged rows) with validation and test loss (the evaluation rows, every epoch).
    Right: validation and test `metric` when given and present. `best_epoch` draws the epoch chosen on validation as
    a vertical line. `title` should name the data set, the setting and the seed.
    """
    rows = _read_metrics(Path(metrics_csv))
    if not rows:
        raise ValueError(f"{metrics_csv} holds no rows")
    train = [r for r in rows if math.isfinite(r.get("loss", math.nan))]
    evals = [r for r in rows if math.isfinite(r.get("valid_loss", math.nan))]
    panels = 2 if metric and any(math.isfinite(r.get(f"valid_{metric}", math.nan)) for r in evals) else 1
    fig, axes = plt.subplots(1, panels, figsize=(5.5 * panels, 4.6), squeeze=False)
    ax = axes[0, 0]
    # Training rows are logged at the end of an epoch's last step, with the epoch counter not yet advanced.
    if train:
        ax.plot([r["epoch"] + 1 for r in train], [r["loss"] for r in train], color="tab:gray", label="train loss")
    for key, label in (("valid_loss", "validation loss"), ("test_loss", "test loss")):
        points = [(r["epoch"], r[key]) for r in evals if math.isfinite(r.get(key, math.nan))]
        if points:
            ax.plot(*zip(*points), marker="o", ms=3, color=_PART_COLOURS[key.split("_")[0]], label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.set_title("loss")
    if panels == 2:
        ax2 = axes[0, 1]
        for part, label in (("valid", "validation"), ("test", "test")):
            key = f"{part}_{metric}"
            points = [(r["epoch"], r[key]) for r in evals if math.isfinite(r.get(key, math.nan))]
            if points:
                ax2.plot(*zip(*points), marker="o", ms=3, color=_PART_COLOURS[part], label=f"{label} {metric}")
        ax2.set_xlabel("epoch")
        ax2.set_ylabel(metric)
        ax2.set_title(metric)
    for axis in axes.reshape(-1):
        if best_epoch is not None:
            axis.axvline(best_epoch, color="grey", ls=":", lw=1, label=f"selected epoch {best_epoch} (best validation)")
        # below the plot, never over the curves
        axis.legend(loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=2, fontsize="small", frameon=False)
    if title:
        fig.suptitle(title, fontsize="medium")
    return _save(fig, path)

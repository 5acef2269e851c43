"""Figures for a finetuning run: parity plot (regression), ROC curves (classification), learning curves.

Each figure is meant to go into a paper as written: a title or label too long for its place is broken onto more lines,
never cut off at the figure's edge; axes name the target, with its unit where the data set gives one; epochs are whole
numbers. matplotlib runs on the non-interactive Agg backend so figures can be written on servers without a display.
Missing labels (NaN) are left out of every figure, per target.
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.text import Text  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from moleclip.tasks import METRIC_LABELS, is_classification, is_regression  # noqa: E402

__all__ = ["parity_plot", "roc_plot", "learning_curves", "plot_predictions", "fit_text"]

DPI = 120
# Where a long title or name may go onto a new line: after a space, underscore, hyphen, slash or comma.
_BREAKS = re.compile(r"(?<=[ _\-/,])")


def fit_text(text: Text, width: float) -> Text:
    """Break `text` onto as many lines as it needs to be at most `width` pixels wide (tall, for a text turned 90
    degrees), at the places `_BREAKS` allows; a single piece wider than that stays whole. Returns `text`."""
    renderer = text.get_figure(root=True).canvas.get_renderer()
    upright = abs(text.get_rotation() % 180 - 90) < 1

    def extent(candidate: str) -> float:
        text.set_text(candidate)
        box = text.get_window_extent(renderer)
        return box.height if upright else box.width

    lines, current = [], ""
    for piece in filter(None, _BREAKS.split(" ".join(text.get_text().split()))):
        if current and extent((current + piece).rstrip()) > width:
            lines.append(current.rstrip())
            current = piece
        else:
            current += piece
    text.set_text("\n".join([*lines, current.rstrip()]))
    return text


def _as_2d(values) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    return arr[:, None] if arr.ndim == 1 else arr


def _grid(n: int, title: str) -> tuple[plt.Figure, list, float, float]:
    """A figure of n square panels, three a row, with `title` over them; returns it, the panels and the width and
    height in pixels a panel's texts may take."""
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    width, height = 4.4 * cols, 4.4 * rows
    fig, axes = plt.subplots(rows, cols, figsize=(width, height), squeeze=False, layout="constrained", dpi=DPI)
    flat = list(axes.reshape(-1))
    for ax in flat[n:]:
        ax.axis("off")
    if title:
        fit_text(fig.suptitle(title), 0.95 * width * DPI)
    return fig, flat[:n], 0.92 * width / cols * DPI, 0.85 * height / rows * DPI


def _names(n: int, target_names: Sequence[str] | None) -> list[str]:
    if target_names is not None and len(target_names) != n:
        raise ValueError(f"{len(target_names)} target names for {n} targets")
    return list(target_names) if target_names is not None else [f"target {j}" for j in range(n)]


def _panels(y_true, other, other_name: str, target_names: Sequence[str] | None, title: str):
    """The two arrays as [N, T], one name per target, and a figure with a panel per target (see `_grid`)."""
    y_true, other = _as_2d(y_true), _as_2d(other)
    if y_true.shape != other.shape:
        raise ValueError(f"y_true has shape {y_true.shape} but {other_name} {other.shape}")
    names = _names(y_true.shape[1], target_names)
    return (y_true, other, names, *_grid(y_true.shape[1], title))


def _with_unit(text: str, unit: str | None) -> str:
    return f"{text} ({unit})" if unit else text


def _label_panel(ax, title: str, xlabel: str, ylabel: str, width: float, height: float) -> None:
    if title:
        fit_text(ax.set_title(title), width)
    fit_text(ax.set_xlabel(xlabel), width)
    fit_text(ax.set_ylabel(ylabel), height)


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def parity_plot(y_true, y_pred, path: str | Path, target_names: Sequence[str] | None = None, title: str = "",
                units: Mapping[str, str] | None = None) -> Path:
    """Predicted against measured values, one panel per target, with the y = x line and RMSE / MAE / R^2.

    `title` goes over all panels (the data set, setting, seed and part); each panel's axes name its target, with its
    unit from `units` (target -> unit) where given."""
    y_true, y_pred, names, fig, axes, width, height = _panels(y_true, y_pred, "y_pred", target_names, title)
    for j, ax in enumerate(axes):
        mask = ~np.isnan(y_true[:, j]) & np.isfinite(y_pred[:, j])
        t, p = y_true[mask, j], y_pred[mask, j]
        name = _with_unit(names[j], (units or {}).get(names[j]))
        _label_panel(ax, names[j] if len(names) > 1 else "", f"measured {name}", f"predicted {name}", width, height)
        if t.size == 0:
            ax.text(0.5, 0.5, "no labels", ha="center", va="center", transform=ax.transAxes)
            continue
        low, high = float(min(t.min(), p.min())), float(max(t.max(), p.max()))
        pad = 0.05 * (high - low or 1.0)
        ax.plot([low - pad, high + pad], [low - pad, high + pad], color="grey", lw=1, ls="--", label="y = x")
        ax.scatter(t, p, s=14, alpha=0.7)
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
    """ROC curve per task with its AUC, each panel titled with its target (label 1 is the positive class); a task
    whose labels here are all one class is marked as such. `title` goes over all panels."""
    # scikit-learn is not loaded by `import moleclip`; only the ROC figure needs it
    from sklearn.metrics import roc_auc_score, roc_curve

    y_true, y_score, names, fig, axes, width, height = _panels(y_true, y_score, "y_score", target_names, title)
    for j, ax in enumerate(axes):
        mask = ~np.isnan(y_true[:, j])
        t, s = y_true[mask, j], y_score[mask, j]
        ax.plot([0, 1], [0, 1], color="grey", lw=1, ls="--")
        _label_panel(ax, f"{names[j]} (positive: 1)", "false positive rate", "true positive rate", width, height)
        ax.set_aspect("equal")
        if np.unique(t).size < 2:
            ax.text(0.5, 0.5, "one class only", ha="center", va="center", transform=ax.transAxes)
            continue
        fpr, tpr, _ = roc_curve(t, s)
        ax.plot(fpr, tpr, lw=2, label=f"AUC {roc_auc_score(t, s):.3f} (n = {t.size})")
        ax.legend(loc="lower right")
    return _save(fig, path)


def plot_predictions(task: str, y_true, y_pred, path: str | Path, target_names: Sequence[str] | None = None,
                     title: str = "", units: Mapping[str, str] | None = None) -> Path:
    """Parity plot for regression (axes in `units`), ROC curves for classification."""
    if is_regression(task):
        return parity_plot(y_true, y_pred, path, target_names, title, units)
    if is_classification(task):
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
                    best_epoch: int | None = None, title: str = "", loss: str = "", unit: str = "",
                    n_targets: int = 1) -> Path:
    """Losses and a metric against epochs, from the training loop's metrics CSV.

    Left: training loss (the loop's logged rows) with validation and test loss (the evaluation rows, every epoch);
    `loss` says which loss it is ("L1, standardised targets"). Right: validation and test `metric` when given and
    present, in `unit`, the mean over `n_targets` targets. `best_epoch` draws the epoch chosen on validation as a
    vertical line. `title` should name the data set, the setting and the seed.
    """
    rows = _read_metrics(Path(metrics_csv))
    if not rows:
        raise ValueError(f"{metrics_csv} holds no rows")
    train = [r for r in rows if math.isfinite(r.get("loss", math.nan))]
    evals = [r for r in rows if math.isfinite(r.get("valid_loss", math.nan))]
    panels = 2 if metric and any(math.isfinite(r.get(f"valid_{metric}", math.nan)) for r in evals) else 1
    width = 5.5 * panels
    fig, axes = plt.subplots(1, panels, figsize=(width, 5.0), squeeze=False, layout="constrained", dpi=DPI)
    if title:
        fit_text(fig.suptitle(title), 0.95 * width * DPI)
    panel_width, panel_height = 0.92 * 5.5 * DPI, 0.7 * 5.0 * DPI
    ax = axes[0, 0]
    # Training rows are logged at the end of an epoch's last step, with the epoch counter not yet advanced.
    if train:
        ax.plot([r["epoch"] + 1 for r in train], [r["loss"] for r in train], color="tab:gray", label="train loss")
    for key, label in (("valid_loss", "validation loss"), ("test_loss", "test loss")):
        points = [(r["epoch"], r[key]) for r in evals if math.isfinite(r.get(key, math.nan))]
        if points:
            ax.plot(*zip(*points), marker="o", ms=3, color=_PART_COLOURS[key.split("_")[0]], label=label)
    _label_panel(ax, "", "epoch", _with_unit("loss", loss), panel_width, panel_height)
    if panels == 2:
        ax2 = axes[0, 1]
        name = METRIC_LABELS.get(metric, metric)
        for part, label in (("valid", "validation"), ("test", "test")):
            key = f"{part}_{metric}"
            points = [(r["epoch"], r[key]) for r in evals if math.isfinite(r.get(key, math.nan))]
            if points:
                ax2.plot(*zip(*points), marker="o", ms=3, color=_PART_COLOURS[part], label=f"{label} {name}")
        mean = f"{name}, mean over {n_targets} targets" if n_targets > 1 else name
        _label_panel(ax2, "", "epoch", _with_unit(mean, unit if metric in ("mae", "rmse") else ""), panel_width,
                     panel_height)
    for axis in axes.reshape(-1):
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        if best_epoch is not None:
            axis.axvline(best_epoch, color="grey", ls=":", lw=1, label=f"selected epoch {best_epoch} (best validation)")
        # below the plot, never over the curves
        axis.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2, fontsize="small", frameon=False)
    return _save(fig, path)

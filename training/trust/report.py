"""How well uncertainty calibrated on validation (:mod:`moleclip.training.trust.uncertainty`) holds on a test part.

* :func:`regression_report` / :func:`classification_report` score intervals and calibrated probabilities on a test
  part (coverage and width; Brier score and expected calibration error, Naeini et al. 2015, AAAI; rank correlation of
  the ensemble spread with the error), and :func:`uncertainty_markdown` writes such a report as a table for
  results.md. These are the only readers of test labels; nothing here fits or chooses anything.

Arrays are ``[n]`` or ``[n, targets]``; NaN labels (missing targets) are skipped target by target. Reports are plain
JSON-ready dicts (non-finite floats such as an unbounded width are written with ``json.dumps(..., allow_nan=True)``).
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from moleclip.tasks import is_regression
from moleclip.training.trust.uncertainty import ConformalIntervals, ProbabilityCalibration, _check_shapes, \
    _matrix, _nll, _sigmoid

__all__ = ["ECE_BINS", "brier_score", "expected_calibration_error", "regression_report", "classification_report",
           "coverage_shortfalls", "uncertainty_markdown"]

ECE_BINS = 10


def brier_score(labels, probabilities) -> float:
    """Brier score (1/n) sum_i (p_i - y_i)^2 over labelled molecules (Brier 1950); lower is better."""
    y, p = np.asarray(labels, dtype=np.float64).ravel(), np.asarray(probabilities, dtype=np.float64).ravel()
    known = np.isfinite(y)
    return float(np.mean((p[known] - y[known]) ** 2)) if known.any() else math.nan


def expected_calibration_error(labels, probabilities, bins: int = ECE_BINS) -> float:
    """ECE (Naeini et al. 2015; Guo et al. 2017) of the positive-class probability, equal-width bins:

    ECE = sum_b (n_b / n) |mean(y in b) - mean(p in b)|, bins [0, 1/B), ..., [(B-1)/B, 1] (1 falls in the last).
    Empty bins weigh nothing. The positive-class form suits binary property labels; note that it, like any binned
    ECE, is biased upwards for small n (a perfectly calibrated model of n molecules, its probabilities spread evenly
    over [0, 1], scores about sqrt(B / n) / 3).
    """
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    y, p = np.asarray(labels, dtype=np.float64).ravel(), np.asarray(probabilities, dtype=np.float64).ravel()
    if y.shape != p.shape:
        raise ValueError(f"labels have shape {y.shape} but probabilities {p.shape}")
    known = np.isfinite(y)
    y, p = y[known], p[known]
    if y.size == 0:
        return math.nan
    if not ((p >= 0) & (p <= 1)).all():
        raise ValueError("probabilities must lie in [0, 1] (calibrate logits first)")
    which = np.minimum((p * bins).astype(np.int64), bins - 1)
    count = np.bincount(which, minlength=bins)
    gap = np.abs(np.bincount(which, y, bins) - np.bincount(which, p, bins))  # per bin: n_b * |mean y - mean p|
    return float(gap.sum() / count.sum())


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rho; NaN when undefined (fewer than 3 molecules, or a constant input such as one member)."""
    if a.size < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return math.nan
    # scipy.stats is not loaded by `import moleclip`; only this check needs it
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic)


def _mean_over_targets(per_target: dict) -> dict:
    """Equal-weight mean over the targets where a value is defined; ``n`` is summed instead."""
    keys = next(iter(per_target.values())).keys()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns: the mean is NaN, as it should be
        return {k: sum(row[k] for row in per_target.values()) if k == "n" else
                float(np.nanmean([row[k] for row in per_target.values()])) for k in keys}


def regression_report(labels, mean, intervals: ConformalIntervals, spread=None) -> dict:
    """On a test part: per target, ``n``, ``coverage`` (fraction with lower <= y <= upper; compare with
    ``target_coverage``), ``mean_width`` (mean of upper - lower, target units) and ``spearman_spread_error``
    (rank correlation of the ensemble spread with |y - mean|); ``mean`` averages them over targets."""
    y, mu = _matrix("labels", labels, allow_nan=True), _matrix("mean", mean)
    _check_shapes(labels=y, mean=mu)
    lower, upper = intervals.intervals(mu, spread)
    sd = None if spread is None else _matrix("spread", spread)
    per_target = {}
    for j, name in enumerate(intervals.target_names):
        known = np.isfinite(y[:, j])
        yj = y[known, j]
        per_target[name] = {
            "n": int(known.sum()),
            "coverage": float(np.mean((lower[known, j] <= yj) & (yj <= upper[known, j]))) if known.any() else math.nan,
            "mean_width": float(np.mean(upper[known, j] - lower[known, j])) if known.any() else math.nan,
            "spearman_spread_error": math.nan if sd is None else _spearman(sd[known, j], np.abs(yj - mu[known, j])),
        }
    return {"task": "regression", "target_coverage": intervals.coverage, "methods": dict(zip(
        intervals.target_names, intervals.methods)), "targets": per_target, "mean": _mean_over_targets(per_target)}


def classification_report(labels, logits, calibration: ProbabilityCalibration, spread=None,
                          bins: int = ECE_BINS) -> dict:
    """On a test part: per target, ``n``, Brier score, ECE (``bins`` equal-width bins) and NLL before
    (``*_raw``: sigmoid of the logits) and after calibration, and ``spearman_spread_error`` (ensemble spread vs
    |y - calibrated p|); ``mean`` averages them over targets."""
    y, z = _matrix("labels", labels, allow_nan=True), _matrix("logits", logits)
    _check_shapes(labels=y, logits=z)
    calibrated, raw = calibration.probabilities(z), _sigmoid(z)
    sd = None if spread is None else _matrix("spread", spread)
    per_target = {}
    for j, name in enumerate(calibration.target_names):
        known = np.isfinite(y[:, j])
        yj, pj, row = y[known, j], calibrated[known, j], {"n": int(known.sum())}
        for suffix, p in (("_raw", raw[known, j]), ("", pj)):
            row[f"brier{suffix}"] = brier_score(yj, p)
            row[f"ece{suffix}"] = expected_calibration_error(yj, p, bins)
            row[f"nll{suffix}"] = _nll(yj, p, is_logit=False) if yj.size else math.nan
        row["spearman_spread_error"] = math.nan if sd is None else _spearman(sd[known, j], np.abs(yj - pj))
        per_target[name] = row
    return {"task": "classification", "ece_bins": bins, "methods": dict(zip(calibration.target_names,
            calibration.methods)), "targets": per_target, "mean": _mean_over_targets(per_target)}


def coverage_shortfalls(report: dict, significance: float = 0.05) -> list[tuple[str, float, int]]:
    """The targets of a :func:`regression_report` whose coverage is well below the promised level: (name, coverage,
    n) where, had the intervals held their promise, so few of n labels or fewer falling inside would have had a
    binomial probability below `significance` (a small part's chance shortfall is no alarm; a large one is)."""
    # scipy.stats is not loaded by `import moleclip`; only this check needs it
    from scipy.stats import binom

    out = []
    for name, row in report["targets"].items():
        n, coverage = row["n"], row["coverage"]
        if n and math.isfinite(coverage) and binom.cdf(round(coverage * n), n, report["target_coverage"]) < significance:
            out.append((name, coverage, n))
    return out


def _fmt(value) -> str:
    if isinstance(value, int):
        return str(value)
    return "-" if value is None or math.isnan(value) else ("unbounded" if math.isinf(value) else f"{value:.3g}")


def uncertainty_markdown(report: dict) -> str:
    """A markdown table of a :func:`regression_report` or :func:`classification_report`, one row per target."""
    if is_regression(report["task"]):
        columns = ["n", "coverage", "mean_width", "spearman_spread_error"]
        title = f"Conformal intervals, target coverage {report['target_coverage']:g}"
    else:
        columns = ["n", "brier_raw", "brier", "ece_raw", "ece", "nll_raw", "nll", "spearman_spread_error"]
        title = f"Calibrated probabilities (ECE over {report['ece_bins']} equal-width bins; *_raw: before calibration)"
    lines = [f"{title}, test part:", "", "| target | method | " + " | ".join(columns) + " |",
             "|" + "---|" * (len(columns) + 2)]
    for name, row in report["targets"].items():
        lines.append(f"| {name} | {report['methods'][name]} | " + " | ".join(_fmt(row[c]) for c in columns) + " |")
    if len(report["targets"]) > 1:
        lines.append("| mean | | " + " | ".join(_fmt(report["mean"][c]) for c in columns) + " |")
    return "\n".join(lines) + "\n"

"""Uncertainty that is calibrated on validation data.

* :func:`ensemble`: the models of the chosen setting (one per seed) as one ensemble: mean and spread of predictions.
* :class:`ConformalIntervals` (regression): split-conformal intervals (Lei et al. 2018, "Distribution-free predictive
  inference for regression", JASA 113:1094), plain or normalised by the ensemble spread, per target.
* :class:`ProbabilityCalibration` (classification): temperature scaling (Guo et al. 2017, "On calibration of modern
  neural networks", ICML) or isotonic regression (Zadrozny & Elkan 2002), per target.

How well they hold on a test part is scored apart, in :mod:`moleclip.training.trust.report`.

Everything is fitted on the validation part only; no choice here ever reads test labels. Arrays are ``[n]`` or
``[n, targets]``; NaN labels (missing targets) are skipped target by target. ``to_dict()`` gives plain JSON-ready
dicts (non-finite floats such as an unbounded quantile are written as the project writes them elsewhere:
``json.dumps(..., allow_nan=True)``).
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy.optimize import minimize_scalar

from moleclip.tasks import get_task, is_regression

__all__ = ["DEFAULT_COVERAGE", "Ensemble", "ensemble", "probability_logits", "conformal_quantile",
           "min_calibration_size", "ConformalIntervals", "ProbabilityCalibration", "calibration_from_dict"]

DEFAULT_COVERAGE = 0.9
# eps of the normalised score, as a fraction of the median calibration spread: small enough that the spread drives
# the width, large enough that a molecule on which all members agree by chance does not get a zero-width interval.
EPS_FRACTION = 0.1
CV_FOLDS = 5
# Temperature search range (T = 1/beta): wide enough for any network seen in practice, and bounded so that a
# perfectly separated validation part (whose NLL falls forever as T -> 0) still gives a finite answer.
T_RANGE = (1e-3, 1e3)
_ROUNDING = 1e-9  # (n+1)*coverage is computed in floating point: 10 * 0.9 must give k = 9, never 10


def _matrix(name: str, values, allow_nan: bool = False) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    arr = arr[:, None] if arr.ndim == 1 else arr
    if arr.ndim != 2:
        raise ValueError(f"{name} must be [n] or [n, targets], got shape {arr.shape}")
    if not allow_nan and not np.isfinite(arr).all():
        raise ValueError(f"{name} has non-finite values (only labels may be NaN, for missing targets)")
    return arr


def _check_shapes(**arrays: np.ndarray) -> None:
    shapes = {k: v.shape for k, v in arrays.items() if v is not None}
    if len(set(shapes.values())) > 1:
        raise ValueError("mismatched shapes: " + ", ".join(f"{k} {s}" for k, s in shapes.items()))


def _check_coverage(coverage: float) -> float:
    if isinstance(coverage, bool) or not isinstance(coverage, numbers.Real) or not 0 < coverage < 1:
        raise ValueError(f"coverage must lie strictly between 0 and 1 (e.g. 0.9 for 90% intervals), got {coverage!r}")
    return float(coverage)


def _names(target_names, n_targets: int) -> list[str]:
    names = [str(j) for j in range(n_targets)] if target_names is None else [str(t) for t in target_names]
    if len(names) != n_targets:
        raise ValueError(f"{len(names)} target names for {n_targets} targets")
    return names


def _log_sigmoid(z: np.ndarray) -> np.ndarray:
    return -np.logaddexp(0.0, -z)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return np.exp(_log_sigmoid(z))


# ---------------------------------------------------------------------------------------------------- ensemble
@dataclass
class Ensemble:
    """``mean`` and ``spread`` ``[n, targets]`` of ``n_members`` models' predictions (see :func:`ensemble`)."""

    mean: np.ndarray
    spread: np.ndarray
    n_members: int


def probability_logits(p) -> np.ndarray:
    """Probabilities as logits, for members that give probabilities only (random forests), so that every model type
    shares one classification path; clipped, so that a forest's 0 or 1 becomes a logit of -/+13.8, not an infinity."""
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-6, 1 - 1e-6)
    return np.log(p) - np.log1p(-p)


def ensemble(members: Sequence, task: str = "regression", rows: Sequence | None = None) -> Ensemble:
    """Combine the predictions of M models (one per seed) on the same molecules.

    Regression (predictions in target units): mean = (1/M) sum_m f_m, spread = sqrt((1/M) sum_m (f_m - mean)^2).
    Classification (members are logits z_m): probabilities are averaged, p = (1/M) sum_m sigmoid(z_m), as in deep
    ensembles (Lakshminarayanan et al. 2017), and ``mean`` is returned as the logit of p (computed in log space, so
    saturated members do not give infinities), ready for :class:`ProbabilityCalibration`; spread is the population
    std of the members' probabilities. The population std (ddof 0) is used so that one member gives spread 0, not NaN.

    ``rows``, if given (each member's ``_rows[part]``), must be identical for every member: members evaluated on
    different molecules (random splits drawn per seed) do not form an ensemble on any common calibration part.
    """
    get_task(task)  # an unknown task: the message listing the known ones
    if len(members) == 0:
        raise ValueError("an ensemble needs at least one member")
    if len({np.shape(p) for p in members}) > 1:
        raise ValueError(f"members' predictions have different shapes: {sorted({np.shape(p) for p in members})}")
    stack = np.stack([_matrix(f"member {m}", p) for m, p in enumerate(members)])
    if rows is not None:
        if len(rows) != len(members):
            raise ValueError(f"{len(rows)} row lists for {len(members)} members")
        if any(not np.array_equal(np.asarray(r), np.asarray(rows[0])) for r in rows):
            raise ValueError("the members were evaluated on different molecules (their rows differ; e.g. a random "
                             "split drawn per seed): an ensemble needs one shared split")
    if is_regression(task):
        return Ensemble(stack.mean(0), stack.std(0), len(stack))
    log_p = np.logaddexp.reduce(_log_sigmoid(stack), axis=0) - math.log(len(stack))
    log_q = np.logaddexp.reduce(_log_sigmoid(-stack), axis=0) - math.log(len(stack))
    return Ensemble(log_p - log_q, _sigmoid(stack).std(0), len(stack))


# ---------------------------------------------------------------------------------------------------- conformal
def min_calibration_size(coverage: float = DEFAULT_COVERAGE) -> int:
    """Fewest calibration labels giving a finite interval at ``coverage``: ceil((n+1)c) <= n  <=>  n >= c / (1 - c)."""
    c = _check_coverage(coverage)
    return int(math.ceil(c / (1 - c) - _ROUNDING))


def conformal_quantile(scores, coverage: float = DEFAULT_COVERAGE) -> float:
    """Split-conformal quantile (Lei et al. 2018): the k-th smallest of n scores, k = ceil((n + 1) * coverage).

    For a new exchangeable score s, P(s <= q) >= coverage. When k > n (fewer than :func:`min_calibration_size`
    scores) no finite q has that guarantee and ``inf`` is returned: an unbounded interval, never a silently
    narrower one.
    """
    c = _check_coverage(coverage)
    s = np.sort(np.asarray(scores, dtype=np.float64).ravel())
    if s.size == 0:
        raise ValueError("no calibration scores: conformal calibration needs labelled validation molecules")
    if not np.isfinite(s).all():
        raise ValueError("calibration scores must be finite")
    k = int(math.ceil((s.size + 1) * c - _ROUNDING))
    return float(s[k - 1]) if k <= s.size else math.inf


def _folds(n: int, folds: int, rng: np.random.Generator, labels: np.ndarray | None = None) -> np.ndarray:
    """Fold of each row: shuffled, and per class when ``labels`` are given, so every fold holds both classes."""
    fold = np.empty(n, dtype=np.int64)
    groups = [np.arange(n)] if labels is None else [np.flatnonzero(labels == v) for v in (0, 1)]
    for rows in groups:
        fold[rng.permutation(rows)] = np.arange(rows.size) % folds
    return fold


class _PerTarget:
    """Shared by the two calibrations: one record (a dict) per target, saved as JSON-ready dicts."""

    targets: list
    kind: str

    @property
    def target_names(self) -> list:
        return [t["name"] for t in self.targets]

    @property
    def methods(self) -> list:
        return [t["method"] for t in self.targets]

    def to_dict(self) -> dict:
        return {"version": 1, **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict):
        kind = cls.__dataclass_fields__["kind"].default
        if data.get("kind") != kind:
            raise ValueError(f"expected a saved {kind!r}, got kind {data.get('kind')!r}")
        if data.get("version") != 1:
            raise ValueError(f"unsupported {kind} version {data.get('version')!r} (this package reads version 1)")
        return cls(**{k: v for k, v in data.items() if k != "version"})


@dataclass
class ConformalIntervals(_PerTarget):
    """Per-target split-conformal intervals: ``mean +- half_width``, with

    * ``plain``: half_width = q, q the conformal quantile of |y - mean| on the calibration part;
    * ``normalized``: half_width = q * (spread + eps), q the conformal quantile of |y - mean| / (spread + eps).

    ``targets[j]``: ``name``, ``method``, ``quantile`` (q: target units for plain, a multiplier for normalized;
    ``inf``: unbounded, see ``note``), ``eps``, ``n_calibration``, ``note`` and ``selection`` (how the method was
    chosen). Build with :meth:`fit`; save with :meth:`to_dict`, rebuild with :meth:`from_dict`.
    """

    coverage: float
    targets: list
    kind: str = "conformal_regression"

    @classmethod
    def fit(cls, labels, mean, spread=None, coverage: float = DEFAULT_COVERAGE, method: str = "auto",
            eps: float | None = None, folds: int = CV_FOLDS, seed: int = 0, target_names=None) -> ConformalIntervals:
        """Calibrate on the validation part: ``labels`` (NaN = missing), ensemble ``mean`` and ``spread``.

        ``method``: "plain", "normalized" or "auto". Auto compares the two by ``folds``-fold cross-conformal within
        the validation part (calibrate on k-1 folds, measure the mean width on the held-out fold; both keep their
        coverage guarantee, so the narrower is the better) and takes normalized only if its mean width is strictly
        smaller, plain otherwise (ties, unbounded widths, no spread). The chosen method is then calibrated on all of
        validation. Choosing on the calibration data itself costs a little of the finite-sample guarantee in the
        worst case (two candidates); the test report measures what remains. ``eps`` (target units) defaults to
        EPS_FRACTION x the median calibration spread of each target.

        Too few labels for the coverage (n < :func:`min_calibration_size`), or none: that target's intervals are
        unbounded (q = inf), with a warning and a note, rather than narrower than promised.
        """
        coverage = _check_coverage(coverage)
        if method not in ("plain", "normalized", "auto"):
            raise ValueError(f"method must be 'plain', 'normalized' or 'auto', got {method!r}")
        if eps is not None and not eps > 0:
            raise ValueError(f"eps must be positive, got {eps!r}")
        y, mu = _matrix("labels", labels, allow_nan=True), _matrix("mean", mean)
        sd = None if spread is None else _matrix("spread", spread)
        _check_shapes(labels=y, mean=mu, spread=sd)
        if sd is not None and (sd < 0).any():
            raise ValueError("spread must be non-negative")
        if y.shape[0] == 0:
            raise ValueError("empty calibration part: conformal intervals need labelled validation molecules")
        if method == "normalized" and sd is None:
            raise ValueError("method='normalized' needs the ensemble spread")
        targets = []
        for j, name in enumerate(_names(target_names, y.shape[1])):
            known = np.isfinite(y[:, j])
            s = None if sd is None else sd[known, j]
            targets.append(_fit_conformal(name, np.abs(y[known, j] - mu[known, j]), s, coverage, method, eps, folds,
                                          np.random.default_rng(seed)))
        return cls(coverage, targets)

    def half_widths(self, spread=None, n: int | None = None) -> np.ndarray:
        """Half-widths ``[n, targets]``: needs ``spread`` when any target is normalized, else ``n`` rows."""
        normalized = "normalized" in self.methods
        if spread is None and (normalized or n is None):
            raise ValueError("half_widths needs the ensemble spread" if normalized else "give spread or n")
        sd = np.zeros((n, len(self.targets))) if spread is None else _matrix("spread", spread)
        if sd.shape[1] != len(self.targets):
            raise ValueError(f"spread has {sd.shape[1]} targets but the intervals have {len(self.targets)}")
        q, e = np.array([t["quantile"] for t in self.targets]), np.array([t["eps"] for t in self.targets])
        plain = np.array([m == "plain" for m in self.methods])
        with np.errstate(invalid="ignore"):  # inf * 0 only in the branch np.where drops (an unbounded plain target)
            return np.where(plain, q, q * (sd + e))

    def intervals(self, mean, spread=None) -> tuple[np.ndarray, np.ndarray]:
        """Lower and upper bounds ``[n, targets]`` around the ensemble ``mean``."""
        mu = _matrix("mean", mean)
        half = self.half_widths(spread, n=mu.shape[0])
        _check_shapes(mean=mu, half_widths=half)
        return mu - half, mu + half


def _fit_conformal(name, residual, s, coverage, method, eps, folds, rng) -> dict:
    """One target's record (see :meth:`ConformalIntervals.fit`); ``residual`` = |y - mean| of its labelled rows."""
    n, note, choice, selection = residual.size, "", "plain", {"rule": method}
    e = eps if eps is not None else (EPS_FRACTION * float(np.median(s)) if s is not None and n else 0.0)
    if n < min_calibration_size(coverage):
        note = (f"{n} calibration labels, fewer than the {min_calibration_size(coverage)} that {coverage:g} "
                "coverage needs: intervals are unbounded")
        warnings.warn(f"target {name}: {note}", UserWarning, stacklevel=4)
    elif method != "plain" and (s is None or e <= 0):
        note = "no ensemble spread (one member, or all members agree): plain intervals"
        if method == "normalized":
            warnings.warn(f"target {name}: {note}", UserWarning, stacklevel=4)
    elif method == "normalized":
        choice = "normalized"
    elif method == "auto":
        k = min(folds, n)
        fold = _folds(n, k, rng)
        widths = {"plain": np.empty(n), "normalized": np.empty(n)}
        for f in range(k):
            held, cal = fold == f, fold != f
            widths["plain"][held] = 2 * conformal_quantile(residual[cal], coverage)
            widths["normalized"][held] = 2 * conformal_quantile(residual[cal] / (s[cal] + e), coverage) * (s[held] + e)
        selection.update({f"cv_mean_width_{m}": float(w.mean()) for m, w in widths.items()}, folds=k)
        if selection["cv_mean_width_normalized"] < selection["cv_mean_width_plain"]:
            choice = "normalized"
    score = residual / (s + e) if choice == "normalized" else residual
    return {"name": name, "method": choice, "quantile": conformal_quantile(score, coverage) if n else math.inf,
            "eps": float(e) if choice == "normalized" else 0.0, "n_calibration": int(n), "note": note,
            "selection": selection}


# ---------------------------------------------------------------------------------------------------- calibration
def _nll(y: np.ndarray, logit_or_p: np.ndarray, is_logit: bool = True) -> float:
    """Mean binary negative log-likelihood (natural log)."""
    if is_logit:
        return float(np.mean(np.logaddexp(0.0, -(2 * y - 1) * logit_or_p)))
    p = np.clip(logit_or_p, 1e-12, 1 - 1e-12)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def _fit_temperature(y: np.ndarray, z: np.ndarray) -> float:
    """T minimising NLL(sigmoid(z / T)) (Guo et al. 2017). NLL is convex in 1/T, hence unimodal in log T: a bounded
    1-D Brent search over log T finds the minimum."""
    lo, hi = (math.log(t) for t in T_RANGE)
    best = minimize_scalar(lambda u: _nll(y, z * math.exp(-u)), bounds=(lo, hi), method="bounded",
                           options={"xatol": 1e-6})
    return float(math.exp(best.x))


def _fit_isotonic(y: np.ndarray, z: np.ndarray) -> list:
    """Isotonic map logit -> probability, as its thresholds ``[x, p]`` (applied by linear interpolation, clipped at
    the ends, exactly as sklearn's predict with out_of_bounds="clip"). Probabilities are kept within
    [0.5/(n+1), 1 - 0.5/(n+1)]: n labels cannot support certainty, and a held-out 0 or 1 would give infinite NLL."""
    # scikit-learn is not loaded by `import moleclip`; only calibration needs it
    from sklearn.isotonic import IsotonicRegression

    floor = 0.5 / (y.size + 1)
    fitted = IsotonicRegression(y_min=floor, y_max=1 - floor, out_of_bounds="clip").fit(z, y)
    return [fitted.X_thresholds_.tolist(), fitted.y_thresholds_.tolist()]


def _apply(method: str, temperature: float, thresholds, z: np.ndarray) -> np.ndarray:
    if method == "isotonic":
        return np.interp(z, np.asarray(thresholds[0]), np.asarray(thresholds[1]))
    return _sigmoid(z / temperature)


@dataclass
class ProbabilityCalibration(_PerTarget):
    """Per-target map from logits to calibrated probabilities. ``targets[j]``: ``name``, ``method`` (``temperature``:
    sigmoid(z / T); ``isotonic``: ``thresholds`` ``[x, p]`` interpolated; ``identity``: sigmoid(z), reason in
    ``note``), ``temperature``, ``thresholds``, ``n_calibration``, ``note`` and ``selection``."""

    targets: list
    kind: str = "probability_calibration"

    @classmethod
    def fit(cls, labels, logits, method: str = "auto", folds: int = CV_FOLDS, seed: int = 0,
            target_names=None) -> ProbabilityCalibration:
        """Fit on validation ``labels`` (0/1, NaN = missing) and ensemble ``logits``.

        ``method``: "temperature", "isotonic" or "auto". Auto compares them by stratified ``folds``-fold
        cross-validated NLL within the validation part (fitting and scoring on the same molecules would always
        favour isotonic, the most flexible monotone map) and takes isotonic only if its NLL is strictly lower;
        temperature otherwise, also when the rarer class has fewer than 2 labels. Temperature keeps the ranking of
        molecules (ROC-AUC unchanged); isotonic maps ranges of logits to one probability, so it can tie molecules.
        A target whose validation labels are all one class (or absent) is not calibrated: identity, with a warning
        and a note.
        """
        if method not in ("temperature", "isotonic", "auto"):
            raise ValueError(f"method must be 'temperature', 'isotonic' or 'auto', got {method!r}")
        y, z = _matrix("labels", labels, allow_nan=True), _matrix("logits", logits)
        _check_shapes(labels=y, logits=z)
        if y.shape[0] == 0:
            raise ValueError("empty calibration part: probability calibration needs labelled validation molecules")
        if not np.isin(y[np.isfinite(y)], (0, 1)).all():
            raise ValueError("classification labels must be 0, 1 or NaN")
        targets = []
        for j, name in enumerate(_names(target_names, y.shape[1])):
            known = np.isfinite(y[:, j])
            targets.append(_fit_calibration(name, y[known, j], z[known, j], method, folds,
                                            np.random.default_rng(seed)))
        return cls(targets)

    def probabilities(self, logits) -> np.ndarray:
        """Calibrated probabilities ``[n, targets]`` for ``logits`` (the ensemble mean of :func:`ensemble`)."""
        z = _matrix("logits", logits)
        if z.shape[1] != len(self.targets):
            raise ValueError(f"logits have {z.shape[1]} targets but the calibration has {len(self.targets)}")
        return np.stack([_apply(t["method"], t["temperature"], t["thresholds"], z[:, j])
                         for j, t in enumerate(self.targets)], axis=1)


def _fit_calibration(name, y, z, method, folds, rng) -> dict:
    """One target's record (see :meth:`ProbabilityCalibration.fit`), from its labelled rows."""
    counts = [int((y == 0).sum()), int((y == 1).sum())]
    choice, temperature, thresholds, note, selection = method, 1.0, None, "", {"rule": method}
    if min(counts) == 0:
        choice = "identity"
        note = f"validation labels are one class only ({counts[0]} negative, {counts[1]} positive): not calibrated"
        warnings.warn(f"target {name}: {note}", UserWarning, stacklevel=4)
    elif method == "auto":
        k = min(folds, *counts)
        choice = "temperature"
        if k >= 2:
            fold = _folds(y.size, k, rng, labels=y)
            p = {"temperature": np.empty(y.size), "isotonic": np.empty(y.size)}
            for f in range(k):
                held, fit = fold == f, fold != f
                p["temperature"][held] = _sigmoid(z[held] / _fit_temperature(y[fit], z[fit]))
                p["isotonic"][held] = _apply("isotonic", 1.0, _fit_isotonic(y[fit], z[fit]), z[held])
            selection.update({f"cv_nll_{m}": _nll(y, v, is_logit=False) for m, v in p.items()}, folds=k)
            if selection["cv_nll_isotonic"] < selection["cv_nll_temperature"]:
                choice = "isotonic"
        else:
            note = "too few labels of the rarer class to compare methods by cross-validation: temperature"
    if choice == "temperature":
        temperature = _fit_temperature(y, z)
    elif choice == "isotonic":
        thresholds = _fit_isotonic(y, z)
    return {"name": name, "method": choice, "temperature": temperature, "thresholds": thresholds,
            "n_calibration": int(y.size), "note": note, "selection": selection}


def calibration_from_dict(data: dict) -> ConformalIntervals | ProbabilityCalibration:
    """Rebuild whichever object ``data`` (from ``to_dict()``) describes."""
    kinds = {c.__dataclass_fields__["kind"].default: c for c in (ConformalIntervals, ProbabilityCalibration)}
    if data.get("kind") not in kinds:
        raise ValueError(f"unknown calibration kind {data.get('kind')!r}; expected one of {sorted(kinds)}")
    return kinds[data["kind"]].from_dict(data)

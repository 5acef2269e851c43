"""The Tanimoto-kernel support vector machine on Morgan bits (ECFP4-like: radius 2, 2048 bits), the strongest classical
model on small activity sets in MoleculeACE's benchmark (`moleclip finetune --baseline svr`).

One model per target on its labelled training rows: scikit-learn's SVR (targets standardised with the training part's
mean and std, epsilon 0.1) or SVC with a sigmoid calibration of its decision values (Platt scaling, cross-validated on
the training part), both on a precomputed Tanimoto kernel. C is chosen per target from a small grid on the validation
part only, never on test. Saved without pickle: the settings and the chosen C in ``tanimoto_svm.json``, the support
vectors' bits (packed) and dual coefficients in ``tanimoto_svm.npz``; predicting needs numpy only.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from moleclip.tasks import is_classification, is_regression
from moleclip.training.evaluation.scoring import compute_metrics, higher_is_better
from moleclip.training.kinds.base import Outputs, register_kind
from moleclip.training.kinds.baselines import FP_RADIUS, unfittable_target
from moleclip.training.kinds.fingerprint import BitsKind
from moleclip.training.trust.uncertainty import probability_logits

__all__ = ["C_GRID", "SVMKind", "SVMPredictor", "tanimoto_kernel"]

C_GRID = (0.1, 1.0, 10.0, 100.0)
DEFAULT_C = 1.0  # scikit-learn's, for a target whose validation rows cannot score any C
EPSILON = 0.1  # on standardised targets
# The training kernel is n x n float64: 20,000 molecules already take 3.2 GB.
MAX_TRAINING_MOLECULES = 20_000


def tanimoto_kernel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """K[i, j] = |a_i & b_j| / (|a_i| + |b_j| - |a_i & b_j|) for bit vectors (rows of 0/1); two empty vectors are
    taken as identical (1), so that K(a, a) = 1 for every a."""
    a = np.asarray(a, dtype=bool).astype(np.float32)
    b = np.asarray(b, dtype=bool).astype(np.float32)
    shared = (a @ b.T).astype(np.float64)  # exact: counts stay far below float32's 2**24
    union = a.sum(1, dtype=np.float64)[:, None] + b.sum(1, dtype=np.float64)[None, :] - shared
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, shared / union, 1.0)


def _score(task: str, metric: str, y: np.ndarray, pred: np.ndarray) -> float:
    if not len(y):
        return float("nan")
    return float(compute_metrics(task, y[:, None], pred[:, None]).get(metric, float("nan")))


def _fit_one(task: str, kernel: np.ndarray, y: np.ndarray, c: float, seed: int, calibrate: bool = False):
    # scikit-learn is not loaded by `import moleclip`; only fitting needs it
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.svm import SVC, SVR

    if is_regression(task):
        return SVR(kernel="precomputed", C=c, epsilon=EPSILON).fit(kernel, y), None
    svc = SVC(kernel="precomputed", C=c, random_state=seed)
    folds = min(3, int(np.bincount(y.astype(np.int64)).min()))
    if not calibrate or folds < 2:
        return svc.fit(kernel, y.astype(np.int64)), None
    calibrated = CalibratedClassifierCV(svc, method="sigmoid", ensemble=False, cv=folds).fit(kernel, y.astype(np.int64))
    inner = calibrated.calibrated_classifiers_[0]
    return inner.estimator, inner.calibrators[0]


def _decision(kernel: np.ndarray, coef: np.ndarray, intercept: float) -> np.ndarray:
    return kernel @ coef + intercept


class SVMPredictor:
    """Fitted Tanimoto-kernel SVMs, one per target; ``predict(bits)`` gives ``[n, targets]``: values (regression) or
    positive-class probabilities (classification). A target without training labels predicts NaN, a one-class target
    that class. ``settings["targets"]`` holds, per target, how it was fitted and the C chosen on validation."""

    CONFIG_FILE = "tanimoto_svm.json"
    ARRAYS_FILE = "tanimoto_svm.npz"

    def __init__(self, settings: dict, arrays: dict[str, np.ndarray]):
        self.task, self.settings, self.arrays = settings["task"], settings, arrays

    @classmethod
    def fit(cls, task: str, x_train: np.ndarray, y_train: np.ndarray, x_valid: np.ndarray, y_valid: np.ndarray,
            metric: str, seed: int, c_grid: Sequence[float] = C_GRID, target_names=None, radius: int = FP_RADIUS,
            standardize: str = "none", smiles_column: str | None = None) -> "SVMPredictor":
        """Per target, an SVM for each C of `c_grid` on the labelled training rows, scored with `metric` on the
        labelled validation rows; the best C's model is kept (the first of equals; `DEFAULT_C` when no C can be
        scored). Test rows are never passed here."""
        y_train = np.asarray(y_train, dtype=np.float64).reshape(len(x_train), -1)
        y_valid = np.asarray(y_valid, dtype=np.float64).reshape(len(x_valid), -1)
        if not len(x_train):
            raise ValueError("Cannot fit an SVM on an empty training set")
        if len(x_train) > MAX_TRAINING_MOLECULES:
            raise ValueError(f"--baseline svr holds the training kernel in memory ({len(x_train)}^2 numbers); it "
                             f"takes at most {MAX_TRAINING_MOLECULES} training molecules: use --baseline random_forest")
        n_targets = y_train.shape[1]
        names = list(target_names) if target_names else [str(j) for j in range(n_targets)]
        train_kernel = tanimoto_kernel(x_train, x_train)
        valid_kernel = tanimoto_kernel(x_valid, x_train)
        sign = 1 if higher_is_better(metric) else -1
        targets, arrays = [], {}
        for j in range(n_targets):
            rows = np.flatnonzero(~np.isnan(y_train[:, j]))
            y = y_train[rows, j]
            unfittable = unfittable_target(task, y, names[j])
            if unfittable is not None:
                kind, value = unfittable
                targets.append({"kind": kind} if value is None else {"kind": kind, "value": value})
                continue
            mean, std = (float(y.mean()), float(y.std())) if is_regression(task) else (0.0, 1.0)
            std = std if std > 0 else 1.0
            y_fit = (y - mean) / std
            kernel = train_kernel[np.ix_(rows, rows)]
            valid_rows = np.flatnonzero(~np.isnan(y_valid[:, j]))
            k_valid = valid_kernel[np.ix_(valid_rows, rows)]
            scores = {}
            for c in c_grid:
                model, _ = _fit_one(task, kernel, y_fit, float(c), seed)
                pred = model.predict(k_valid) * std + mean if is_regression(task) else model.decision_function(k_valid)
                scores[float(c)] = _score(task, metric, y_valid[valid_rows, j], pred) if len(valid_rows) else np.nan
            finite = {c: s for c, s in scores.items() if np.isfinite(s)}
            chosen = max(finite, key=lambda c: sign * finite[c]) if finite else DEFAULT_C
            model, calibrator = _fit_one(task, kernel, y_fit, chosen, seed, calibrate=True)
            support = rows[model.support_]
            arrays[f"support_{j}"] = np.packbits(np.asarray(x_train[support], dtype=bool), axis=1)
            arrays[f"coef_{j}"] = np.asarray(model.dual_coef_[0], dtype=np.float64)
            targets.append({
                "kind": "svm", "C": chosen, "chosen_by": f"validation {metric}" if finite else
                "default (no validation score)", "validation": {str(c): s for c, s in scores.items()},
                "intercept": float(model.intercept_[0]), "mean": mean, "std": std,
                # P(positive) = 1 / (1 + exp(a f + b)); uncalibrated (too few of a class to cross-validate): a = -1
                "sigmoid": [float(calibrator.a_), float(calibrator.b_)] if calibrator is not None else [-1.0, 0.0]})
        settings = {"task": task, "num_targets": n_targets, "in_features": int(x_train.shape[1]), "radius": radius,
                    "standardize": standardize, "seed": int(seed), "c_grid": [float(c) for c in c_grid],
                    "epsilon": EPSILON, "target_names": list(target_names) if target_names else None,
                    "smiles_column": smiles_column, "targets": targets}
        return cls(settings, arrays)

    @property
    def chosen_c(self) -> dict:
        """The C chosen on validation, per target name (None where no SVM was fitted)."""
        names = self.settings["target_names"] or [str(j) for j in range(self.settings["num_targets"])]
        return {name: t.get("C") for name, t in zip(names, self.settings["targets"])}

    def predict(self, x: np.ndarray) -> np.ndarray:
        out = np.full((len(x), self.settings["num_targets"]), np.nan)
        n_bits = self.settings["in_features"]
        for j, target in enumerate(self.settings["targets"]):
            if target["kind"] == "constant":
                out[:, j] = target["value"]
            elif target["kind"] == "svm" and len(x):
                support = np.unpackbits(self.arrays[f"support_{j}"], axis=1, count=n_bits)
                f = _decision(tanimoto_kernel(x, support), self.arrays[f"coef_{j}"], target["intercept"])
                if is_regression(self.task):
                    out[:, j] = f * target["std"] + target["mean"]
                else:
                    a, b = target["sigmoid"]
                    out[:, j] = 1.0 / (1.0 + np.exp(a * f + b))
        return out

    def save(self, folder: str | Path) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / self.CONFIG_FILE).write_text(json.dumps(self.settings, indent=2, allow_nan=True))
        np.savez_compressed(folder / self.ARRAYS_FILE, **self.arrays)
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> "SVMPredictor":
        folder = Path(folder)
        settings = json.loads((folder / cls.CONFIG_FILE).read_text())
        with np.load(folder / cls.ARRAYS_FILE, allow_pickle=False) as saved:
            arrays = {name: saved[name] for name in saved.files}
        return cls(settings, arrays)


@register_kind("svm")
class SVMKind(BitsKind):
    """A :class:`SVMPredictor` folder (`tanimoto_svm.json` + npz; no pickle). Runs on the CPU whatever the device."""

    network = SVMPredictor

    def to(self, device) -> "SVMKind":
        return self

    def forward(self, inputs, logits: bool = False, shared: dict | None = None) -> Outputs:
        values = self.model.predict(inputs)
        if logits and is_classification(self.task):
            values = probability_logits(values)  # as finetune takes an SVM's probabilities into an ensemble
        return Outputs(values)

    def describe(self) -> str:
        return "Tanimoto-kernel SVM baseline (Morgan bits)"

"""Fixed-representation baselines on Morgan fingerprints (radius 2, 2048 bits): the paper's MLP, and a random forest.

A reference point that needs no images and no GPU: if MoleCLIP does not beat these on ECFP4-like bits, the image
pretraining is not buying anything on that set.

* :class:`FingerprintPredictor`: the paper's fixed-representation baseline, the bits into the same MLP head as
  MoleCLIP's, trained by the finetuning protocol (`moleclip finetune --baseline fingerprint`). It is a
  :class:`FeatureHeadModel`, the head on precomputed features that the frozen-encoder mode trains too.
* :func:`random_forest_baseline`: hyperparameters fixed in advance (scikit-learn's defaults apart from 500 trees, as in
  MoleculeNet's RF), so the test set never influences it; the validation metrics are reported beside the test ones
  only for symmetry with the finetuning runs.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file
from torch import nn
from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor
from tqdm.auto import tqdm

from moleclip.modeling_moleclip import MoleCLIPPropertyOutput
from moleclip.processing.standardize import check_standardization
from moleclip.property_head import PropertyHead, TargetScaling, scaled_property_outputs
from moleclip.processing.fingerprints import morgan_fingerprints
from moleclip.processing.property_data import PropertyDataset
from moleclip.processing.splits import DEFAULT_FRACTIONS, SPLIT_KINDS, make_split
from moleclip.tasks import is_classification, is_regression
from moleclip.training.evaluation.scoring import compute_metrics
from moleclip.training.serving.hub import load_weights

__all__ = [
    "FP_RADIUS",
    "FP_BITS",
    "FeatureHeadModel",
    "FingerprintPredictor",
    "ForestPredictor",
    "fingerprint_matrix",
    "fit_predict_forest",
    "random_forest_baseline",
    "unfittable_target",
]

FP_RADIUS, FP_BITS = 2, 2048


class FeatureHeadModel(nn.Module):
    """The paper's MLP head on precomputed features (fingerprint bits, or a frozen encoder's embeddings).

    Same loss, masking and target standardisation as [`MoleCLIPForPropertyPrediction`], so the two differ only in
    what the head reads. The head keeps PyTorch's default initialisation of `nn.Linear`, as the reference code did.
    """

    def __init__(self, in_features: int, num_targets: int, task: str, regression_loss: str = "l1",
                 hidden_size: int = 512, num_layers: int = 3, dropout: float = 0.0,
                 target_mean: Sequence[float] | None = None, target_std: Sequence[float] | None = None,
                 target_names: Sequence[str] | None = None):
        super().__init__()
        self.settings = dict(in_features=in_features, num_targets=num_targets, task=task, regression_loss=regression_loss,
                             hidden_size=hidden_size, num_layers=num_layers, dropout=dropout,
                             target_names=list(target_names) if target_names else None)
        self.task, self.regression_loss = task, regression_loss
        self.head = PropertyHead(in_features, num_targets, hidden_size=hidden_size, num_layers=num_layers, dropout=dropout)
        self.target_scaling = TargetScaling(target_mean, target_std, num_targets=num_targets)

    def set_target_scaling(self, scaling: TargetScaling) -> None:
        self.target_scaling.copy_from(scaling)

    def forward(self, features: torch.Tensor, labels: torch.Tensor | None = None, **kwargs) -> MoleCLIPPropertyOutput:
        logits, loss = scaled_property_outputs(self.head(features.float()), labels, self.task, self.regression_loss,
                                               self.target_scaling)
        return MoleCLIPPropertyOutput(loss=loss, logits=logits)


class FingerprintPredictor(FeatureHeadModel):
    """The fingerprint-MLP baseline as a saved model: Morgan bits (`radius`, `in_features` bits) into the head.

    Saved as `fingerprint_mlp.json` (settings and target scaling) and `fingerprint_mlp.safetensors` (weights), so that
    `moleclip predict` can use it like a MoleCLIP model folder. `standardize` records how the training molecules were
    prepared (`processing.standardize`), so that predict prepares new ones the same way; `smiles_column` the SMILES
    column of the training table when it was named, the column predict and the app read a table with by default.
    """

    CONFIG_FILE = "fingerprint_mlp.json"
    WEIGHTS_FILE = "fingerprint_mlp.safetensors"

    def __init__(self, *args, radius: int = FP_RADIUS, standardize: str = "none", smiles_column: str | None = None,
                 **kwargs):
        super().__init__(*args, **kwargs)
        self.settings["radius"] = radius
        self.settings["standardize"] = check_standardization(standardize)
        self.settings["smiles_column"] = smiles_column

    def save(self, folder: str | Path) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        mean, std = self.target_scaling.statistics()
        settings = {**self.settings, "target_mean": mean, "target_std": std}
        (folder / self.CONFIG_FILE).write_text(json.dumps(settings, indent=2))
        save_file({k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}, str(folder / self.WEIGHTS_FILE))
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> "FingerprintPredictor":
        folder = Path(folder)
        settings = json.loads((folder / cls.CONFIG_FILE).read_text())
        model = cls(**settings)
        model.load_state_dict(load_weights(folder / cls.WEIGHTS_FILE))
        return model.eval()


def fingerprint_matrix(
    dataset: PropertyDataset, radius: int = 2, n_bits: int = 2048, progress: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Morgan bits for the dataset's molecules, and the dataset rows they belong to.

    The loader already dropped unparsable SMILES, so normally every row is kept; any that the fingerprinter still
    refuses are left out with a warning rather than shifting rows against their labels.
    """
    result = morgan_fingerprints(dataset.smiles, radius=radius, n_bits=n_bits, progress=progress)
    if result.skipped:
        warnings.warn(f"Fingerprints for {dataset.name}: {result.describe_skipped()}", UserWarning, stacklevel=2)
    return result.bits, result.kept


def unfittable_target(task: str, y: np.ndarray, name) -> tuple[str, float | None] | None:
    """What a per-target baseline (forest, SVM) does with a target it cannot fit, after saying so: ("none", None)
    for a target without training labels (its predictions are NaN), ("constant", c) for a classification target
    with one class in training (it predicts that class); None for a target it can fit (`y`: its labelled values)."""
    if not len(y):
        warnings.warn(f"Target {name} has no training labels; its predictions are left as NaN", UserWarning)
        return "none", None
    if is_classification(task) and np.unique(y).size < 2:
        warnings.warn(f"Task {name} has a single class in the training set; predicting that class everywhere",
                      UserWarning)
        return "constant", float(y[0])
    return None


class ForestPredictor:
    """Fitted random forest(s) on Morgan bits, usable by `moleclip predict` like a fingerprint-MLP folder.

    ``predict(bits)`` gives ``[n, targets]``: values (regression) or positive-class probabilities (classification);
    a target without training labels predicts NaN, a one-class target that class. Saved as ``random_forest.json``
    (settings, JSON) and ``random_forest.joblib`` (the scikit-learn estimators). Loading a .joblib file runs pickle,
    which can execute any code the file's author chose: :meth:`load` therefore refuses unless ``trust_pickle=True``
    (``moleclip predict --trust-pickle``); only pass it for folders you made yourself or whose source you trust.
    """

    CONFIG_FILE = "random_forest.json"
    MODEL_FILE = "random_forest.joblib"

    def __init__(self, task: str, estimators: list, settings: dict):
        self.task, self.estimators, self.settings = task, estimators, settings

    @classmethod
    def fit(cls, task: str, x_train: np.ndarray, y_train: np.ndarray, seed: int, n_estimators: int = 500,
            n_jobs: int = -1, max_features: str | float | None = None, target_names=None, radius: int = FP_RADIUS,
            standardize: str = "none", smiles_column: str | None = None) -> "ForestPredictor":
        """One multi-output regressor when every label is present, else one forest per target on its labelled rows
        (a forest cannot be fitted on NaN targets, and dropping whole molecules would waste labels)."""
        y_train = np.asarray(y_train, dtype=np.float64)
        if y_train.ndim == 1:
            y_train = y_train[:, None]
        if len(x_train) == 0:
            raise ValueError("Cannot fit a forest on an empty training set")
        n_targets = y_train.shape[1]
        kwargs = {"n_estimators": n_estimators, "n_jobs": n_jobs, "random_state": seed}
        if max_features is not None:
            kwargs["max_features"] = max_features
        settings = {"task": task, "num_targets": n_targets, "in_features": int(x_train.shape[1]), "radius": radius,
                    "standardize": standardize, "seed": int(seed), "n_estimators": n_estimators,
                    "target_names": list(target_names) if target_names else None, "smiles_column": smiles_column}
        if is_regression(task) and not np.isnan(y_train).any():
            forest = RandomForestRegressor(**kwargs).fit(x_train, y_train if n_targets > 1 else y_train[:, 0])
            return cls(task, [("all", forest)], settings)
        estimators = []
        for j in range(n_targets):
            mask = ~np.isnan(y_train[:, j])
            xj, yj = x_train[mask], y_train[mask, j]
            unfittable = unfittable_target(task, yj, j)
            if unfittable is not None:
                estimators.append(unfittable)
            elif is_regression(task):
                estimators.append(("forest", RandomForestRegressor(**kwargs).fit(xj, yj)))
            else:
                estimators.append(("forest", RandomForestClassifier(**kwargs).fit(xj, yj.astype(np.int64))))
        return cls(task, estimators, settings)

    def predict(self, x: np.ndarray) -> np.ndarray:
        n_targets = self.settings["num_targets"]
        out = np.full((len(x), n_targets), np.nan)
        if not len(x):  # a part of a split can be empty; scikit-learn refuses 0-row inputs
            return out
        if self.estimators[0][0] == "all":
            return np.asarray(self.estimators[0][1].predict(x), dtype=np.float64).reshape(len(x), n_targets)
        for j, (kind, est) in enumerate(self.estimators):
            if kind == "constant":
                out[:, j] = est
            elif kind == "forest" and is_regression(self.task):
                out[:, j] = est.predict(x)
            elif kind == "forest":
                out[:, j] = est.predict_proba(x)[:, int(np.flatnonzero(est.classes_ == 1)[0])]
        return out

    def save(self, folder: str | Path) -> Path:
        # joblib is not loaded by `import moleclip`; only a forest's save and load need it
        import joblib

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / self.CONFIG_FILE).write_text(json.dumps(self.settings, indent=2))
        joblib.dump(self.estimators, folder / self.MODEL_FILE, compress=3)
        return folder

    @classmethod
    def load(cls, folder: str | Path, trust_pickle: bool = False) -> "ForestPredictor":
        # joblib is not loaded by `import moleclip`; only a forest's save and load need it
        import joblib

        folder = Path(folder)
        if not trust_pickle:
            raise ValueError(f"{folder} holds a random forest saved with joblib (pickle), which can run arbitrary code "
                             "when loaded: pass --trust-pickle only if you made this folder or trust its source")
        settings = json.loads((folder / cls.CONFIG_FILE).read_text())
        return cls(settings["task"], joblib.load(folder / cls.MODEL_FILE), settings)


def fit_predict_forest(
    task: str,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_eval: Sequence[np.ndarray],
    seed: int,
    n_estimators: int = 500,
    n_jobs: int = -1,
    max_features: str | float | None = None,
) -> list[np.ndarray]:
    """Fit forest(s) on ``(x_train, y_train [N, T], NaN = missing)`` and predict each array in ``x_eval``
    (see :class:`ForestPredictor`; classification gives the positive-class probability).
    ``max_features=None`` keeps scikit-learn's defaults (all features for regression, sqrt for classification).
    """
    forest = ForestPredictor.fit(task, x_train, y_train, seed, n_estimators, n_jobs, max_features)
    return [forest.predict(x) for x in x_eval]


def random_forest_baseline(
    dataset: PropertyDataset,
    split_kind: str | None = None,
    seeds: Sequence[int] = (1, 2, 3),
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    n_estimators: int = 500,
    n_jobs: int = -1,
    max_features: str | float | None = None,
    progress: bool = True,
) -> dict[int, dict]:
    """Random forest on Morgan fingerprints, one run per seed.

    The seed drives both the split (for ``"random"``/``"random_scaffold"``; the ``"scaffold"`` split is deterministic
    and shared by all seeds) and the forest. ``split_kind`` defaults to the dataset's own (``dataset.default_split``).

    Returns:
        ``{seed: {"valid": {metric: value}, "test": {metric: value}, "sizes": [n_train, n_valid, n_test]}}`` with
        ROC-AUC for classification and RMSE/MAE/R^2 for regression (averaged over targets, missing labels masked).
    """
    split_kind = split_kind or dataset.default_split
    if split_kind not in SPLIT_KINDS:
        raise ValueError(f"Unknown split kind {split_kind!r}; valid kinds: {', '.join(SPLIT_KINDS)}")
    if not seeds:
        raise ValueError("random_forest_baseline needs at least one seed")
    bits, kept = fingerprint_matrix(dataset, progress=progress)
    data = dataset.subset(kept) if len(kept) != len(dataset) else dataset
    targets = data.targets.astype(np.float64)

    results: dict[int, dict] = {}
    fixed_split = make_split(split_kind, data.smiles, seed=0, fractions=fractions) if split_kind == "scaffold" else None
    for seed in tqdm(list(seeds), desc=f"RF {dataset.name}", unit="seed", disable=not progress):
        split = fixed_split or make_split(split_kind, data.smiles, seed=int(seed), fractions=fractions)
        valid_pred, test_pred = fit_predict_forest(
            data.task,
            bits[split.train],
            targets[split.train],
            [bits[split.valid], bits[split.test]],
            seed=int(seed),
            n_estimators=n_estimators,
            n_jobs=n_jobs,
            max_features=max_features,
        )
        results[int(seed)] = {
            part: compute_metrics(data.task, targets[idx], pred, data.target_names) if len(idx) else {}
            for part, idx, pred in (("valid", split.valid, valid_pred), ("test", split.test, test_pred))
        }
        results[int(seed)]["sizes"] = list(split.sizes)
    return results

"""Root mean squared error over one or more targets with missing labels, as an offline `evaluate` module.

Shipped with the package so that evaluation never fetches metric code from the Hugging Face Hub (which fails offline
and can change under a fixed package version). Load it with ``moleclip.training.scoring.load_metric("rmse")``.
"""

import datasets
import evaluate
import numpy as np

_DESCRIPTION = """
Root mean squared error. Each target is scored on the molecules that have a label for it (NaN in the references =
missing), then the per-target values are averaged with equal weight, so a sparsely labelled target counts as much as
a full one.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `float` or of `list` of `float`): predicted values, shape [N] or [N, T].
    references (`list` of `float` or of `list` of `float`): true values of the same shape, NaN (or None) = missing.
Returns:
    rmse (`float`): mean over the scored targets (NaN if none could be scored).
    per_target (`list` of `float`): value for each target, NaN where a target has no labels.
Examples:
    >>> metric = moleclip.training.scoring.load_metric("rmse")
    >>> round(metric.compute(predictions=[1.0, 2.0, 4.0], references=[1.0, 2.0, 3.0])["rmse"], 4)
    0.5774
"""

_CITATION = ""


def _as_2d(values, what):
    # None (an Arrow null) becomes NaN here, so missing labels arrive the same either way
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise ValueError(f"{what} must be 1-D [N] or 2-D [N, T], got shape {arr.shape}")
    return arr


def _score(y_true, y_pred):
    return np.sqrt(np.mean((y_pred - y_true) ** 2))


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Rmse(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=[
                datasets.Features(
                    {
                        "predictions": datasets.Sequence(datasets.Value("float64")),
                        "references": datasets.Sequence(datasets.Value("float64")),
                    }
                ),
                datasets.Features(
                    {"predictions": datasets.Value("float64"), "references": datasets.Value("float64")}
                ),
            ],
            reference_urls=["https://en.wikipedia.org/wiki/Root_mean_square_deviation"],
        )

    def _compute(self, predictions, references):
        y_pred = _as_2d(predictions, "predictions")
        y_true = _as_2d(references, "references")
        if y_pred.shape != y_true.shape:
            raise ValueError(f"predictions have shape {y_pred.shape} but references {y_true.shape}")
        labelled = ~np.isnan(y_true)
        if not np.isfinite(y_true[labelled]).all():
            raise ValueError("references hold infinite values")
        if not np.isfinite(y_pred[labelled]).all():
            raise ValueError("predictions hold NaN or infinite values for labelled molecules (did training diverge?)")
        per_target = []
        for j in range(y_true.shape[1]):
            mask = labelled[:, j]
            per_target.append(
                float(_score(y_true[mask, j], y_pred[mask, j])) if mask.sum() >= 1 else float("nan")
            )
        scored = [v for v in per_target if not np.isnan(v)]
        return {"rmse": float(np.mean(scored)) if scored else float("nan"), "per_target": per_target}

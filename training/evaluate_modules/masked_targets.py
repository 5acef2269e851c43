"""Input checks and per-target scoring with missing labels, shared by the package's `evaluate` metric scripts.

``evaluate.load(<script>.py)`` copies the script into its module cache together with the files the script imports
relatively, which it finds with a regular expression over each line. So each script imports from here as
``from .masked_targets import ...`` with no comment on that line (evaluate would take the comment for a URL to fetch
the file from; ``from . import masked_targets`` is not recognised at all), and this file must stay in the same folder
as the scripts. It must not import from the package nor relatively itself: evaluate copies only direct imports, and
the copy in its cache has no package around it.
"""

from typing import Callable

import datasets
import evaluate
import numpy as np

__all__ = [
    "PER_TARGET_AVERAGING",
    "as_2d",
    "check_finite_references",
    "masked_inputs",
    "masked_regression",
    "mean_of_scored",
    "metric_info",
    "regression_inputs_description",
    "score_targets",
    "too_few_labels",
]

Score = Callable[[np.ndarray, np.ndarray], float]
# Given one target's present labels: None when the metric is defined for them, else the reason it is not.
WhyUndefined = Callable[[np.ndarray], "str | None"]

LEFT_OUT_DESCRIPTION = """left_out (`list` of `int`): positions of the targets left out of the mean (their value is NaN).
    left_out_reasons (`list` of `str`): why each of them was left out, in the same order."""

PER_TARGET_AVERAGING = """Each target is scored on the molecules that have a label for it (NaN in the references =
missing), then the per-target values are averaged with equal weight, so a sparsely labelled target counts as much as
a full one."""


def metric_info(description: str, inputs_description: str, citation: str, reference_url: str) -> evaluate.MetricInfo:
    """The `MetricInfo` of a metric taking ``[N]`` or ``[N, T]`` float predictions and references."""
    return evaluate.MetricInfo(
        description=description,
        citation=citation,
        inputs_description=inputs_description,
        # evaluate picks the first schema the inputs fit: several targets per molecule, else one
        features=[
            datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Value("float64")),
                    "references": datasets.Sequence(datasets.Value("float64")),
                }
            ),
            datasets.Features({"predictions": datasets.Value("float64"), "references": datasets.Value("float64")}),
        ],
        reference_urls=[reference_url],
    )


def regression_inputs_description(name: str, min_labels: int, example_result: str) -> str:
    """The ``inputs_description`` of a regression metric built on :func:`masked_regression`.

    ``example_result`` is what the example (predictions 1, 2, 4 against 1, 2, 3) prints.
    """
    too_few = "has no labels" if min_labels == 1 else f"has fewer than {min_labels} labels"
    return f"""
Args:
    predictions (`list` of `float` or of `list` of `float`): predicted values, shape [N] or [N, T].
    references (`list` of `float` or of `list` of `float`): true values of the same shape, NaN (or None) = missing.
Returns:
    {name} (`float`): mean over the scored targets (NaN if none could be scored).
    per_target (`list` of `float`): value for each target, NaN where a target {too_few}.
    {LEFT_OUT_DESCRIPTION}
Examples:
    >>> metric = moleclip.training.evaluation.scoring.load_metric("{name}")
    >>> round(metric.compute(predictions=[1.0, 2.0, 4.0], references=[1.0, 2.0, 3.0])["{name}"], 4)
    {example_result}
"""


def as_2d(values, what: str) -> np.ndarray:
    """``values`` as a float64 array ``[N, T]`` (a 1-D input is one target); ``what`` names it in the error."""
    # None (an Arrow null) becomes NaN here, so missing labels arrive the same either way
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise ValueError(f"{what} must be 1-D [N] or 2-D [N, T], got shape {arr.shape}")
    return arr


def check_finite_references(labelled_references: np.ndarray) -> None:
    """Reject infinite labels (NaN ones were already taken as missing)."""
    if not np.isfinite(labelled_references).all():
        raise ValueError("references hold infinite values")


def masked_inputs(
    predictions,
    references,
    check_references: Callable[[np.ndarray], None] = check_finite_references,
    prediction_noun: str = "values",
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validate a prediction/reference pair and find the labelled entries.

    Args:
        predictions: ``[N]`` or ``[N, T]``.
        references: same shape, NaN (or None) for a missing label.
        check_references: raises ``ValueError`` for bad labels; receives the labelled references as a flat array.
        prediction_noun: what the predictions are called in the error about non-finite ones ("values", "scores").

    Returns:
        ``(y_true, y_pred, labelled)``: both arrays as ``[N, T]`` float64 and the boolean mask of present labels.
    """
    y_pred = as_2d(predictions, "predictions")
    y_true = as_2d(references, "references")
    if y_pred.shape != y_true.shape:
        raise ValueError(f"predictions have shape {y_pred.shape} but references {y_true.shape}")
    labelled = ~np.isnan(y_true)
    check_references(y_true[labelled])
    # predictions for unlabelled entries are never scored, so whatever they hold is allowed
    if not np.isfinite(y_pred[labelled]).all():
        raise ValueError(
            f"predictions hold NaN or infinite {prediction_noun} for labelled molecules (did training diverge?)"
        )
    return y_true, y_pred, labelled


def score_targets(
    score: Score,
    y_true: np.ndarray,
    y_pred: np.ndarray,
    labelled: np.ndarray,
    why_undefined: WhyUndefined,
) -> tuple[list[float], list[int], list[str]]:
    """Score each target on its labelled rows.

    ``why_undefined(labels)`` says why the metric does not exist for a target's present labels (too few of them,
    one class...), or None when it does; such targets get NaN.

    Returns:
        ``(per_target, left_out, reasons)``: one value per target, the positions of the NaN ones and why each is NaN.
    """
    per_target: list[float] = []
    left_out: list[int] = []
    reasons: list[str] = []
    for j in range(y_true.shape[1]):
        mask = labelled[:, j]
        reason = why_undefined(y_true[mask, j])
        if reason is None:
            per_target.append(float(score(y_true[mask, j], y_pred[mask, j])))
        else:
            per_target.append(float("nan"))
            left_out.append(j)
            reasons.append(reason)
    return per_target, left_out, reasons


def too_few_labels(min_labels: int) -> WhyUndefined:
    """A ``why_undefined`` for metrics that need at least ``min_labels`` labels per target."""

    def why(labels: np.ndarray) -> str | None:
        if labels.size >= min_labels:
            return None
        if labels.size == 0:
            return "no labels"
        return f"{labels.size} label{'s' if labels.size != 1 else ''}, fewer than the {min_labels} it needs"

    return why


def mean_of_scored(per_target: list[float]) -> float:
    """Equal-weight mean over the targets that have a value, NaN if none has."""
    scored = [v for v in per_target if not np.isnan(v)]
    return float(np.mean(scored)) if scored else float("nan")


def masked_regression(name: str, score: Score, predictions, references, min_labels: int = 1) -> dict:
    """``{name: mean over targets, "per_target": [...], "left_out": [...], "left_out_reasons": [...]}`` for a
    regression score, NaN where a target has fewer than ``min_labels`` labels."""
    y_true, y_pred, labelled = masked_inputs(predictions, references)
    per_target, left_out, reasons = score_targets(score, y_true, y_pred, labelled, too_few_labels(min_labels))
    return {name: mean_of_scored(per_target), "per_target": per_target, "left_out": left_out, "left_out_reasons": reasons}

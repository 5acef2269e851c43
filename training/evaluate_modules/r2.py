"""Coefficient of determination (R^2) over one or more targets with missing labels, as an offline `evaluate` module.

Shipped with the package so that evaluation never fetches metric code from the Hugging Face Hub (which fails offline
and can change under a fixed package version). Load it with ``moleclip.training.evaluation.scoring.load_metric("r2")``.
"""

import evaluate
from sklearn.metrics import r2_score

# evaluate copies the helper along only for this exact form, comment-free: it would read a comment as a URL
from .masked_targets import PER_TARGET_AVERAGING, masked_regression, metric_info, regression_inputs_description

# R^2 of one label is undefined (no variance to explain)
_MIN_LABELS = 2

_DESCRIPTION = f"""
Coefficient of determination R^2, as scikit-learn's r2_score (a constant target scores 1.0 if predicted exactly,
else 0.0). {PER_TARGET_AVERAGING}
"""

_KWARGS_DESCRIPTION = regression_inputs_description("r2", _MIN_LABELS, example_result="0.5")

_CITATION = ""
_REFERENCE_URL = "https://scikit-learn.org/stable/modules/generated/sklearn.metrics.r2_score.html"


def _score(y_true, y_pred):
    return r2_score(y_true, y_pred)


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class R2(evaluate.Metric):
    def _info(self):
        return metric_info(_DESCRIPTION, _KWARGS_DESCRIPTION, _CITATION, _REFERENCE_URL)

    def _compute(self, predictions, references):
        return masked_regression("r2", _score, predictions, references, min_labels=_MIN_LABELS)

"""Root mean squared error over one or more targets with missing labels, as an offline `evaluate` module.

Shipped with the package so that evaluation never fetches metric code from the Hugging Face Hub (which fails offline
and can change under a fixed package version). Load it with ``moleclip.training.evaluation.scoring.load_metric("rmse")``.
"""

import evaluate
import numpy as np

# evaluate copies the helper along only for this exact form, comment-free: it would read a comment as a URL
from .masked_targets import PER_TARGET_AVERAGING, masked_regression, metric_info, regression_inputs_description

_MIN_LABELS = 1

_DESCRIPTION = f"""
Root mean squared error. {PER_TARGET_AVERAGING}
"""

_KWARGS_DESCRIPTION = regression_inputs_description("rmse", _MIN_LABELS, example_result="0.5774")

_CITATION = ""
_REFERENCE_URL = "https://en.wikipedia.org/wiki/Root_mean_square_deviation"


def _score(y_true, y_pred):
    return np.sqrt(np.mean((y_pred - y_true) ** 2))


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Rmse(evaluate.Metric):
    def _info(self):
        return metric_info(_DESCRIPTION, _KWARGS_DESCRIPTION, _CITATION, _REFERENCE_URL)

    def _compute(self, predictions, references):
        return masked_regression("rmse", _score, predictions, references, min_labels=_MIN_LABELS)

"""Multi-task ROC-AUC with missing labels, as an offline `evaluate` module.

Shipped with the package because ``evaluate.load("roc_auc")`` fetches its script from the Hugging Face Hub, which
fails offline and can change under a fixed package version. Load it with
``moleclip.training.evaluation.scoring.load_metric("roc_auc")``.
"""

import warnings

import evaluate
import numpy as np
from sklearn.metrics import roc_auc_score

# evaluate copies the helper along only for this exact form, comment-free: it would read a comment as a URL
from .masked_targets import LEFT_OUT_DESCRIPTION, masked_inputs, mean_of_scored, metric_info, score_targets

_DESCRIPTION = """
Area under the ROC curve for one or more binary tasks, averaged over tasks (the MoleculeNet convention). Missing
labels (NaN in the references) are left out task by task. A task whose present labels are all of one class (or that
has none) has no defined ROC-AUC: it is left out of the average, and reported in `left_out` with the reason in
`left_out_reasons` and in a warning.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `float` or of `list` of `float`): scores for the positive class, shape [N] or [N, T].
        Probabilities, logits or any monotone score give the same value.
    references (`list` of `float` or of `list` of `float`): 0/1 labels of the same shape, NaN (or None) = missing.
    target_names (`list` of `str`, optional): task names used in the warning about tasks left out.
Returns:
    roc_auc (`float`): mean ROC-AUC over the scored tasks (NaN if no task could be scored).
    per_target (`list` of `float`): ROC-AUC of each task, NaN for tasks left out.
    """ + LEFT_OUT_DESCRIPTION + """
Examples:
    >>> metric = moleclip.training.evaluation.scoring.load_metric("roc_auc")
    >>> metric.compute(predictions=[0.1, 0.8, 0.4], references=[0, 1, 1])["roc_auc"]
    1.0
"""

_CITATION = """
@article{wu2018moleculenet,
  title={MoleculeNet: a benchmark for molecular machine learning},
  author={Wu, Zhenqin and Ramsundar, Bharath and Feinberg, Evan N and Gomes, Joseph and Geniesse, Caleb and
          Pappu, Aneesh S and Leswing, Karl and Pande, Vijay},
  journal={Chemical Science}, volume={9}, number={2}, pages={513--530}, year={2018}
}
"""
_REFERENCE_URL = "https://scikit-learn.org/stable/modules/generated/sklearn.metrics.roc_auc_score.html"


def _check_binary(labels):
    if not np.isin(labels, (0.0, 1.0)).all():
        bad = labels[~np.isin(labels, (0.0, 1.0))][0]
        raise ValueError(f"ROC-AUC references must be 0, 1 or NaN (missing), found {bad!r}")


def _why_undefined(labels):
    if labels.size == 0:
        return "no labels"
    classes = np.unique(labels)
    if classes.size < 2:
        return f"one class: all {labels.size} labels are {int(classes[0])}"
    return None


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class RocAuc(evaluate.Metric):
    def _info(self):
        return metric_info(_DESCRIPTION, _KWARGS_DESCRIPTION, _CITATION, _REFERENCE_URL)

    def _compute(self, predictions, references, target_names=None):
        y_true, y_score, labelled = masked_inputs(
            predictions, references, check_references=_check_binary, prediction_noun="scores"
        )
        names = list(target_names) if target_names is not None else [f"task {j}" for j in range(y_true.shape[1])]
        per_target, left_out, reasons = score_targets(roc_auc_score, y_true, y_score, labelled, _why_undefined)
        if left_out:
            shown = "; ".join(f"{names[j]} ({why})" for j, why in list(zip(left_out, reasons))[:10])
            warnings.warn(
                f"ROC-AUC left out {len(left_out)} of {y_true.shape[1]} task(s) from the mean: {shown}",
                UserWarning,
                stacklevel=2,
            )
        return {
            "roc_auc": mean_of_scored(per_target),
            "per_target": per_target,
            "left_out": left_out,
            "left_out_reasons": reasons,
        }

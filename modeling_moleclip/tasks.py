"""Property task types: what each one predicts, its loss, its metrics and which way each metric improves.

This is the one home of these facts. The config checks `task` and `regression_loss` against `TASK_TYPES`, the models'
losses go through `property_loss`, `moleclip.training.evaluation.scoring` reads the metrics and their directions from here, and
the table loader infers a file's task with `infer_task`.

* ``regression``: one or more continuous targets. The head learns them standardised (training-split mean and std, see
  `TargetScaling` in modeling_moleclip.py) and reports predictions in the targets' units. Loss: L1 (the paper) or
  MSE. Metrics: MAE first (the default for choosing epochs and settings: the loss is L1, and the paper reports MAE on
  its own sets), then RMSE and R^2.
* ``classification``: one or more binary (0/1) targets, one sigmoid each (binary and multi-label). Loss: binary
  cross-entropy on the logits. Metric: ROC-AUC.

Missing labels (NaN) are masked in every loss and metric, so a multi-task set with gaps (Tox21) trains on what it has.

There is no multi-class (softmax) task: none of the paper's sets needs one, and a real one needs more than a loss
(integer class labels in the tables, a class count separate from the target count, accuracy or one-vs-rest metrics,
probabilities in predictions and plots). A property with a few classes can be learnt as one-hot ``classification``.

This file travels to the Hugging Face Hub as remote code next to ``modeling_moleclip.py``: no imports from this
package, only libraries a plain ``transformers`` install has.
"""

import warnings
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "METRIC_HIGHER_IS_BETTER",
    "METRIC_LABELS",
    "REGRESSION_LOSSES",
    "TASK_TYPES",
    "TaskType",
    "default_target_names",
    "get_task",
    "higher_is_better",
    "infer_task",
    "is_classification",
    "is_regression",
    "prediction_prefix",
    "predictions_from_logits",
    "property_loss",
]

# Which way each metric improves: model selection needs it to know the best epoch and setting.
METRIC_HIGHER_IS_BETTER = {"roc_auc": True, "mae": False, "rmse": False, "r2": True}
# How figures name each metric.
METRIC_LABELS = {"roc_auc": "ROC-AUC", "mae": "MAE", "rmse": "RMSE", "r2": "R²"}


@dataclass(frozen=True)
class TaskType:
    """One kind of property task.

    Attributes:
        name: the value of `MoleCLIPConfig.task`.
        description: one line for messages and model cards.
        losses: the losses it can train with; the first is the default.
        metrics: the metrics it is scored with; the first is the default for model selection.
        standardized_targets: whether the head learns standardised targets (`TargetScaling`).
    """

    name: str
    description: str
    losses: tuple[str, ...]
    metrics: tuple[str, ...]
    standardized_targets: bool

    @property
    def default_loss(self) -> str:
        return self.losses[0]

    @property
    def default_metric(self) -> str:
        return self.metrics[0]


TASK_TYPES = {
    task.name: task
    for task in (
        TaskType(
            "regression",
            "continuous targets, learnt standardised; predictions in the targets' units",
            losses=("l1", "mse"),
            metrics=("mae", "rmse", "r2"),
            standardized_targets=True,
        ),
        TaskType(
            "classification",
            "binary (0/1) targets, one sigmoid each; logits out",
            losses=("bce",),
            metrics=("roc_auc",),
            standardized_targets=False,
        ),
    )
}
REGRESSION_LOSSES = TASK_TYPES["regression"].losses


def get_task(name: str) -> TaskType:
    """The task type called ``name``; a ValueError listing the known ones otherwise."""
    if name not in TASK_TYPES:
        raise ValueError(f"task must be one of {tuple(TASK_TYPES)}, got {name!r}")
    return TASK_TYPES[name]


def is_classification(task: str) -> bool:
    """Binary (0/1) targets, one sigmoid each: predictions are probabilities, ensembles average logits."""
    return get_task(task).name == "classification"


def is_regression(task: str) -> bool:
    """Continuous targets, learnt standardised: predictions in the targets' units."""
    return get_task(task).name == "regression"


def prediction_prefix(task: str) -> str:
    """The start of a prediction column's name: ``probability_<target>`` or ``predicted_<target>``."""
    return "probability" if is_classification(task) else "predicted"


def predictions_from_logits(logits: torch.Tensor, task: str) -> torch.Tensor:
    """What a model predicts from its head's outputs: sigmoid probabilities (classification), values in the targets'
    units as they are (regression: the head's outputs are already unscaled)."""
    return torch.sigmoid(logits) if is_classification(task) else logits


def default_target_names(names, count: int) -> list[str]:
    """The targets' names: those recorded, else ``target_0 .. target_{count-1}`` (a model trained from a bare
    table of labels)."""
    return [str(name) for name in names] if names else [f"target_{j}" for j in range(int(count))]


def higher_is_better(metric: str) -> bool:
    """True for ROC-AUC and R^2, False for MAE and RMSE."""
    if metric not in METRIC_HIGHER_IS_BETTER:
        raise ValueError(f"Unknown metric {metric!r}; available: {', '.join(METRIC_HIGHER_IS_BETTER)}")
    return METRIC_HIGHER_IS_BETTER[metric]


# A column of at most this many distinct whole numbers, inferred as regression, may hold class numbers.
_FEW_CLASSES = 10


def infer_task(targets, names=None) -> str:
    """``"classification"`` when every present label (NaN = missing) is 0 or 1, else ``"regression"``.

    A target whose labels are a few whole numbers (0, 1, 2: perhaps classes, perhaps counts; or two classes coded
    1/2 or -1/1) is inferred as regression with a warning: class numbers learnt as values give a model and metrics
    that mean nothing. ``names`` (one per column) name the targets in it.
    """
    values = np.asarray(targets, dtype=np.float64)
    labelled = values[~np.isnan(values)]
    if labelled.size and np.isin(labelled, (0.0, 1.0)).all():
        return "classification"
    columns = values.reshape(len(values), -1)
    for j in range(columns.shape[1]):
        column = columns[~np.isnan(columns[:, j]), j]
        distinct = np.unique(column)
        if 2 <= distinct.size <= _FEW_CLASSES and (distinct == np.round(distinct)).all():
            name = repr(str(names[j])) if names is not None else f"{j}"
            shown = ", ".join(f"{v:g}" for v in distinct)
            warnings.warn(
                f"target {name} holds only the whole numbers {shown}: it is learnt as regression (the task inferred). "
                "If these are classes, code two classes as 0 and 1, and more as one 0/1 column per class "
                "(classification, one-hot: there is no multi-class task); if they are counts or measurements, say so "
                "with --task regression (task='regression' in Python), which also silences this",
                UserWarning, stacklevel=2)
    return "regression"


def _l1(predictions: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return (predictions - labels).abs()


def _mse(predictions: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return (predictions - labels) ** 2


def _bce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits, labels, reduction="none")


_PER_ENTRY_LOSSES = {"l1": _l1, "mse": _mse, "bce": _bce}


def property_loss(
    predictions: torch.Tensor, labels: torch.Tensor, task: str, regression_loss: str = "l1"
) -> torch.Tensor:
    """The finetuning loss of ``task``, averaged over the observed (molecule, target) entries (NaN = missing).

    ``regression_loss`` ("l1" or "mse") applies to regression only; classification always uses binary
    cross-entropy on logits. Regression labels and predictions must be on the same scale (the model passes both
    standardised). A batch with no observed label gives a zero loss that still has a graph, so data-parallel
    processes stay in step.
    """
    task_type = get_task(task)
    loss_name = regression_loss if task_type.name == "regression" else task_type.default_loss
    if loss_name not in task_type.losses:
        raise ValueError(f"a {task} task trains with one of {task_type.losses}, got {loss_name!r}")
    labels = labels.to(device=predictions.device, dtype=predictions.dtype).reshape(predictions.shape)
    observed = ~torch.isnan(labels)
    filled = torch.where(observed, labels, torch.zeros_like(labels))
    per_entry = _PER_ENTRY_LOSSES[loss_name](predictions, filled) * observed
    # clamp: no observed label gives 0 / 1 = 0, without a data-dependent branch
    return per_entry.sum() / observed.sum().clamp(min=1)

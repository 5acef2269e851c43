"""Which task a table's labels are taken for, and the warning where that guess may be wrong."""

import warnings

import numpy as np
import pytest

from moleclip.tasks import infer_task


def test_a_column_of_few_whole_numbers_is_regression_with_a_warning():
    classes = np.array([[0.0, 0.1], [1.0, 0.2], [2.0, np.nan], [1.0, 0.3]])
    with pytest.warns(UserWarning, match=r"target 'grade' holds only the whole numbers 0, 1, 2: .*one 0/1 column per class"):
        assert infer_task(classes, names=["grade", "logp"]) == "regression"
    with pytest.warns(UserWarning, match="target 0 holds only"):
        infer_task(classes[:, 0])


def test_no_warning_for_binary_continuous_or_many_valued_labels():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert infer_task(np.array([[0.0, np.nan], [1.0, 1.0]])) == "classification"
        assert infer_task(np.array([0.5, 1.5, 2.0, 3.0])) == "regression"
        assert infer_task(np.arange(40, dtype=float)) == "regression"  # heavy-atom counts and the like



def test_two_classes_coded_otherwise_than_0_1_are_warned_about():
    with pytest.warns(UserWarning, match="holds only the whole numbers -1, 1: .*code two classes as 0 and 1"):
        assert infer_task(np.array([-1.0, 1.0, 1.0, np.nan])) == "regression"


def test_the_task_helpers_are_the_one_home_of_task_facts_for_predictions():
    import torch

    from moleclip.tasks import (default_target_names, is_classification, is_regression, prediction_prefix,
                                predictions_from_logits)

    assert is_classification("classification") and not is_classification("regression")
    assert is_regression("regression") and not is_regression("classification")
    with pytest.raises(ValueError, match="task must be one of"):
        is_classification("multiclass")  # no such task: refused, never taken for regression
    assert prediction_prefix("classification") == "probability" and prediction_prefix("regression") == "predicted"
    logits = torch.tensor([[0.0, 2.0]])
    assert torch.equal(predictions_from_logits(logits, "regression"), logits)
    torch.testing.assert_close(predictions_from_logits(logits, "classification"), torch.sigmoid(logits))
    assert default_target_names(None, 2) == ["target_0", "target_1"] and default_target_names(["logS"], 1) == ["logS"]

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

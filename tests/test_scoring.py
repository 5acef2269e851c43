"""The shipped evaluate metric modules and the scoring helpers, checked against scikit-learn, offline."""

import json
import math
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score, roc_auc_score

from moleclip.training.evaluation import scoring
from moleclip.tasks import METRIC_HIGHER_IS_BETTER, TASK_TYPES
from moleclip.training.evaluation.scoring import MetricReport, compute_metrics, higher_is_better, load_metric, mean_std_ci


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    # Any attempt to reach the Hub for a metric script would fail under these flags.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_EVALUATE_OFFLINE", "1")
    # the libraries read those flags at import time, which may have happened in an earlier test
    import datasets
    import evaluate

    monkeypatch.setattr(evaluate.config, "HF_EVALUATE_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    scoring._cached_metric.cache_clear()


@pytest.fixture
def classification_data():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, size=(80, 3)).astype(np.float64)
    y[rng.random((80, 3)) < 0.25] = np.nan
    scores = y * 0.8 + rng.normal(size=y.shape)  # informative but imperfect
    scores = np.where(np.isnan(scores), rng.normal(size=y.shape), scores)
    return y, scores


@pytest.fixture
def regression_data():
    rng = np.random.default_rng(1)
    y = rng.normal(size=(60, 2)) * [1.0, 5.0]
    pred = y + rng.normal(size=y.shape) * [0.3, 2.0]
    y[rng.random(y.shape) < 0.2] = np.nan
    return y, pred


def test_metric_scripts_are_local_files():
    for name in scoring.METRICS:
        assert (scoring.METRICS_DIR / f"{name}.py").is_file()
    assert scoring.METRICS_HELPER.is_file() and scoring.METRICS_HELPER.parent == scoring.METRICS_DIR
    with pytest.raises(ValueError, match="roc_auc, mae, rmse, r2"):
        load_metric("accuracy")


def test_every_task_metric_has_a_script_and_a_direction():
    # the task types in moleclip.tasks are the one list; scoring only reads it
    assert set(scoring.METRICS) == set(METRIC_HIGHER_IS_BETTER)
    for name, task in TASK_TYPES.items():
        assert scoring.TASK_METRICS[name] == task.metrics
        assert scoring.PRIMARY_METRIC[name] == task.metrics[0]
        for metric in task.metrics:
            assert (scoring.METRICS_DIR / f"{metric}.py").is_file()
            assert higher_is_better(metric) == METRIC_HIGHER_IS_BETTER[metric]


def test_evaluate_sees_the_helper_import_of_every_script():
    # evaluate copies a relative import along only if its line-by-line regex reads it as one ("internal", no "From:")
    from evaluate.loading import get_imports

    for name in scoring.METRICS:
        internal = [imp for imp in get_imports(str(scoring.METRICS_DIR / f"{name}.py")) if imp[0] != "library"]
        assert internal == [("internal", "masked_targets", "masked_targets", None)], name


@pytest.mark.parametrize("name", scoring.METRICS)
def test_documented_example_holds(name):
    import doctest

    import moleclip.training.evaluation.scoring

    description = load_metric(name).inputs_description
    test = doctest.DocTestParser().get_doctest(description, {"moleclip": moleclip}, name, None, 0)
    assert test.examples, "the metric documents no example"
    assert doctest.DocTestRunner().run(test, out=lambda _: None).failed == 0


def test_missing_helper_is_reported(monkeypatch, tmp_path):
    monkeypatch.setattr(scoring, "METRICS_HELPER", tmp_path / "masked_targets.py")
    with pytest.raises(FileNotFoundError, match="masked_targets.py is missing.*package_data"):
        load_metric("rmse")


def test_metrics_load_in_a_fresh_process_with_an_empty_module_cache(tmp_path):
    # A fresh process and cache: the helper must come from evaluate's copy, not from a module already imported here.
    code = textwrap.dedent(
        """
        import json
        from moleclip.training.evaluation.scoring import METRICS, load_metric

        y, p = [0.0, 1.0, 0.0, 1.0, 1.0], [0.2, 0.9, 0.4, 0.3, 0.7]
        print(json.dumps({name: load_metric(name).compute(predictions=p, references=y)[name] for name in METRICS}))
        """
    )
    cache = tmp_path / "modules"
    env = dict(os.environ, HF_HOME=str(tmp_path / "hf"), HF_MODULES_CACHE=str(cache), HF_HUB_OFFLINE="1")
    env.update(HF_DATASETS_OFFLINE="1", HF_EVALUATE_OFFLINE="1")
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])

    y, p = np.array([0.0, 1.0, 0.0, 1.0, 1.0]), np.array([0.2, 0.9, 0.4, 0.3, 0.7])
    assert got["roc_auc"] == pytest.approx(roc_auc_score(y, p))
    assert got["rmse"] == pytest.approx(math.sqrt(mean_squared_error(y, p)))
    assert got["mae"] == pytest.approx(mean_absolute_error(y, p))
    assert got["r2"] == pytest.approx(r2_score(y, p))
    for name in scoring.METRICS:
        copies = list(cache.rglob(f"{name}.py"))
        assert len(copies) == 1, name
        assert (copies[0].parent / "masked_targets.py").read_text() == scoring.METRICS_HELPER.read_text()


def test_roc_auc_masks_missing_labels_per_task(classification_data):
    y, scores = classification_data
    out = load_metric("roc_auc").compute(predictions=scores, references=y)
    expected = []
    for j in range(y.shape[1]):
        mask = ~np.isnan(y[:, j])
        expected.append(roc_auc_score(y[mask, j], scores[mask, j]))
    np.testing.assert_allclose(out["per_target"], expected)
    assert out["roc_auc"] == pytest.approx(np.mean(expected))
    assert out["left_out"] == [] and out["left_out_reasons"] == []


def test_roc_auc_single_task_1d_matches_sklearn():
    y = np.array([0, 1, 1, 0, 1, 0, 1], dtype=float)
    s = np.array([0.1, 0.9, 0.3, 0.4, 0.8, 0.2, 0.35])
    assert compute_metrics("classification", y, s)["roc_auc"] == pytest.approx(roc_auc_score(y, s))


def test_roc_auc_leaves_out_single_class_task_with_note(classification_data):
    y, scores = classification_data
    y = y.copy()
    y[:, 1] = np.where(np.isnan(y[:, 1]), np.nan, 1.0)
    with pytest.warns(UserWarning, match="left out 1 of 3 task.*tox .one class"):
        out = load_metric("roc_auc").compute(predictions=scores, references=y, target_names=["a", "tox", "c"])
    assert out["left_out"] == [1] and math.isnan(out["per_target"][1])
    assert out["left_out_reasons"][0].startswith("one class: all") and out["left_out_reasons"][0].endswith("are 1")
    kept = [out["per_target"][0], out["per_target"][2]]
    assert out["roc_auc"] == pytest.approx(np.mean(kept))


def test_compute_metrics_reports_per_task_values_and_left_out_tasks(classification_data):
    # three tasks, the second has one class in this split: the mean is over the other two, and the report says so
    y, scores = classification_data
    y = y.copy()
    y[:, 1] = np.where(np.isnan(y[:, 1]), np.nan, 0.0)
    with pytest.warns(UserWarning, match="left out 1 of 3"):
        report = compute_metrics("classification", y, scores, target_names=["a", "b", "c"])
    assert isinstance(report, MetricReport) and set(report) == {"roc_auc"}
    expected = {}
    for j, name in ((0, "a"), (2, "c")):
        mask = ~np.isnan(y[:, j])
        expected[name] = roc_auc_score(y[mask, j], scores[mask, j])
    assert report.per_task["roc_auc"]["a"] == pytest.approx(expected["a"])
    assert report.per_task["roc_auc"]["c"] == pytest.approx(expected["c"])
    assert math.isnan(report.per_task["roc_auc"]["b"])
    labelled_b = int((~np.isnan(y[:, 1])).sum())
    assert report.left_out == {"roc_auc": {"b": f"one class: all {labelled_b} labels are 0"}}
    assert report["roc_auc"] == pytest.approx((expected["a"] + expected["c"]) / 2)
    # the plain mean-only view still works, and the whole report serialises
    assert dict(report) == {"roc_auc": report["roc_auc"]}
    full = json.loads(json.dumps(report.as_dict()))
    assert full["left_out"]["roc_auc"] == {"b": f"one class: all {labelled_b} labels are 0"}
    assert set(full["per_task"]["roc_auc"]) == {"a", "b", "c"}


def test_task_without_labels_in_a_split_is_left_out():
    y = np.array([[0.0, np.nan], [1.0, np.nan], [1.0, np.nan]])
    s = np.array([[0.1, 0.5], [0.9, 0.5], [0.8, 0.5]])
    with pytest.warns(UserWarning):
        report = compute_metrics("classification", y, s)
    assert report["roc_auc"] == 1.0 and report.left_out == {"roc_auc": {"1": "no labels"}}


def test_roc_auc_rejects_bad_input():
    with pytest.raises(ValueError, match="0, 1 or NaN"):
        compute_metrics("classification", [0, 2, 1], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="diverge"):
        compute_metrics("classification", [0, 1, 1], [0.1, np.nan, 0.3])


@pytest.mark.parametrize(
    "name, reference",
    [
        ("rmse", lambda t, p: math.sqrt(mean_squared_error(t, p))),
        ("mae", mean_absolute_error),
        ("r2", r2_score),
    ],
)
def test_regression_metrics_match_sklearn_with_masking(regression_data, name, reference):
    y, pred = regression_data
    out = load_metric(name).compute(predictions=pred, references=y)
    expected = [reference(y[~np.isnan(y[:, j]), j], pred[~np.isnan(y[:, j]), j]) for j in range(y.shape[1])]
    np.testing.assert_allclose(out["per_target"], expected, rtol=1e-10)
    assert out[name] == pytest.approx(np.mean(expected))


def test_regression_without_missing_equals_sklearn_uniform_average():
    rng = np.random.default_rng(2)
    y, p = rng.normal(size=(30, 3)), rng.normal(size=(30, 3))
    got = compute_metrics("regression", y, p)
    assert got["mae"] == pytest.approx(mean_absolute_error(y, p))
    assert got["r2"] == pytest.approx(r2_score(y, p))
    assert list(got) == ["mae", "rmse", "r2"]  # the task's metrics, the default first


def test_compute_metrics_per_task_values(regression_data):
    y, pred = regression_data
    got = compute_metrics("regression", y, pred, target_names=["a", "b"])
    assert set(got.per_task) == {"rmse", "mae", "r2"} and set(got.per_task["rmse"]) == {"a", "b"}
    assert got["mae"] == pytest.approx((got.per_task["mae"]["a"] + got.per_task["mae"]["b"]) / 2)
    assert got.left_out == {"mae": {}, "rmse": {}, "r2": {}}


def test_compute_metrics_validation():
    with pytest.raises(ValueError, match="task must be"):
        compute_metrics("ranking", [1.0], [1.0])
    with pytest.raises(ValueError, match="shape"):
        compute_metrics("regression", np.zeros((4, 2)), np.zeros((4, 3)))
    with pytest.raises(ValueError, match="target names"):
        compute_metrics("regression", np.zeros((4, 2)), np.zeros((4, 2)), target_names=["a"])


def test_target_with_no_labels_is_left_out_of_average():
    y = np.array([[1.0, np.nan], [2.0, np.nan], [4.0, 7.0]])
    p = np.array([[1.5, 0.0], [2.0, 0.0], [3.0, 0.0]])
    got = compute_metrics("regression", y, p, target_names=["a", "b"])
    assert got["mae"] == pytest.approx((0.5 + 7.0) / 2) and got.left_out["mae"] == {}
    # R^2 needs two labels: "b" has one, so R^2 is "a"'s alone
    assert got.left_out["r2"] == {"b": "1 label, fewer than the 2 it needs"}
    assert got["r2"] == pytest.approx(got.per_task["r2"]["a"]) and math.isnan(got.per_task["r2"]["b"])
    y[2, 1] = np.nan
    assert compute_metrics("regression", y, p).left_out["rmse"] == {"1": "no labels"}


def test_higher_is_better_and_primary():
    assert higher_is_better("roc_auc") and higher_is_better("r2")
    assert not higher_is_better("rmse") and not higher_is_better("mae")
    assert scoring.PRIMARY_METRIC["classification"] == "roc_auc"
    assert scoring.PRIMARY_METRIC["regression"] == "mae"
    with pytest.raises(ValueError):
        higher_is_better("accuracy")


def test_mean_std_ci_t_distribution():
    from scipy import stats

    values = [0.81, 0.83, 0.82, 0.86, 0.80]
    mean, std, half = mean_std_ci(values)
    assert mean == pytest.approx(np.mean(values)) and std == pytest.approx(np.std(values, ddof=1))
    lo, hi = stats.t.interval(0.95, df=4, loc=np.mean(values), scale=stats.sem(values))
    assert half == pytest.approx((hi - lo) / 2)
    one = mean_std_ci([1.0])
    assert one[0] == 1.0 and math.isnan(one[1]) and math.isnan(one[2])
    with pytest.raises(ValueError):
        mean_std_ci([])
    with pytest.raises(ValueError, match="non-finite"):
        mean_std_ci([1.0, float("nan")])

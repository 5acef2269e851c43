"""Ensembles, split-conformal intervals, probability calibration (moleclip.training.trust.uncertainty) and their test
reports (moleclip.training.trust.report)."""

import json
import math

import numpy as np
import pytest

from moleclip.training.trust.uncertainty import (ConformalIntervals, ProbabilityCalibration, calibration_from_dict,
                                           conformal_quantile, ensemble, min_calibration_size)
from moleclip.training.trust.report import (brier_score, classification_report, expected_calibration_error,
                                                  regression_report, uncertainty_markdown)


def _sigmoid(z):
    return 1 / (1 + np.exp(-z))


# ------------------------------------------------------------------------------------------- ensemble
def test_ensemble_regression_mean_and_population_std():
    members = [np.array([[1.0, 10.0], [2.0, 0.0]]), np.array([[3.0, 10.0], [2.0, 4.0]])]
    out = ensemble(members)
    np.testing.assert_allclose(out.mean, [[2.0, 10.0], [2.0, 2.0]])
    np.testing.assert_allclose(out.spread, [[1.0, 0.0], [0.0, 2.0]])
    assert out.n_members == 2
    assert ensemble([np.array([1.0, 2.0])]).spread.tolist() == [[0.0], [0.0]]  # one member: spread 0, not NaN


def test_ensemble_classification_averages_probabilities_stably():
    out = ensemble([np.array([2.0, 1000.0]), np.array([-2.0, 1000.0])], task="classification")
    np.testing.assert_allclose(out.mean[0, 0], 0.0, atol=1e-12)  # p = (s(2) + s(-2)) / 2 = 0.5
    assert np.isfinite(out.mean).all() and out.mean[1, 0] > 100  # saturated members: no infinity
    np.testing.assert_allclose(out.spread[0, 0], abs(_sigmoid(2) - 0.5))
    p = (_sigmoid(1.0) + _sigmoid(3.0)) / 2
    np.testing.assert_allclose(ensemble([[1.0], [3.0]], task="classification").mean, [[np.log(p / (1 - p))]])


def test_ensemble_refusals():
    with pytest.raises(ValueError, match="different molecules"):
        ensemble([np.zeros(3), np.zeros(3)], rows=[np.array([0, 1, 2]), np.array([0, 1, 3])])
    with pytest.raises(ValueError, match="different shapes"):
        ensemble([np.zeros(3), np.zeros(4)])
    with pytest.raises(ValueError, match="at least one"):
        ensemble([])
    with pytest.raises(ValueError, match="non-finite"):
        ensemble([np.array([1.0, np.nan])])


# ------------------------------------------------------------------------------------------- conformal
def test_conformal_quantile_finite_sample_correction_by_hand():
    scores = [3.0, 1.0, 2.0, 5.0, 4.0]
    assert conformal_quantile(scores, 0.5) == 3.0  # k = ceil(6 * 0.5) = 3
    assert conformal_quantile(scores, 0.8) == 5.0  # k = ceil(4.8) = 5, not the 4th value ceil(5 * 0.8) would take
    assert conformal_quantile(scores, 0.9) == math.inf  # k = 6 > 5: no finite interval has the guarantee
    assert conformal_quantile(np.arange(1.0, 10.0), 0.9) == 9.0  # k = ceil(10 * 0.9) = 9 despite rounding
    assert conformal_quantile(np.arange(1.0, 20.0), 0.9) == 18.0


@pytest.mark.parametrize("coverage, expected", [(0.5, 1), (0.8, 4), (0.9, 9), (0.95, 19), (0.99, 99)])
def test_min_calibration_size(coverage, expected):
    assert min_calibration_size(coverage) == expected
    assert math.isfinite(conformal_quantile(np.ones(expected), coverage))
    if expected > 1:
        assert conformal_quantile(np.ones(expected - 1), coverage) == math.inf


def test_split_conformal_coverage_on_exchangeable_gaussian_data():
    # E[coverage] = k / (n + 1) = 46 / 51 = 0.902 for n = 50: exact for any exchangeable data. Dropping the
    # finite-sample correction (k = ceil(n c) = 45) would give 0.882, outside the tolerance.
    rng = np.random.default_rng(0)
    hits = []
    for _ in range(400):
        y = rng.normal(size=150)
        fitted = ConformalIntervals.fit(y[:50], np.zeros(50), method="plain")
        lower, upper = fitted.intervals(np.zeros(100))
        hits.append(np.mean((lower[:, 0] <= y[50:]) & (y[50:] <= upper[:, 0])))
    assert abs(np.mean(hits) - 46 / 51) < 0.01


def _heteroscedastic(rng, n):
    spread = rng.uniform(0.2, 2.0, size=n)
    return rng.normal(0.0, spread), np.zeros(n), spread


def _covered(fitted, y, mean, spread):
    lower, upper = fitted.intervals(mean, spread)
    return (lower[:, 0] <= y) & (y <= upper[:, 0])


def test_normalized_intervals_adapt_and_are_chosen_on_validation_only():
    rng = np.random.default_rng(1)
    y, mean, spread = _heteroscedastic(rng, 1200)
    cal, test = slice(0, 200), slice(200, None)
    auto = ConformalIntervals.fit(y[cal], mean[cal], spread[cal])
    plain = ConformalIntervals.fit(y[cal], mean[cal], spread[cal], method="plain")
    assert auto.methods == ["normalized"]
    sel = auto.targets[0]["selection"]
    assert sel["cv_mean_width_normalized"] < sel["cv_mean_width_plain"] and sel["folds"] == 5
    test_auto = regression_report(y[test], mean[test], auto, spread[test])["targets"]["0"]
    test_plain = regression_report(y[test], mean[test], plain, spread[test])["targets"]["0"]
    assert test_auto["mean_width"] < 0.9 * test_plain["mean_width"]
    assert 0.85 < test_auto["coverage"] < 0.95 and test_auto["spearman_spread_error"] > 0.3
    # conditional on the spread, only the normalized intervals keep their coverage
    wide = spread[test] > np.median(spread[test])
    covered_auto, covered_plain = (_covered(f, y[test], mean[test], spread[test]) for f in (auto, plain))
    gap_auto = covered_auto[~wide].mean() - covered_auto[wide].mean()
    gap_plain = covered_plain[~wide].mean() - covered_plain[wide].mean()
    assert abs(gap_auto) < 0.05 and gap_plain > 0.1, (gap_auto, gap_plain)
    assert auto.targets[0]["eps"] == pytest.approx(0.1 * np.median(spread[cal]))
    lower, upper = auto.intervals(mean[:3], spread[:3])
    q, eps = auto.targets[0]["quantile"], auto.targets[0]["eps"]
    np.testing.assert_allclose((upper - lower)[:, 0] / 2, q * (spread[:3] + eps))


def test_auto_keeps_plain_on_ties_and_without_spread():
    rng = np.random.default_rng(2)
    y = rng.normal(size=60)
    constant = ConformalIntervals.fit(y, np.zeros(60), np.full(60, 0.5))  # normalising by a constant changes nothing
    assert constant.methods == ["plain"]
    assert ConformalIntervals.fit(y, np.zeros(60)).methods == ["plain"]
    with pytest.warns(UserWarning, match="no ensemble spread"):
        zero = ConformalIntervals.fit(y, np.zeros(60), np.zeros(60), method="normalized")
    assert zero.methods == ["plain"] and "no ensemble spread" in zero.targets[0]["note"]


def test_too_few_labels_give_unbounded_intervals_and_nan_labels_are_skipped_per_target():
    labels = np.column_stack([np.arange(20.0), np.r_[np.arange(5.0), [np.nan] * 15]])
    with pytest.warns(UserWarning, match="fewer than the 9"):
        fitted = ConformalIntervals.fit(labels, np.zeros((20, 2)), coverage=0.9, method="plain",
                                        target_names=["a", "b"])
    assert [t["n_calibration"] for t in fitted.targets] == [20, 5]
    assert fitted.targets[0]["quantile"] == 18.0  # k = ceil(21 * 0.9) = 19: the 19th of 0..19
    assert fitted.targets[1]["quantile"] == math.inf
    assert "unbounded" in fitted.targets[1]["note"] and fitted.targets[0]["note"] == ""
    report = regression_report(np.ones((4, 2)), np.zeros((4, 2)), fitted)
    assert report["targets"]["b"]["mean_width"] == math.inf and report["targets"]["b"]["coverage"] == 1.0
    assert "unbounded" in uncertainty_markdown(report) and "| mean |" in uncertainty_markdown(report)


@pytest.mark.parametrize("coverage", [0, 1, 1.5, -0.1, "0.9", True])
def test_coverage_outside_the_open_unit_interval_is_refused(coverage):
    with pytest.raises(ValueError, match="coverage must lie strictly between 0 and 1"):
        ConformalIntervals.fit(np.zeros(20), np.zeros(20), coverage=coverage)


def test_conformal_refusals():
    with pytest.raises(ValueError, match="mismatched shapes"):
        ConformalIntervals.fit(np.zeros(20), np.zeros(21))
    with pytest.raises(ValueError, match="empty calibration"):
        ConformalIntervals.fit(np.zeros(0), np.zeros(0))
    with pytest.raises(ValueError, match="no calibration scores"):
        conformal_quantile([], 0.9)
    with pytest.raises(ValueError, match="needs the ensemble spread"):
        ConformalIntervals.fit(np.zeros(20), np.zeros(20), method="normalized")
    with pytest.raises(ValueError, match="method must be"):
        ConformalIntervals.fit(np.zeros(20), np.zeros(20), method="cqr")
    with pytest.raises(ValueError, match="non-finite"):
        ConformalIntervals.fit(np.zeros(20), np.full(20, np.nan))
    fitted = ConformalIntervals.fit(np.arange(20.0), np.zeros(20), np.ones(20), method="normalized")
    with pytest.raises(ValueError, match="needs the ensemble spread"):
        fitted.intervals(np.zeros(3))


def test_conformal_round_trip_through_json():
    rng = np.random.default_rng(3)
    y, mean, spread = _heteroscedastic(rng, 100)
    labels = np.column_stack([y, y[::-1]])
    labels[:95, 1] = np.nan
    with pytest.warns(UserWarning):
        fitted = ConformalIntervals.fit(labels, np.zeros((100, 2)), np.column_stack([spread, spread]))
    loaded = calibration_from_dict(json.loads(json.dumps(fitted.to_dict(), allow_nan=True)))
    assert loaded == fitted and loaded.targets[1]["quantile"] == math.inf
    for a, b in zip(loaded.intervals(mean[:5, None].repeat(2, 1), np.ones((5, 2))),
                    fitted.intervals(mean[:5, None].repeat(2, 1), np.ones((5, 2)))):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="expected a saved 'conformal_regression'"):
        ConformalIntervals.from_dict({**fitted.to_dict(), "kind": "probability_calibration"})
    with pytest.raises(ValueError, match="version"):
        ConformalIntervals.from_dict({**fitted.to_dict(), "version": 2})
    with pytest.raises(ValueError, match="unknown calibration kind"):
        calibration_from_dict({"kind": "nope"})


# ------------------------------------------------------------------------------------------- calibration
def _bernoulli(rng, true_logits):
    return (rng.random(true_logits.shape) < _sigmoid(true_logits)).astype(float)


def test_temperature_scaling_recovers_a_known_temperature():
    rng = np.random.default_rng(4)
    true = rng.normal(0, 2, size=20000)
    y = _bernoulli(rng, true)
    fitted = ProbabilityCalibration.fit(y, 3.0 * true, method="temperature")  # logits 3x too confident: T = 3
    assert fitted.targets[0]["temperature"] == pytest.approx(3.0, rel=0.05)
    np.testing.assert_allclose(fitted.probabilities(np.array([[3.0]])), [[_sigmoid(1.0)]], rtol=0.05)


def test_auto_picks_by_cross_validated_nll():
    rng = np.random.default_rng(5)
    z = rng.normal(0, 2, size=2000)
    well_specified = ProbabilityCalibration.fit(_bernoulli(rng, z / 2), z)
    assert well_specified.methods == ["temperature"]
    assert well_specified.targets[0]["temperature"] == pytest.approx(2, rel=0.2)
    step = (rng.random(2000) < np.where(z > 0, 0.9, 0.1)).astype(float)  # a step no temperature can draw
    stepped = ProbabilityCalibration.fit(step, z)
    sel = stepped.targets[0]["selection"]
    assert stepped.methods == ["isotonic"] and sel["cv_nll_isotonic"] < sel["cv_nll_temperature"]
    p = stepped.probabilities(np.array([-3.0, -1.0, 1.0, 3.0]))[:, 0]
    np.testing.assert_allclose(p, [0.1, 0.1, 0.9, 0.9], atol=0.06)
    assert np.all(np.diff(p) >= 0)


def test_single_class_validation_is_not_calibrated():
    with pytest.warns(UserWarning, match="one class only"):
        fitted = ProbabilityCalibration.fit(np.column_stack([np.ones(30), np.r_[np.ones(15), np.zeros(15)]]),
                                            np.linspace(-3, 3, 60).reshape(30, 2), target_names=["all", "mixed"])
    assert fitted.methods[0] == "identity" and "one class only" in fitted.targets[0]["note"]
    assert fitted.methods[1] in ("temperature", "isotonic")
    np.testing.assert_allclose(fitted.probabilities(np.array([[0.7, 0.0]]))[0, 0], _sigmoid(0.7))


def test_calibration_refusals_and_round_trip():
    with pytest.raises(ValueError, match="0, 1 or NaN"):
        ProbabilityCalibration.fit(np.array([0.0, 2.0]), np.zeros(2))
    with pytest.raises(ValueError, match="mismatched shapes"):
        ProbabilityCalibration.fit(np.zeros(4), np.zeros((4, 2)))
    with pytest.raises(ValueError, match="empty calibration"):
        ProbabilityCalibration.fit(np.zeros((0, 1)), np.zeros((0, 1)))
    rng = np.random.default_rng(6)
    z = rng.normal(0, 2, size=(300, 2))
    y = _bernoulli(rng, z)
    fitted = ProbabilityCalibration.fit(y, z, method="isotonic")
    with pytest.raises(ValueError, match="calibration has 2"):
        fitted.probabilities(np.zeros((3, 3)))
    loaded = calibration_from_dict(json.loads(json.dumps(fitted.to_dict())))
    assert loaded == fitted
    np.testing.assert_array_equal(loaded.probabilities(z), fitted.probabilities(z))
    assert fitted.probabilities(z).min() >= 0.5 / 301  # isotonic never claims certainty from 300 labels


# ------------------------------------------------------------------------------------------- reports
def test_brier_and_ece_by_hand():
    y, p = [0, 1, 1, 1], [0.1, 0.1, 0.9, 0.9]
    assert brier_score(y, p) == pytest.approx((0.01 + 0.81 + 0.01 + 0.01) / 4)
    # bin [0.1, 0.2): |0.5 - 0.1| x 2/4; bin [0.9, 1]: |1 - 0.9| x 2/4
    assert expected_calibration_error(y, p) == pytest.approx(0.25)
    assert expected_calibration_error([1, 0], [1.0, 0.0]) == 0.0  # p = 1 falls in the last bin, not past it
    assert expected_calibration_error([1, np.nan], [1.0, 0.3]) == 0.0  # missing labels skipped
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        expected_calibration_error([1, 0], [2.5, -1.0])  # logits, not probabilities


def test_ece_of_calibrated_and_overconfident_probabilities():
    rng = np.random.default_rng(7)
    p = rng.random(50000)
    y = (rng.random(50000) < p).astype(float)
    assert expected_calibration_error(y, p) < 0.01
    overconfident = _sigmoid(3 * np.log(p / (1 - p)))
    assert expected_calibration_error(y, overconfident) > 0.1


def test_classification_report_shows_calibration_helps_and_formats():
    rng = np.random.default_rng(8)
    true = rng.normal(0, 1.5, size=(4000, 2))
    y = _bernoulli(rng, true)
    members = [2.5 * true + rng.normal(0, 0.3, size=true.shape) for _ in range(3)]  # overconfident ensemble
    ens = ensemble(members, task="classification")
    fitted = ProbabilityCalibration.fit(y[:2000], ens.mean[:2000], target_names=["t1", "t2"])
    report = classification_report(y[2000:], ens.mean[2000:], fitted, ens.spread[2000:])
    for row in report["targets"].values():
        assert row["ece"] < row["ece_raw"] / 2 and row["brier"] < row["brier_raw"] and row["nll"] < row["nll_raw"]
    assert report["mean"]["n"] == 4000
    json.dumps(report)
    text = uncertainty_markdown(report)
    assert "| t1 |" in text and "| mean |" in text and "10 equal-width bins" in text


def test_coverage_shortfalls_flag_a_group_well_below_the_promise_not_a_chance_dip():
    from moleclip.training.trust.report import coverage_shortfalls

    def report(coverage, n):
        return {"target_coverage": 0.9, "targets": {"y": {"n": n, "coverage": coverage}}}

    assert coverage_shortfalls(report(0.5, 40)) == [("y", 0.5, 40)]  # activity cliffs: 0.46-0.59 for 0.90
    assert coverage_shortfalls(report(0.85, 20)) == []  # 17 of 20: a 32% chance under the promise
    assert coverage_shortfalls(report(0.75, 4)) == []  # 3 of 4 happens (35%) with four molecules
    assert coverage_shortfalls(report(float("nan"), 0)) == []  # no group molecule in the test part

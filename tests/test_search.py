"""Hyperparameter search: settings are chosen on validation only, summaries and tables are right."""

import json
import math

import numpy as np
import pytest
from scipy import stats

from moleclip.training.evaluation.search import (
    choose_setting,
    expand_grid,
    final_markdown,
    format_summary,
    public_view,
    run_search,
    search_markdown,
    setting_name,
    summarize_values,
)


def test_expand_grid_order_and_duplicates():
    grid = expand_grid({"head_lr": [1e-3, 1e-4, 1e-3], "augmentation": ["none", "default"]})
    assert grid == [
        {"head_lr": 1e-3, "augmentation": "none"}, {"head_lr": 1e-3, "augmentation": "default"},
        {"head_lr": 1e-4, "augmentation": "none"}, {"head_lr": 1e-4, "augmentation": "default"},
    ]
    with pytest.raises(ValueError, match="augmentation"):
        expand_grid({"head_lr": [1e-3], "augmentation": []})


def test_setting_name_names_only_varied_axes():
    setting = {"head_lr": 1e-4, "augmentation": "none", "weight_decay": 1e-5}
    assert setting_name(setting, ["head_lr", "augmentation"]) == "head_lr=0.0001,augmentation=none"
    assert setting_name(setting, []) == "default"


# Made-up scores in which validation and test disagree: setting B is best on test, setting C on validation (loss,
# lower is better, and metric, higher is better). A search that peeked at test scores would pick B.
SCORES = {
    "A": {"valid": (0.50, 0.70), "test": (0.45, 0.75)},
    "B": {"valid": (0.40, 0.75), "test": (0.10, 0.95)},
    "C": {"valid": (0.20, 0.90), "test": (0.60, 0.60)},
}


def fake_train(setting, seed):
    s = SCORES[setting["name"]]
    jitter = 0.01 * seed  # seeds differ a little, identically for every setting
    return {"valid": {"loss": s["valid"][0] + jitter, "roc_auc": s["valid"][1] - jitter},
            "test": {"loss": s["test"][0] + jitter, "roc_auc": s["test"][1] - jitter},
            "_weights": object()}


@pytest.mark.parametrize("key,mode", [("loss", "min"), ("roc_auc", "max")])
def test_search_selects_on_validation_not_test(key, mode):
    seen = []
    result = run_search([{"name": n} for n in SCORES], seeds=[1, 2, 3], train_fn=fake_train, select_key=key,
                        select_mode=mode, on_entry=lambda entry, leader: seen.append((entry["name"], leader)),
                        progress=False)
    chosen = result["entries"][result["chosen"]]
    assert chosen["setting"]["name"] == "C"
    # what a test-peeking search would have chosen, to be sure the case really separates the two rules
    test_best = (min if mode == "min" else max)(result["entries"], key=lambda e: e["summary"]["test"][key]["mean"])
    assert test_best["setting"]["name"] == "B"
    assert seen == [("name=A", True), ("name=B", True), ("name=C", True)]
    assert "validation" in result["selected_by"] and key in result["selected_by"]
    assert [r["seed"] for r in chosen["runs"]] == [1, 2, 3]


def test_leader_flag_follows_validation():
    order = [{"name": n} for n in ("C", "A", "B")]
    seen = []
    run_search(order, [1], fake_train, "loss", "min", on_entry=lambda e, leader: seen.append(leader), progress=False)
    assert seen == [True, False, False]


def test_non_finite_validation_ranks_last():
    entries = [{"summary": {"valid": {"roc_auc": {"mean": math.nan}}}},
               {"summary": {"valid": {"roc_auc": {"mean": 0.6}}}}]
    assert choose_setting(entries, "roc_auc", "max") == 1
    with pytest.raises(KeyError, match="rmse"):
        choose_setting(entries, "rmse", "min")


def test_summary_mean_std_and_t_interval():
    values = [1.0, 2.0, 4.0]
    s = summarize_values(values)
    assert s["mean"] == pytest.approx(np.mean(values))
    assert s["std"] == pytest.approx(np.std(values, ddof=1))
    half = stats.t.ppf(0.975, 2) * np.std(values, ddof=1) / np.sqrt(3)
    assert s["ci95"] == pytest.approx(half)
    text = format_summary(s)
    assert text.startswith("2.333 ± 1.528 [") and text.count(",") == 1
    missing = summarize_values([1.0, math.nan, 3.0])
    assert missing["n"] == 2 and missing["n_missing"] == 1 and missing["mean"] == pytest.approx(2.0)


def test_tables_and_json_view():
    result = run_search([{"name": n} for n in SCORES], [1, 2], fake_train, "loss", "min", progress=False)
    table = search_markdown(result, "loss", "roc_auc")
    lines = table.splitlines()
    assert len(lines) == 2 + len(SCORES)
    assert "**name=C** (chosen)" in table and "valid loss" in lines[0] and "test roc_auc" in lines[0]
    final = final_markdown(result["entries"][result["chosen"]]["summary"], ["roc_auc"], "ours",
                           paper={"metric": "roc_auc", "moleclip": "0.829±0.005", "fingerprint_baseline": "0.827±0.006"})
    assert "0.829±0.005" in final and "FP-MLP baseline (paper)" in final
    # private entries (weights) never reach the JSON file
    text = json.dumps(public_view(result))
    assert "_weights" not in text

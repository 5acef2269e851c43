"""Fixed splits from a column, an external test file, subgroup scores, per-molecule predictions, and the random
forest saved and used by `moleclip predict`: tiny tables, the fingerprint baselines, 2 epochs."""

import json

import numpy as np
import pandas as pd
import pytest

from moleclip.processing.splits import split_from_labels
from moleclip.training.evaluation.scoring import compute_metrics
from moleclip_cli.main import main as cli

SUFFIXES = ["", "O", "N", "Cl", "c1ccccc1", "C(=O)O"]
SMILES = ["C" * k + s for k in range(1, 9) for s in SUFFIXES]  # 48 small molecules
HEAVY = np.array([k + {"": 0, "O": 1, "N": 1, "Cl": 1, "c1ccccc1": 6, "C(=O)O": 3}[s] for k in range(1, 9)
                  for s in SUFFIXES], dtype=float)
PARTS = np.array(["Train", "training", "VAL", "test", "train", "dev"] * 8)  # mixed spellings, 1/6 test
EXTERNAL = ["CCCCCCCCCO", "CCCCCCCCCN", "c1ccccc1CCCCCCCC", "CCCCCCCCCC", "CCCCCCCCCCl"]


def finetune(out, data, *extra):
    argv = ["finetune", "--dataset", str(data), "--output-dir", str(out), "--target-columns", "heavy",
            "--no-progress", "--no-plots", *extra]
    assert cli(argv) == 0
    return json.loads((out / "results.json").read_text())


@pytest.fixture(scope="module")
def tables(tmp_path_factory):
    root = tmp_path_factory.mktemp("fixed")
    ids = [f"{i:03d}" for i in range(len(SMILES))]  # leading zeros: kept as written, never read as numbers
    main = root / "main.csv"
    pd.DataFrame({"id": ids, "smiles": SMILES, "heavy": HEAVY, "part": PARTS,
                  "cliff": (["yes", "no", "0", "TRUE"] * 12)}).to_csv(main, index=False)
    external = root / "external.csv"
    pd.DataFrame({"smiles": EXTERNAL, "heavy": [10, 10, 14, 10, 10], "cliff": [1, 0, 1, 0, 0]}).to_csv(external,
                                                                                                     index=False)
    return root, main, external


FP = ["--baseline", "fingerprint", "--seeds", "1", "2", "--epochs", "2", "--head-lr", "1e-3", "--augmentation", "none",
      "--batch-size", "8"]


def test_split_labels_spellings_carving_and_refusal():
    split, carved = split_from_labels(PARTS, SMILES)
    assert not carved and split.sizes == (24, 16, 8)
    assert set(split.test) == set(np.flatnonzero(PARTS == "test"))
    labels = np.where(PARTS == "test", "Testing", "train")
    a, carved = split_from_labels(labels, SMILES, "random", seed=1, fractions=(0.8, 0.1, 0.1))
    b, _ = split_from_labels(labels, SMILES, "random", seed=2, fractions=(0.8, 0.1, 0.1))
    assert carved and np.array_equal(a.test, b.test) and not np.array_equal(a.valid, b.valid)
    assert len(a.valid) == 4 and not set(a.valid) & set(a.train)  # 40 training rows, valid 1/9 of them
    with pytest.raises(ValueError, match=r"\['holdout'\] are not.*values found: \['Testing', 'holdout', 'train'\]"):
        split_from_labels(np.where(PARTS == "VAL", "holdout", labels), SMILES)


def test_fixed_split_external_test_and_subgroup(tmp_path, tables):
    root, main, external = tables
    results = finetune(tmp_path, main, *FP, "--split-column", "part", "--test-file", str(external),
                       "--group-column", "cliff")
    fixed = np.flatnonzero(PARTS == "test")
    assert results["protocol"]["split_sizes"] == {"1": [24, 16, 8], "2": [24, 16, 8]}
    assert "column 'part'" in results["protocol"]["split_source"]
    table = pd.read_csv(tmp_path / "predictions.csv", dtype={"id": str, "seed": str})
    assert table.seed.tolist() == ["1"] * 8 + ["2"] * 8 + ["ensemble"] * 8  # a shared split: the seeds' ensemble too
    assert table.id.tolist() == [f"{i:03d}" for i in fixed] * 3  # IDs as written, every seed the same test part
    member = table.predicted_heavy.to_numpy().reshape(3, 8)
    np.testing.assert_allclose(member[2], member[:2].mean(0), rtol=1e-5)
    np.testing.assert_allclose(table.predicted_heavy_spread[16:], member[:2].std(0), rtol=1e-4, atol=1e-6)
    assert table.predicted_heavy_lower[:16].isna().all() and table.predicted_heavy_lower[16:].notna().all()
    assert {"smiles", "part", "cliff", "heavy", "predicted_heavy"} <= set(table.columns)
    assert "measured_heavy" not in table.columns  # the measured target is the input's own column, named once
    cliff = np.array(["yes", "no", "0", "TRUE"] * 12)[fixed]
    for run in results["final"]["runs"]:
        seed = run["seed"]
        own = pd.read_csv(next((tmp_path / "runs" / "search").glob(f"*/seed_{seed}/test_predictions.csv")))
        in_group = np.isin(cliff, ["yes", "TRUE"])
        expected = compute_metrics("regression", own.heavy.to_numpy()[in_group, None],
                                   own.predicted_heavy.to_numpy()[in_group, None])
        assert run["test_group"]["n"] == in_group.sum() == 4
        assert run["test_group"]["mae"] == pytest.approx(expected["mae"], rel=1e-5)
        ext = pd.read_csv(next((tmp_path / "runs" / "search").glob(f"*/seed_{seed}/external_predictions.csv")))
        assert ext.smiles.tolist() == EXTERNAL
        assert run["external"]["mae"] == pytest.approx(np.mean(np.abs(ext.predicted_heavy - ext.heavy)),
                                                       rel=1e-5)
    assert results["final"]["external_summary"]["mae"]["n"] == 2
    # the served ensemble (the seeds' mean prediction) on the subgroup's test rows and on the external file
    served, in_group = results["final"]["ensemble"], np.isin(cliff, ["yes", "TRUE"])
    assert served["test_group"]["n"] == 4 and served["test_group"]["mae"] == pytest.approx(
        np.mean(np.abs(member[2][in_group] - HEAVY[fixed][in_group])), rel=1e-5)
    ext_mean = np.mean([pd.read_csv(next((tmp_path / "runs" / "search").glob(f"*/seed_{s}/external_predictions.csv")))
                        .predicted_heavy for s in (1, 2)], axis=0)
    assert served["external"]["mae"] == pytest.approx(np.mean(np.abs(ext_mean - ext.heavy)), rel=1e-5)
    assert results["dataset"]["external_in_training"] == 1  # c1ccccc1CCCCCCCC is CCCCCCCCc1ccccc1
    md = (tmp_path / "results.md").read_text()
    assert "External test set" in md and "never used for any choice" in md and "Test subgroup" in md


def test_train_test_column_carves_validation_per_seed(tmp_path, tables):
    root, main, _ = tables
    frame = pd.read_csv(main, dtype=str)
    frame["part"] = np.where(PARTS == "test", "test", "train")
    path = tmp_path / "two_parts.csv"
    frame.to_csv(path, index=False)
    results = finetune(tmp_path / "out", path, *FP, "--split-column", "part", "--split", "random")
    assert "carved from the training rows" in results["protocol"]["split_source"]
    assert "carved from the training rows" in (tmp_path / "out" / "results.md").read_text()
    table = pd.read_csv(tmp_path / "out" / "predictions.csv")
    assert table[table.seed == 1].smiles.tolist() == table[table.seed == 2].smiles.tolist()


def test_bad_split_and_group_values_fail_clearly(tmp_path, tables, capsys):
    root, main, _ = tables
    for option, column, message in (("--split-column", "nope", "no such column"),
                                    ("--split-column", "id", "values found"),
                                    ("--group-column", "heavy", "1/true/yes")):
        argv = ["finetune", "--dataset", str(main), "--output-dir", str(tmp_path / column), "--target-columns",
                "heavy", "--no-progress", *FP, option, column]
        assert cli(argv) == 2
        assert message in capsys.readouterr().err


def test_random_forest_is_saved_and_predicts_with_trust_pickle(tmp_path, tables, capsys):
    root, main, _ = tables
    results = finetune(tmp_path / "rf", main, "--baseline", "random_forest", "--seeds", "1", "2",
                       "--rf-estimators", "10", "--split-column", "part")
    model = tmp_path / "rf" / "model"
    assert (model / "random_forest.joblib").is_file()
    new = tmp_path / "new.csv"
    pd.DataFrame({"smiles": [SMILES[i] for i in np.flatnonzero(PARTS == "test")]}).to_csv(new, index=False)
    out = tmp_path / "pred.csv"
    capsys.readouterr()
    assert cli(["predict", "--model", str(model), "--input", str(new), "--output", str(out), "--no-progress"]) == 2
    assert "--trust-pickle only if you made" in capsys.readouterr().err.replace("\n", " ") and not out.exists()
    assert cli(["predict", "--model", str(model), "--input", str(new), "--output", str(out), "--no-progress",
                "--trust-pickle", "--no-uncertainty"]) == 0  # the saved seed's own forest
    seed = results["saved_model"]["seed"]
    own = pd.read_csv(next((tmp_path / "rf" / "runs").glob(f"*/*/seed_{seed}/test_predictions.csv")))
    np.testing.assert_allclose(pd.read_csv(out).predicted_heavy, own.predicted_heavy, rtol=1e-6)
    combined = pd.read_csv(tmp_path / "rf" / "predictions.csv", dtype={"seed": str})
    assert len(combined) == 24  # two forests and their ensemble
    assert cli(["predict", "--model", str(model), "--input", str(new), "--output", str(out), "--no-progress",
                "--trust-pickle", "--uncertainty"]) == 0
    ens = combined[combined.seed == "ensemble"]
    np.testing.assert_allclose(pd.read_csv(out).predicted_heavy_upper, ens.predicted_heavy_upper, rtol=1e-6)


def test_subgroup_summary_keeps_a_seed_whose_test_part_holds_the_group_when_the_first_does_not():
    """Random splits drawn per seed: seed 1's test part may hold no row of the subgroup (n 0, no scores) while seed 2's
    does; the summary must still give seed 2's scores, not an empty table."""
    from moleclip.training.finetuning.job import _part_summaries

    runs = [{"seed": 1, "test_group": {"n": 0}},
            {"seed": 2, "test_group": {"n": 3, "mae": 0.5, "rmse": 0.7, "r2": 0.1}}]
    summary = _part_summaries(runs)["group_summary"]
    assert summary["n"] == [0, 3]
    assert set(summary) == {"n", "mae", "rmse", "r2"}
    assert summary["mae"]["mean"] == 0.5 and summary["mae"]["n"] == 1 and summary["mae"]["n_missing"] == 1


def test_input_columns_the_prediction_tables_would_overwrite_are_refused_before_training(tmp_path, tables, capsys):
    """predictions.csv keeps every input column beside predicted_<t>, its interval and seed: a table
    already holding one of those (an earlier model's predictions, a seed column) would lose it without a word."""
    root, main, external = tables
    for where, column in ((main, "seed"), (main, "predicted_heavy"), (external, "predicted_heavy_upper")):
        table = pd.read_csv(where, dtype=str)
        table[column] = "x"
        changed = tmp_path / f"{column}_{where.name}"
        table.to_csv(changed, index=False)
        data, test_file = (changed, external) if where == main else (main, changed)
        out = tmp_path / f"out_{column}"
        code = cli(["finetune", "--dataset", str(data), "--test-file", str(test_file), "--output-dir", str(out),
                    "--target-columns", "heavy", "--no-progress", "--no-plots", *FP])
        assert code == 2 and not out.exists()
        err = capsys.readouterr().err
        assert f"has column(s) {column}, which the job's prediction tables write" in err and "rename them" in err


def test_svr_is_saved_without_pickle_and_predicts(tmp_path, tables, capsys):
    root, main, _ = tables
    results = finetune(tmp_path / "svr", main, "--baseline", "svr", "--seeds", "1", "2", "--split-column", "part")
    model = tmp_path / "svr" / "model"
    assert (model / "tanimoto_svm.npz").is_file() and not list(model.rglob("*.joblib"))
    assert all(run["chosen_C"]["heavy"] in (0.1, 1.0, 10.0, 100.0) for run in results["final"]["runs"])
    new = tmp_path / "new.csv"
    pd.DataFrame({"smiles": [SMILES[i] for i in np.flatnonzero(PARTS == "test")]}).to_csv(new, index=False)
    out = tmp_path / "pred.csv"
    assert cli(["predict", "--model", str(model), "--input", str(new), "--output", str(out), "--no-progress",
                "--no-uncertainty"]) == 0  # no --trust-pickle: nothing in the folder runs pickle
    seed = results["saved_model"]["seed"]
    own = pd.read_csv(next((tmp_path / "svr" / "runs").glob(f"*/*/seed_{seed}/test_predictions.csv")))
    np.testing.assert_allclose(pd.read_csv(out).predicted_heavy, own.predicted_heavy, rtol=1e-6)
    assert cli(["predict", "--model", str(model), "--input", str(new), "--output", str(out), "--no-progress",
                "--uncertainty"]) == 0
    combined = pd.read_csv(tmp_path / "svr" / "predictions.csv", dtype={"seed": str})
    ens = combined[combined.seed == "ensemble"]
    np.testing.assert_allclose(pd.read_csv(out).predicted_heavy_upper, ens.predicted_heavy_upper, rtol=1e-6)
    card = (model / "README.md").read_text()
    assert "Tanimoto kernel" in card and "--trust-pickle" not in card

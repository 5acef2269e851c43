"""The ensemble, its calibration on validation and the applicability domain, from `moleclip finetune` to
`moleclip predict --uncertainty --domain`: tiny tables, fingerprint baselines and the frozen tiny preset, 2 epochs."""

import json

import numpy as np
import pandas as pd
import pytest

from moleclip.training.trust.uncertainty import conformal_quantile
from moleclip_cli.main import main as cli

SUFFIXES = ["", "O", "N", "Cl", "c1ccccc1", "C(=O)O"]
SMILES = ["C" * k + s for k in range(1, 9) for s in SUFFIXES]  # 48 small molecules
HEAVY = np.array([k + {"": 0, "O": 1, "N": 1, "Cl": 1, "c1ccccc1": 6, "C(=O)O": 3}[s] for k in range(1, 9)
                  for s in SUFFIXES], dtype=float)
PARTS = np.array(["train", "valid", "train", "test", "valid", "train"] * 8)  # 24 / 16 / 8, the same for every seed
FAR = "FC(F)(F)C(F)(F)C(F)(F)S(=O)(=O)O"  # nothing like the alkyl chains it was trained on
FP = ["--baseline", "fingerprint", "--seeds", "1", "2", "3", "--epochs", "2", "--head-lr", "1e-3", "--augmentation",
      "none", "--batch-size", "8", "--no-progress", "--no-plots", "--target-columns", "heavy"]


def finetune(out, data, *extra):
    assert cli(["finetune", "--dataset", str(data), "--output-dir", str(out), *extra]) == 0
    return json.loads((out / "results.json").read_text())


def predict(model, smiles, out, *extra):
    path = out.parent / (out.stem + "_in.csv")
    pd.DataFrame({"name": [f"m{i}" for i in range(len(smiles))], "smiles": smiles}).to_csv(path, index=False)
    assert cli(["predict", "--model", str(model), "--input", str(path), "--output", str(out), "--no-progress",
                *extra]) == 0
    return pd.read_csv(out)


def table(path, heavy=HEAVY, parts=PARTS):
    pd.DataFrame({"smiles": SMILES, "heavy": heavy, "part": parts}).to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    root = tmp_path_factory.mktemp("trust")
    results = finetune(root / "out", table(root / "data.csv"), *FP, "--split-column", "part")
    return root, results


def test_shared_split_ensemble_is_calibrated_on_validation(shared):
    root, results = shared
    model = root / "out" / "model"
    trust = json.loads((model / "uncertainty.json").read_text())
    assert trust["scope"] == "ensemble" and trust["members"] == ["ensemble/seed_1", "ensemble/seed_2",
                                                                 "ensemble/seed_3"]
    # the calibration quantile is the conformal quantile of the ensemble's validation residuals, recomputed here
    valid = [SMILES[i] for i in np.flatnonzero(PARTS == "valid")]
    members = np.stack([predict(model / f, valid, root / f"v{k}.csv").predicted_heavy.to_numpy()
                        for k, f in enumerate(trust["members"])])
    mean, spread = members.mean(0), members.std(0)
    target = trust["calibration"]["targets"][0]
    residual = np.abs(HEAVY[PARTS == "valid"] - mean)
    score = residual if target["method"] == "plain" else residual / (spread + target["eps"])
    assert target["quantile"] == pytest.approx(conformal_quantile(score, 0.9), rel=1e-5)
    # predict --uncertainty: the ensemble mean and its interval; on the test part, the reported coverage
    test = np.flatnonzero(PARTS == "test")
    out = predict(model, [SMILES[i] for i in test], root / "test.csv", "--uncertainty")
    combined = pd.read_csv(root / "out" / "predictions.csv", dtype={"seed": str})
    ens = combined[combined.seed == "ensemble"]
    np.testing.assert_allclose(out.predicted_heavy, ens.predicted_heavy, rtol=1e-5)
    np.testing.assert_allclose(out.predicted_heavy_lower, ens.predicted_heavy_lower, rtol=1e-5)
    inside = (out.predicted_heavy_lower <= HEAVY[test]) & (HEAVY[test] <= out.predicted_heavy_upper)
    report = results["trust"]["uncertainty"]
    assert report["targets"]["heavy"]["coverage"] == pytest.approx(inside.mean())
    assert report["target_coverage"] == 0.9 and report["scope"] == "ensemble"
    assert "Conformal intervals, target coverage 0.9" in (root / "out" / "results.md").read_text()


def test_the_served_ensembles_test_score_is_reported_beside_the_mean_over_seeds(shared):
    # what predict serves, scored on the test part, must be the number the results give for the ensemble
    from moleclip.training.evaluation.scoring import compute_metrics

    root, results = shared
    test = np.flatnonzero(PARTS == "test")
    served = predict(root / "out" / "model", [SMILES[i] for i in test], root / "served.csv", "--uncertainty")
    expected = compute_metrics("regression", HEAVY[test], served.predicted_heavy.to_numpy())
    ensemble = results["final"]["ensemble"]
    assert ensemble["n_members"] == 3
    for metric in ("rmse", "mae", "r2"):
        assert ensemble["test"][metric] == pytest.approx(expected[metric], rel=1e-5)
    mean_rmse = np.mean([run["test"]["rmse"] for run in results["final"]["runs"]])
    assert ensemble["test"]["rmse"] != pytest.approx(mean_rmse, rel=1e-6)  # another measurement than the mean
    row = next(line for line in (root / "out" / "results.md").read_text().splitlines() if "predict serves" in line)
    assert row.startswith("| FP-MLP baseline (this run): ensemble of the 3 seeds' models") and \
        f"{ensemble['test']['rmse']:.3f}" in row
    assert "FP-MLP baseline (this run): mean over seeds" in results["final_table"]


def test_interval_coverage_is_reported_per_group_and_a_shortfall_is_warned_about(tmp_path):
    # the group's test labels far off (an activity cliff): its intervals cover none of them, the rest as before
    test = PARTS == "test"
    cliff = test & (np.arange(len(SMILES)) % 12 == 3)  # half the test rows
    heavy = np.where(cliff, HEAVY + 100.0, HEAVY)
    path = tmp_path / "cliffs.csv"
    pd.DataFrame({"smiles": SMILES, "heavy": heavy, "part": PARTS, "cliff": cliff.astype(int)}).to_csv(path, index=False)
    with pytest.warns(UserWarning) as caught:
        results = finetune(tmp_path / "out", path, *FP, "--split-column", "part", "--group-column", "cliff")
    group = results["trust"]["uncertainty_group"]["targets"]["heavy"]
    combined = pd.read_csv(tmp_path / "out" / "predictions.csv", dtype={"seed": str})
    ens = combined[(combined.seed == "ensemble") & (combined.cliff == 1)]
    inside = (ens.predicted_heavy_lower <= ens.heavy) & (ens.heavy <= ens.predicted_heavy_upper)
    assert group["n"] == cliff.sum() == 4 and group["coverage"] == pytest.approx(inside.mean()) == 0.0
    shortfall = [str(w.message) for w in caught if "--group-column cliff" in str(w.message)]
    assert len(shortfall) == 1 and "covered only 0.00 of the group's 4 test predictions" in shortfall[0]
    assert "The same on the test subgroup (rows where `cliff` is true)" in (tmp_path / "out" / "results.md").read_text()


def test_test_labels_never_change_calibration_or_domain(shared, tmp_path):
    root, _ = shared
    heavy = HEAVY.copy()
    heavy[PARTS == "test"] += 100.0  # only the test labels differ
    finetune(tmp_path / "out", table(tmp_path / "data.csv", heavy), *FP, "--split-column", "part")
    for name in ("uncertainty.json", "applicability.json"):
        assert (tmp_path / "out" / "model" / name).read_text() == (root / "out" / "model" / name).read_text()
    report = json.loads((tmp_path / "out" / "results.json").read_text())["trust"]["uncertainty"]
    assert report["targets"]["heavy"]["coverage"] == 0.0  # ... and the test report sees them


def test_domain_columns_flag_a_foreign_molecule(shared):
    root, results = shared
    model = root / "out" / "model"
    train = int(np.flatnonzero(PARTS == "train")[3])
    out = predict(model, [SMILES[train], FAR, "not a molecule"], root / "domain.csv", "--domain", "--uncertainty")
    assert out.in_domain.tolist()[:2] == [True, False] and pd.isna(out.in_domain[2])
    assert out.nearest_similarity[0] == 1.0 and out.nearest_similarity[1] < 0.2
    assert out.nearest_training_smiles[0] == SMILES[train] and out.nearest_training_heavy[0] == HEAVY[train]
    app = results["trust"]["applicability"]
    assert app["n"] == 8 and 0 <= app["fraction_out_of_domain"] <= 1
    assert "applicability domain" in (root / "out" / "results.md").read_text()


def test_per_seed_splits_calibrate_each_member_on_its_own_validation(tmp_path):
    frame = pd.DataFrame({"smiles": SMILES, "big": (HEAVY > 5).astype(int)})
    frame.to_csv(tmp_path / "cls.csv", index=False)
    args = [a if a != "heavy" else "big" for a in FP]
    results = finetune(tmp_path / "out", tmp_path / "cls.csv", *args, "--split", "random", "--fractions", "0.5", "0.3",
                       "0.2")
    assert results["trust"]["scope"] == "members" and results["trust"]["uncertainty"]["n_members"] == 3
    assert results["trust"]["uncertainty"]["targets"]["big"]["n"] == 27  # 3 seeds x 9 own test molecules
    combined = pd.read_csv(tmp_path / "out" / "predictions.csv", dtype={"seed": str})
    assert set(combined.seed) == {"1", "2", "3"} and combined.calibrated_probability_big.between(0, 1).all()
    out = predict(tmp_path / "out" / "model", SMILES[:5], tmp_path / "p.csv", "--uncertainty")
    assert {"probability_big", "probability_big_spread", "calibrated_probability_big"} <= set(out.columns)
    # the seeds' test parts differ: the served ensemble has none held out, and the results say so, with no number
    assert results["final"]["ensemble"]["test"] is None and "no held-out test part" in results["final"]["ensemble"]["note"]
    assert "has no test score here" in (tmp_path / "out" / "results.md").read_text()
    assert "predict serves" not in results["final_table"]


def test_frozen_moleclip_ensemble_and_old_folders(tmp_path):
    data = table(tmp_path / "data.csv")
    finetune(tmp_path / "out", data, "--model", "tiny", "--freeze-encoder", "--seeds", "1", "2", "--epochs", "2",
             "--head-lr", "1e-3", "--augmentation", "none", "--batch-size", "8", "--no-progress", "--no-plots",
             "--target-columns", "heavy", "--split-column", "part")
    model = tmp_path / "out" / "model"
    # frozen: every seed shares model/'s encoder, so a member is its head alone
    assert sorted(p.name for p in (model / "ensemble" / "seed_2").iterdir()) == ["head.safetensors", "member.json"]
    test = [SMILES[i] for i in np.flatnonzero(PARTS == "test")]
    out = predict(model, test, tmp_path / "p.csv", "--uncertainty", "--domain")
    combined = pd.read_csv(tmp_path / "out" / "predictions.csv", dtype={"seed": str})
    members = combined[combined.seed != "ensemble"].predicted_heavy.to_numpy().reshape(2, -1)  # from training time
    np.testing.assert_allclose(out.predicted_heavy, members.mean(0), rtol=1e-4)
    np.testing.assert_allclose(out.predicted_heavy_spread, members.std(0), rtol=1e-3, atol=1e-5)
    assert out.in_domain.notna().all()
    # the members are heads on model/'s encoder: one encoder in memory, and one encoder pass per batch for all of them
    from moleclip.training.inference.prediction import Predictor

    predictor = Predictor.load(str(model))
    members = [kind.model for _, kind in predictor._member_kinds()]
    assert all(m.moleclip is predictor.model.moleclip for m in members)
    passes = []
    predictor.model.moleclip.register_forward_hook(lambda *_: passes.append(1))
    again = predictor.predict(test, batch_size=4, progress=False)
    assert len(passes) == -(-len(test) // 4)
    np.testing.assert_allclose(again.columns["predicted_heavy"], out.predicted_heavy, rtol=1e-5)
    np.testing.assert_allclose(again.columns["predicted_heavy_spread"], out.predicted_heavy_spread, rtol=1e-4,
                               atol=1e-6)
    (model / "uncertainty.json").unlink()  # a folder from before ensembles were kept
    assert cli(["predict", "--model", str(model), "--input", str(tmp_path / "p_in.csv"), "--output",
                str(tmp_path / "q.csv"), "--uncertainty", "--no-progress"]) == 2


def test_shared_split_classification_calibrates_the_ensemble_logit(tmp_path):
    frame = pd.DataFrame({"smiles": SMILES, "big": (HEAVY > 5).astype(int), "part": PARTS})
    frame.to_csv(tmp_path / "cls.csv", index=False)
    results = finetune(tmp_path / "out", tmp_path / "cls.csv", *[a if a != "heavy" else "big" for a in FP],
                       "--split-column", "part")
    assert results["trust"]["scope"] == "ensemble"
    target = json.loads((tmp_path / "out" / "model" / "uncertainty.json").read_text())["calibration"]["targets"][0]
    combined = pd.read_csv(tmp_path / "out" / "predictions.csv", dtype={"seed": str})
    ens = combined[combined.seed == "ensemble"]
    members = combined[combined.seed != "ensemble"].probability_big.to_numpy().reshape(3, -1)
    np.testing.assert_allclose(ens.probability_big, members.mean(0), rtol=1e-5)  # probabilities are averaged
    if target["method"] == "temperature":
        logit = np.log(ens.probability_big) - np.log1p(-ens.probability_big)
        np.testing.assert_allclose(ens.calibrated_probability_big,
                                   1 / (1 + np.exp(-logit / target["temperature"])), rtol=1e-4)
    report = results["trust"]["uncertainty"]["targets"]["big"]
    assert report["n"] == 8 and 0 <= report["brier"] <= 1 and 0 <= report["ece"] <= 1


def test_run_keeper_keeps_every_seed_of_the_leading_setting_only():
    from moleclip.training.finetuning.run import Member, RunKeeper

    keeper = RunKeeper("loss", "min")
    for name, losses in (("a", [1.0, 3.0]), ("b", [2.0, 0.5]), ("c", [9.0, 9.0])):
        for seed, loss in zip((1, 2), losses):
            keeper.offer(Member({"seed": seed, "valid": {"loss": loss}}, {"x": name}, name, rows={}, predictions={},
                                weights=f"{name}{seed}"))
        mean = {"a": 2.0, "b": 1.25, "c": 9.0}[name]
        keeper.entry_done({"name": name}, is_leader=mean == min(v for k, v in {"a": 2.0, "b": 1.25, "c": 9.0}.items()
                                                                if k <= name))
    assert keeper.leader.best.weights == "b2" and [m.weights for m in keeper.leader.members] == ["b1", "b2"]
    assert not keeper.candidates  # nothing of the settings that lost is held


def test_full_finetuning_members_are_complete_folders(tmp_path):
    data = table(tmp_path / "data.csv")
    finetune(tmp_path / "out", data, "--model", "tiny", "--init-factor", "5", "--seeds", "1", "2", "--epochs", "1",
             "--head-lr", "1e-3", "--augmentation", "none", "--batch-size", "16", "--no-progress", "--no-plots",
             "--target-columns", "heavy", "--split-column", "part")
    model = tmp_path / "out" / "model"
    assert (model / "ensemble" / "seed_1" / "model.safetensors").is_file()  # the encoders differ: whole models
    test = [SMILES[i] for i in np.flatnonzero(PARTS == "test")]
    out = predict(model, test, tmp_path / "p.csv", "--uncertainty")
    combined = pd.read_csv(tmp_path / "out" / "predictions.csv", dtype={"seed": str})
    ens = combined[combined.seed == "ensemble"]
    np.testing.assert_allclose(out.predicted_heavy, ens.predicted_heavy, rtol=1e-4)
    np.testing.assert_allclose(out.predicted_heavy_upper, ens.predicted_heavy_upper, rtol=1e-4)


def test_a_call_in_which_no_molecule_is_usable_has_the_same_columns(shared):
    from moleclip.training.inference.prediction import Predictor

    root, _ = shared
    predictor = Predictor.load(str(root / "out" / "model"))
    some = predictor.predict([SMILES[0], "not a molecule"], progress=False)
    none = predictor.predict(["not a molecule", "C1CC"], progress=False)
    assert list(none.columns) == list(some.columns)
    assert all(np.isnan(np.asarray(column, dtype=float)).all() for name, column in none.columns.items()
               if name.startswith("predicted_"))


def test_confident_classifier_members_reach_the_ensemble_as_logits(tmp_path):
    # A member with logits beyond float32's sigmoid (|z| > ~17) or the 1e-6 clip (|z| > 13.8): its probability has
    # lost the logit that finetune calibrated on; predict must combine the members' own logits.
    import torch

    from moleclip.processing.fingerprints import morgan_fingerprints
    from moleclip.training.inference.prediction import Predictor
    from moleclip.training.trust.uncertainty import calibration_from_dict, ensemble

    frame = pd.DataFrame({"smiles": SMILES, "big": (HEAVY > 5).astype(int), "part": PARTS})
    frame.to_csv(tmp_path / "cls.csv", index=False)
    finetune(tmp_path / "out", tmp_path / "cls.csv", *[a if a != "heavy" else "big" for a in FP],
             "--split-column", "part")
    predictor = Predictor.load(str(tmp_path / "out" / "model"))
    members = [kind.model for _, kind in predictor._member_kinds()]
    bits = torch.as_tensor(morgan_fingerprints(SMILES, radius=members[0].settings["radius"],
                                               n_bits=members[0].settings["in_features"]).bits, dtype=torch.float32)
    with torch.no_grad():
        for model in members:
            last = model.head.layers[-1]
            last.weight.mul_(200.0)  # very confident members
            last.bias.mul_(200.0)
        logits = [model(features=bits).logits.double().numpy() for model in members]
    assert max(np.abs(z).max() for z in logits) > 20
    # an over-confident ensemble is what temperature scaling softens (T > 1): there the logit beyond the clip matters
    target = predictor.trust["calibration"]["targets"][0]
    target.update(method="temperature", temperature=4.0)
    ens = ensemble(logits, "classification")
    expected = calibration_from_dict(predictor.trust["calibration"]).probabilities(ens.mean)[:, 0]
    got = predictor.predict(SMILES, progress=False).columns["calibrated_probability_big"]
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-9)


def test_prediction_and_the_finetuning_trust_do_not_import_each_other():
    # prediction reads what finetuning/trust.py wrote, and trust.py imported a folder name back from prediction.py:
    # an import circle that made the two modules load in one order only
    import ast
    from pathlib import Path

    import moleclip.training.finetuning.trust as trust

    tree = ast.parse(Path(trust.__file__).read_text())
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert "moleclip.training.inference.prediction" not in imported

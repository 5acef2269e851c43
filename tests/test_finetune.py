"""Finetuning with the paper's protocol, end to end on tiny data: frozen and full modes, the fingerprint and forest
baselines, masked multi-task scores, best-validation-epoch reporting, determinism, R-groups, --init-from, Hub push."""

import csv
import json
import math
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from moleclip import MoleCLIPForPropertyPrediction
from moleclip.training.evaluation.scoring import compute_metrics

sys.path.insert(0, str(Path(__file__).resolve().parent))

SUFFIXES = ["", "O", "N", "Cl", "c1ccccc1", "C(=O)O"]
SMILES = ["C" * k + s for k in range(1, 9) for s in SUFFIXES]  # 48 small molecules
HEAVY = np.array([k + {"": 0, "O": 1, "N": 1, "Cl": 1, "c1ccccc1": 6, "C(=O)O": 3}[s] for k in range(1, 9) for s in SUFFIXES],
                 dtype=float)

TINY = ["--model", "tiny", "--no-progress", "--no-plots"]


def main(argv, hub_api=None) -> int:
    """`moleclip finetune ARGV` in this process."""
    from moleclip_cli.finetune import build_parser, run

    return run(build_parser().parse_args(argv), hub_api=hub_api)


@pytest.fixture(scope="module")
def regression_csv(tmp_path_factory):
    """Two targets, the second with gaps: heavy atoms (learnable from any picture of the molecule) and its parity."""
    path = tmp_path_factory.mktemp("data") / "toy_regression.csv"
    second = (HEAVY % 2).astype(object)
    second[::3] = ""
    pd.DataFrame({"smiles": SMILES, "heavy": HEAVY, "parity": second}).to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def classification_csv(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "toy_classification.csv"
    big = (HEAVY > 5).astype(float).astype(object)
    has_o = np.array([float("O" in s) for s in SMILES], dtype=object)
    has_o[1::4] = ""  # missing labels
    pd.DataFrame({"smiles": SMILES, "big": big, "has_o": has_o}).to_csv(path, index=False)
    return path


FIXTURE_TARGETS = {"toy_regression.csv": ["heavy", "parity"], "toy_classification.csv": ["big", "has_o"]}


def finetune(out, data, *extra):
    targets = FIXTURE_TARGETS.get(Path(str(data)).name, [])
    if targets and "--target-columns" not in extra:  # a table's targets are never guessed from several columns
        extra = (*extra, "--target-columns", *targets)
    argv = ["--dataset", str(data), "--output-dir", str(out), "--split", "random", *TINY, *extra]
    assert main(argv) == 0
    return json.loads((out / "results.json").read_text())


def saved_predictions(model_dir, smiles):
    from moleclip.training.serving.hub import load_processor
    from moleclip.training.inference.engine import predict
    from moleclip.training.kinds import ImageKind

    model = MoleCLIPForPropertyPrediction.from_pretrained(model_dir).eval()
    pred, kept, skipped = predict(ImageKind(model, load_processor(str(model_dir))), smiles, progress=False, device="cpu")
    assert not skipped
    return pred, model


@pytest.fixture(scope="module")
def frozen_run(tmp_path_factory, regression_csv):
    out = tmp_path_factory.mktemp("frozen")
    results = finetune(out, regression_csv, "--freeze-encoder", "--seeds", "1", "2", "--epochs", "4",
                       "--head-lr", "1e-3", "1e-4", "--augmentation", "none", "default", "--batch-size", "16")
    return out, results


def test_frozen_mode_trains_only_the_head_and_writes_everything(frozen_run):
    out, results = frozen_run
    assert (out / "results.md").is_file() and (out / "model" / "model.safetensors").is_file()
    assert results["mode"] == "frozen" and results["protocol"]["select_key"] == "valid_loss"
    assert len(results["search"]["entries"]) == 4  # 2 head lrs x 2 augmentation presets
    assert all(len(entry["runs"]) == 2 for entry in results["search"]["entries"])
    # The encoder is the randomly initialised `tiny` preset (seeded by --backbone-seed): untouched by training.
    torch.manual_seed(0)
    from accelerate.utils import set_seed

    set_seed(0)
    from moleclip.training.serving.hub import load_backbone

    fresh = load_backbone("tiny", MoleCLIPForPropertyPrediction, num_targets=2)
    saved = MoleCLIPForPropertyPrediction.from_pretrained(out / "model")
    for (name, a), b in zip(fresh.moleclip.state_dict().items(), saved.moleclip.state_dict().values()):
        torch.testing.assert_close(a, b, msg=name)
    card = (out / "model" / "README.md").read_text()
    assert "model-index" in card and "random split" in card and "valid" in card.lower()
    md = (out / "results.md").read_text()
    assert "(chosen)" in md and "95%" in md


def test_reported_scores_are_the_saved_models_masked_multitask_scores(frozen_run, regression_csv):
    out, results = frozen_run
    saved = results["saved_model"]
    data = pd.read_csv(regression_csv)
    split = results["protocol"]["split_sizes"][str(saved["seed"])]
    from moleclip.processing.splits import make_split

    parts = make_split("random", data.smiles.tolist(), seed=saved["seed"])
    assert list(parts.sizes) == split
    y = data[["heavy", "parity"]].to_numpy(dtype=float)[parts.test]
    assert np.isnan(y[:, 1]).any() and not np.isnan(y[:, 0]).any()  # the second target really has gaps in test
    pred, _ = saved_predictions(out / "model", data.smiles[parts.test].tolist())
    expected = compute_metrics("regression", y, pred)
    for key, value in expected.items():
        assert saved["test"][key] == pytest.approx(value, rel=1e-4, abs=1e-5)
    assert math.isfinite(saved["test"]["loss"])


def test_test_score_is_taken_at_the_best_validation_epoch(frozen_run):
    out, results = frozen_run
    for entry in results["search"]["entries"]:
        for run in entry["runs"]:
            with open(run["metrics_csv"], newline="") as fh:
                evals = [r for r in csv.DictReader(fh) if r.get("valid_loss")]
            assert len(evals) == 4
            best = min(evals, key=lambda r: float(r["valid_loss"]))
            assert run["best_epoch"] == int(float(best["epoch"]))
            assert run["test"]["rmse"] == pytest.approx(float(best["test_rmse"]))
            assert run["valid"]["loss"] == pytest.approx(min(float(r["valid_loss"]) for r in evals))
            # validation and test are both logged every epoch (learning curves); the choice reads validation only
            assert all(row["test_rmse"] and row["test_loss"] and row["valid_rmse"] for row in evals)


def test_chosen_setting_is_best_on_validation(frozen_run):
    _, results = frozen_run
    means = [e["summary"]["valid"]["loss"]["mean"] for e in results["search"]["entries"]]
    assert results["search"]["chosen"] == int(np.argmin(means))
    assert results["chosen_setting"] == results["search"]["entries"][int(np.argmin(means))]["setting"]


def test_classification_with_missing_labels_through_the_pipeline(tmp_path, classification_csv):
    results = finetune(tmp_path, classification_csv, "--freeze-encoder", "--seeds", "3", "--epochs", "3",
                       "--head-lr", "1e-3", "--augmentation", "none", "--select-on", "metric", "--batch-size", "16")
    assert results["protocol"]["select_key"] == "valid_roc_auc" and results["protocol"]["select_mode"] == "max"
    saved = results["saved_model"]
    data = pd.read_csv(classification_csv)
    from moleclip.processing.splits import make_split

    test = make_split("random", data.smiles.tolist(), seed=3).test
    y = data[["big", "has_o"]].to_numpy(dtype=float)[test]
    pred, _ = saved_predictions(tmp_path / "model", data.smiles[test].tolist())
    assert saved["test"]["roc_auc"] == pytest.approx(compute_metrics("classification", y, pred)["roc_auc"], abs=1e-6)
    assert math.isfinite(saved["test"]["loss"])
    # per-task scores, and every task a split part left out of the mean with the reason, in results.json and .md
    run = results["final"]["runs"][0]
    assert set(run["per_target"]["test"]["roc_auc"]) == {"big", "has_o"}
    left_out = {part: reasons.get("roc_auc", {}) for part, reasons in run["left_out"].items()}
    for part, rows in (("valid", make_split("random", data.smiles.tolist(), seed=3).valid), ("test", test)):
        one_class = {name for name in ("big", "has_o")
                     if len(set(data[name].dropna().to_numpy()[np.isin(data[name].dropna().index, rows)])) < 2}
        assert set(left_out[part]) == one_class
    assert any(left_out.values())  # this toy split does leave a one-class task out somewhere
    assert "left out" in (tmp_path / "results.md").read_text()


def test_same_seed_same_split_and_result(tmp_path, regression_csv):
    args = ("--freeze-encoder", "--seeds", "5", "--epochs", "2", "--head-lr", "1e-3", "--augmentation", "default")
    first = finetune(tmp_path / "a", regression_csv, *args)
    second = finetune(tmp_path / "b", regression_csv, *args)
    other = finetune(tmp_path / "c", regression_csv, "--freeze-encoder", "--seeds", "6", "--epochs", "2",
                     "--head-lr", "1e-3", "--augmentation", "default")
    assert first["protocol"]["split_sizes"] == second["protocol"]["split_sizes"]
    assert first["final"]["runs"][0]["test"] == second["final"]["runs"][0]["test"]
    assert first["final"]["runs"][0]["test"] != other["final"]["runs"][0]["test"]


def test_full_finetuning_draws_augments_and_is_deterministic(tmp_path, regression_csv):
    args = ("--seeds", "1", "--epochs", "2", "--head-lr", "1e-3", "--augmentation", "intense", "--batch-size", "16",
            "--limit", "24")
    first = finetune(tmp_path / "a", regression_csv, *args)
    second = finetune(tmp_path / "b", regression_csv, *args)
    assert first["mode"] == "full"
    assert first["final"]["runs"][0]["test"] == second["final"]["runs"][0]["test"]
    # the encoder moved (unlike the frozen mode)
    from accelerate.utils import set_seed

    from moleclip.training.serving.hub import load_backbone

    set_seed(0)
    fresh = load_backbone("tiny", MoleCLIPForPropertyPrediction, num_targets=2)
    saved = MoleCLIPForPropertyPrediction.from_pretrained(tmp_path / "a" / "model")
    diffs = [(a - b).abs().max().item() for a, b in zip(fresh.moleclip.parameters(), saved.moleclip.parameters())]
    assert max(diffs) > 0


def test_init_from_starts_from_the_previous_encoder(tmp_path, regression_csv):
    finetune(tmp_path / "domain", regression_csv, "--seeds", "1", "--epochs", "1", "--head-lr", "1e-3",
             "--augmentation", "none", "--encoder-lr", "1e-3", "--limit", "24", "--target-columns", "heavy")
    results = finetune(tmp_path / "second", regression_csv, "--init-from", str(tmp_path / "domain" / "model"),
                       "--freeze-encoder", "--seeds", "1", "--epochs", "1", "--head-lr", "1e-3", "--augmentation",
                       "none", "--target-columns", "parity")
    first = MoleCLIPForPropertyPrediction.from_pretrained(tmp_path / "domain" / "model")
    second = MoleCLIPForPropertyPrediction.from_pretrained(tmp_path / "second" / "model")
    for a, b in zip(first.moleclip.parameters(), second.moleclip.parameters()):
        torch.testing.assert_close(a, b)
    assert second.config.target_names == ["parity"] and results["init_from"] == str(tmp_path / "domain" / "model")


def test_r_groups_change_the_training_images():
    from moleclip.training.finetuning.inputs import ImageInputs
    from moleclip.training.serving.hub import load_backbone, load_processor

    template = load_backbone("tiny", MoleCLIPForPropertyPrediction)
    smiles = ["CCO", "c1ccccc1"]  # ethanol has terminal C and O; benzene has no terminal atom
    plain = ImageInputs(template, load_processor("tiny"), smiles, progress=False)
    r_groups = ImageInputs(template, load_processor("tiny", r_groups=True), smiles, progress=False)
    assert not np.array_equal(plain.source.images[0], r_groups.source.images[0])
    np.testing.assert_array_equal(plain.source.images[1], r_groups.source.images[1])
    a = plain.collate([plain.train_dataset(np.array([0, 1]), np.zeros((2, 1)), "none", seed=0)[0, 0]])
    b = r_groups.collate([r_groups.train_dataset(np.array([0, 1]), np.zeros((2, 1)), "none", seed=0)[0, 0]])
    assert not torch.equal(a["pixel_values"], b["pixel_values"])


def test_augmentation_depends_on_seed_epoch_and_molecule_only():
    from moleclip.training.finetuning.inputs import ImageInputs
    from moleclip.training.serving.hub import load_backbone, load_processor

    features = ImageInputs(load_backbone("tiny", MoleCLIPForPropertyPrediction), load_processor("tiny"),
                             ["CCO", "c1ccccc1O"], progress=False)
    data = features.train_dataset(np.array([0, 1]), np.zeros((2, 1)), "intense", seed=4)
    again = features.train_dataset(np.array([0, 1]), np.zeros((2, 1)), "intense", seed=4)
    np.testing.assert_array_equal(data[1, 0]["pixel_values"], again[1, 0]["pixel_values"])  # epoch 1, molecule 0
    assert not np.array_equal(data[0, 0]["pixel_values"], data[1, 0]["pixel_values"])  # epoch 0 vs 1
    # what the model gets is the processor's normalisation of those pictures
    batch = features.collate([data[1, 0], data[1, 1]])
    expected = features.processor(images=[data[1, 0]["pixel_values"], data[1, 1]["pixel_values"]])["pixel_values"]
    torch.testing.assert_close(batch["pixel_values"], expected)
    assert batch["labels"].shape == (2, 1)


def test_fingerprint_baseline_through_the_same_loop(tmp_path, regression_csv):
    results = finetune(tmp_path, regression_csv, "--baseline", "fingerprint", "--seeds", "1", "2", "--epochs", "25",
                       "--head-lr", "1e-3", "--augmentation", "none", "--target-columns", "heavy", "--batch-size", "8",
                       "--fractions", "0.6", "0.2", "0.2")
    assert results["mode"] == "fingerprint" and (tmp_path / "model" / "fingerprint_mlp.json").is_file()
    runs = results["final"]["runs"]
    assert all(Path(r["metrics_csv"]).is_file() for r in runs)
    # heavy-atom count is in the bits: clearly better than predicting the training mean on the same test molecules
    from moleclip.processing.splits import make_split

    for run in runs:
        split = make_split("random", SMILES, seed=run["seed"], fractions=(0.6, 0.2, 0.2))
        mean_rmse = np.sqrt(np.mean((HEAVY[split.test] - HEAVY[split.train].mean()) ** 2))
        assert run["test"]["rmse"] < 0.7 * mean_rmse


def test_random_forest_baseline_option(tmp_path, regression_csv):
    # --epochs at its default, typed out: nothing is ignored that the user asked for
    assert main(["--dataset", str(regression_csv), "--output-dir", str(tmp_path), "--split", "random", "--no-progress",
                 "--no-plots", "--baseline", "random_forest", "--seeds", "1", "2", "--rf-estimators", "10",
                 "--target-columns", "heavy", "--epochs", "60"]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["mode"] == "random_forest"
    assert {"rmse", "mae", "r2"} <= set(results["final"]["summary"]["test"])
    assert (tmp_path / "results.md").read_text().count("Random forest") >= 1


def test_random_forest_refuses_the_neural_options_it_would_ignore(tmp_path, regression_csv, capsys):
    from moleclip_cli.main import main as cli

    argv = ["finetune", "--dataset", str(regression_csv), "--output-dir", str(tmp_path / "rf"), "--baseline",
            "random_forest", "--target-columns", "heavy", "--no-progress", "--head-lr", "1e-3", "--epochs", "5",
            "--model", "tiny"]
    assert cli(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("moleclip finetune: error: --baseline random_forest"), err
    assert all(option in err for option in ("--head-lr", "--epochs", "--model")) and "--seeds" not in err
    assert not (tmp_path / "rf").exists()


def test_svr_baseline_classifies_with_c_chosen_per_target_and_refuses_other_models_options(
        tmp_path, classification_csv, capsys):
    from moleclip_cli.main import main as cli

    assert main(["--dataset", str(classification_csv), "--output-dir", str(tmp_path / "svr"), "--split", "random",
                 "--no-progress", "--no-plots", "--baseline", "svr", "--seeds", "1", "--svr-c", "1", "10",
                 "--target-columns", "big", "has_o"]) == 0
    results = json.loads((tmp_path / "svr" / "results.json").read_text())
    assert results["mode"] == "svr" and results["protocol"]["c_grid"] == [1.0, 10.0]
    (run,) = results["final"]["runs"]
    assert set(run["chosen_C"]) == {"big", "has_o"} and set(run["chosen_C"].values()) <= {1.0, 10.0}
    assert "roc_auc" in results["final"]["summary"]["test"]
    assert "Tanimoto SVM" in (tmp_path / "svr" / "results.md").read_text()
    argv = ["finetune", "--dataset", str(classification_csv), "--output-dir", str(tmp_path / "refused"), "--baseline",
            "svr", "--no-progress", "--head-lr", "1e-3", "--rf-estimators", "10"]
    capsys.readouterr()
    assert cli(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("moleclip finetune: error: --baseline svr"), err
    assert "--head-lr" in err and "--rf-estimators" in err and not (tmp_path / "refused").exists()


def test_init_factor_spreads_a_random_presets_embeddings(tmp_path, regression_csv):
    # CLIP's initialisation maps mostly-white drawings to nearly one embedding; a larger scale is what lets a
    # randomly initialised preset learn from scratch (BENCHMARKS.md, ESOL), so the option must reach the encoder.
    finetune(tmp_path, regression_csv, "--freeze-encoder", "--init-factor", "5", "--seeds", "1", "--epochs", "1",
             "--head-lr", "1e-3", "--augmentation", "none", "--target-columns", "heavy")
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    assert config["vision_config"]["initializer_factor"] == 5

    from moleclip import MoleCLIPConfig, MoleCLIPModel
    from moleclip.training.serving.hub import load_processor

    pixels = load_processor("tiny")(SMILES[:12], return_tensors="pt")["pixel_values"]

    def mean_cosine(factor):
        torch.manual_seed(0)
        model = MoleCLIPModel(MoleCLIPConfig.from_preset("tiny", vision_config={"initializer_factor": factor})).eval()
        with torch.no_grad():
            emb = torch.nn.functional.normalize(model(pixel_values=pixels).image_embeds, dim=-1)
        return (emb @ emb.T)[~torch.eye(len(emb), dtype=torch.bool)].mean().item()

    # at CLIP's scale every pair of these molecules has cosine ~0.9995; five times the scale spreads them ~80x wider
    assert 1 - mean_cosine(5.0) > 10 * (1 - mean_cosine(1.0))

    with pytest.raises(ValueError, match="--init-factor only applies"):
        finetune(tmp_path / "again", regression_csv, "--model", str(tmp_path / "model"), "--init-factor", "5")


def test_bad_option_combinations_fail_clearly(tmp_path, regression_csv):
    with pytest.raises(ValueError, match="--freeze-encoder"):
        finetune(tmp_path, regression_csv, "--baseline", "fingerprint", "--freeze-encoder")
    with pytest.raises(ValueError, match="repeats"):
        finetune(tmp_path, regression_csv, "--seeds", "1", "1")
    with pytest.raises(ValueError, match="non-negative"):
        finetune(tmp_path, regression_csv, "--seeds", "-1")


def test_push_to_hub_offline_is_refused_before_training(tmp_path, regression_csv):
    # conftest sets HF_HUB_OFFLINE=1: the push could never happen, so nothing is trained or written
    argv = ["--dataset", str(regression_csv), "--output-dir", str(tmp_path / "out"), *TINY, "--freeze-encoder",
            "--seeds", "1", "--epochs", "1", "--push-to-hub", "lab/toy", "--target-columns", "heavy"]
    with pytest.raises(Exception, match="HF_HUB_OFFLINE"):
        main(argv)
    assert not (tmp_path / "out").exists()


@pytest.mark.slow  # the pull runs in a fresh Python process
def test_push_to_hub_with_model_card_then_pull_offline(tmp_path, regression_csv):
    from huggingface_hub import ModelCard
    from test_hub import RecordingHub, run_fresh

    hub = RecordingHub(tmp_path / "hub")
    argv = ["--dataset", str(regression_csv), "--output-dir", str(tmp_path / "out"), "--split", "random", *TINY,
            "--freeze-encoder", "--seeds", "1", "--epochs", "2", "--head-lr", "1e-3", "--augmentation", "none",
            "--push-to-hub", "lab/toy-moleclip", "--target-columns", "heavy", "parity"]
    assert main(argv, hub_api=hub) == 0
    uploaded = hub.calls[-1][2]
    assert {"model.safetensors", "README.md", "results.json", "modeling_moleclip.py"} <= set(uploaded)
    assert not any(name.startswith(("runs/", "checkpoints/")) for name in uploaded)
    card = ModelCard((tmp_path / "out" / "model" / "README.md").read_text())
    results = card.data.eval_results
    assert results and results[0].dataset_name == "toy_regression"
    assert {r.metric_type for r in results} == {"rmse", "mae", "r2"}
    summary = json.loads((tmp_path / "out" / "results.json").read_text())["final"]["summary"]["test"]
    assert next(r for r in results if r.metric_type == "rmse").metric_value == pytest.approx(summary["rmse"]["mean"], rel=1e-5)

    pulled = run_fresh("lab/toy-moleclip", {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hub")}, tmp_path)
    from test_hub import SMILES

    pred, model = saved_predictions(tmp_path / "out" / "model", SMILES)
    assert pulled["predictor"] == "MoleCLIPForPropertyPrediction"
    torch.testing.assert_close(torch.tensor(pulled["logits"]), torch.tensor(pred), rtol=1e-4, atol=1e-5)


@pytest.mark.slow
@pytest.mark.data
def test_named_dataset_from_data_dir(tmp_path):
    if not os.environ.get("MOLECLIP_DATA_DIR"):
        pytest.skip("MOLECLIP_DATA_DIR is not set")
    results = finetune(tmp_path, "freesolv", "--baseline", "fingerprint", "--seeds", "1", "--epochs", "3",
                       "--head-lr", "1e-3", "--augmentation", "none", "--split", "scaffold")
    assert results["dataset"]["name"] == "freesolv" and results["paper"]["fingerprint_baseline"]
    assert "FP-MLP baseline (paper)" in (tmp_path / "results.md").read_text()


def test_command_line_choice_lists_match_the_package():
    # cli/finetune.py spells its choices out so that `--help` needs no torch; they must stay the package's own lists
    from moleclip_cli import finetune as command
    from moleclip.processing.augment import AUGMENTATION_PRESETS
    from moleclip.processing.splits import DEFAULT_FRACTIONS, SPLIT_KINDS
    from moleclip.training.loop import OPTIMIZERS, SCHEDULES

    assert command.AUGMENTATIONS == AUGMENTATION_PRESETS and command.SPLIT_KINDS == SPLIT_KINDS
    assert command.OPTIMIZERS == OPTIMIZERS and command.SCHEDULES == SCHEDULES
    assert command.DEFAULT_FRACTIONS == DEFAULT_FRACTIONS
    from moleclip.processing.standardize import STANDARDIZATIONS
    from moleclip_cli._common import STANDARDIZATIONS as spelled_out

    assert spelled_out == STANDARDIZATIONS


def test_paper_optimizer_and_head_are_the_defaults(tmp_path, regression_csv):
    from moleclip_cli.finetune import build_parser
    from moleclip.training.finetuning.inputs import FingerprintInputs

    args = build_parser().parse_args(["--dataset", "x", "--output-dir", str(tmp_path)])
    assert args.optimizer == "adam" and args.head_dropout is None
    inputs = FingerprintInputs(SMILES[:6], "regression", ["heavy"], progress=False)
    model = inputs.new_model({"head_lr": 1e-3, "weight_decay": 0.0})
    assert all(m.p == 0.0 for m in model.modules() if isinstance(m, torch.nn.Dropout))
    results = finetune(tmp_path / "adamw", regression_csv, "--baseline", "fingerprint", "--seeds", "1", "--epochs",
                       "1", "--head-lr", "1e-3", "--target-columns", "heavy", "--optimizer", "adamw")
    assert results["protocol"]["optimizer"].startswith("AdamW")


def test_new_model_is_fresh_for_every_run():
    from moleclip.training.finetuning.inputs import FingerprintInputs

    inputs = FingerprintInputs(SMILES[:6], "regression", ["heavy"], progress=False)
    torch.manual_seed(0)
    first = inputs.new_model({"head_lr": 1e-3})
    torch.manual_seed(0)
    second = inputs.new_model({"head_lr": 1e-3})
    assert first is not second
    for a, b in zip(first.parameters(), second.parameters()):
        assert a is not b
        torch.testing.assert_close(a, b)  # the seeded global RNG decides a fresh head's weights


def test_multi_target_selection_criterion_is_stated(frozen_run):
    _, results = frozen_run
    selection = results["protocol"]["selection"]
    assert "standardised" in selection and "2 targets" in selection and "--select-on metric" in selection
    assert results["protocol"]["standardized_targets"] is True


def test_encoder_and_head_get_the_reference_codes_adam_settings():
    # the reference trained the encoder with Adam (0.9, 0.98), eps 1e-6 and the head with PyTorch's defaults
    from moleclip.training.finetuning.inputs import ImageInputs
    from moleclip.training.serving.hub import load_backbone, load_processor
    from moleclip.training.loop import build_optimizer

    inputs = ImageInputs(load_backbone("tiny", MoleCLIPForPropertyPrediction), load_processor("tiny"), ["CCO"],
                         progress=False)
    setting = {"head_lr": 1e-3, "encoder_lr": 5e-6, "weight_decay": 1e-5}
    model = inputs.new_model(setting)
    optimizer = build_optimizer(inputs.param_groups(model, setting))
    encoder, head = optimizer.param_groups
    assert type(optimizer) is torch.optim.Adam
    assert (encoder["lr"], encoder["betas"], encoder["eps"], encoder["weight_decay"]) == (5e-6, (0.9, 0.98), 1e-6, 1e-5)
    assert (head["lr"], head["betas"], head["eps"], head["weight_decay"]) == (1e-3, (0.9, 0.999), 1e-8, 1e-5)


@pytest.mark.parametrize("option, value, message", [
    ("--max-grad-norm", "-1", "--max-grad-norm must be positive"),  # torch would reverse every gradient
    ("--weight-decay", "-1e-5", "--weight-decay must be >= 0"),  # torch's Adam takes it in a parameter group
    ("--head-hidden-size", "0", "--head-hidden-size must be >= 1"),  # the head would predict one constant
    ("--head-num-layers", "-1", "--head-num-layers must be >= 0"),
    ("--head-dropout", "1.5", r"--head-dropout must lie in \[0, 1\)"),
    ("--warmup-steps", "-5", "--warmup-steps must be >= 0"),
    ("--frozen-views", "0", "--frozen-views and --rf-estimators must be >= 1"),
    ("--init-factor", "0", "--init-factor must be positive"),
])
def test_settings_that_would_train_wrongly_are_refused_before_any_work(tmp_path, option, value, message):
    from moleclip.training.finetuning.checks import check_args
    from moleclip_cli.finetune import build_parser

    args = build_parser().parse_args(["--dataset", str(tmp_path / "absent.csv"), "--output-dir",
                                      str(tmp_path / "out"), f"{option}={value}"])
    with pytest.raises(ValueError, match=message):
        check_args(args)
    assert not (tmp_path / "out").exists()


@pytest.mark.data
def test_the_papers_numbers_are_shown_only_for_the_same_measurement(tmp_path, data_dir):
    from argparse import Namespace
    from types import SimpleNamespace

    from moleclip.training.finetuning.job import _paper_row

    def row(dataset, targets):
        return _paper_row(Namespace(dataset=dataset, data_dir=str(data_dir)), SimpleNamespace(target_names=targets))

    assert row("esol", ["log_solubility"])["metric"] == "rmse"  # the registry's set and targets
    own = tmp_path / "esol.csv"  # a user's own table that happens to be called esol
    own.write_text("smiles,log_solubility\nCCO,1.0\n")
    assert row(str(own), ["log_solubility"]) is None
    assert row("nhcs", ["npa_charge_1"]) is None  # one of the paper's four targets is another measurement
    assert row("nhcs", ["npa_charge_1", "npa_charge_2", "npa_charge_3", "npa_charge_4"]) is not None


def test_overwrite_leaves_folders_no_finetune_job_wrote(tmp_path, regression_csv):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "mine.txt").write_text("a user's own model folder")
    with pytest.raises(FileExistsError, match="no finetune job wrote"):
        finetune(tmp_path, regression_csv, "--baseline", "fingerprint", "--seeds", "1", "--epochs", "1",
                 "--overwrite")
    assert (tmp_path / "model" / "mine.txt").is_file()
    # a dataset file inside an earlier job's runs/ folder is refused too, not read and then deleted
    job = tmp_path / "job"
    (job / "runs" / "search").mkdir(parents=True)
    (job / "results.json").write_text("{}")
    data = job / "runs" / "data.csv"
    data.write_text(regression_csv.read_text())
    with pytest.raises(ValueError, match="--dataset"):
        finetune(job, data, "--baseline", "fingerprint", "--seeds", "1", "--epochs", "1", "--overwrite")
    assert data.is_file()


@pytest.fixture(scope="module")
def assay_job(tmp_path_factory):
    """A one-seed fingerprint job on a table with an ID column, a SMILES column named Compound_SMILES and decimal
    labels (plots on)."""
    from tests.tiny_models import ASSAY_LABELS, SMILES as ASSAY_SMILES

    root = tmp_path_factory.mktemp("assay_job")
    data = root / "assay.csv"
    pd.DataFrame({"ID": [f"{i:04d}" for i in range(len(ASSAY_SMILES))], "Compound_SMILES": ASSAY_SMILES,
                  "logS": ASSAY_LABELS}).to_csv(data, index=False)
    out = root / "out"
    assert main(["--dataset", str(data), "--smiles-column", "Compound_SMILES", "--target-columns", "logS",
                 "--output-dir", str(out), "--baseline", "fingerprint", "--seeds", "1", "--epochs", "2",
                 "--head-lr", "1e-3", "--split", "random", "--no-progress", "--batch-size", "8"]) == 0
    return out


def test_prediction_tables_keep_the_input_columns_once_and_write_float32_predictions(assay_job):
    """Every prediction table (each run's, plots/, predictions.csv) starts with the input's columns as written, in
    their order, the measured target among them once (no measured_<target> copy); predictions carry float32's digits."""
    from tests.tiny_models import ASSAY_LABELS

    read = lambda path: pd.read_csv(path, dtype=str, keep_default_na=False)  # noqa: E731
    run = read(next((assay_job / "runs" / "search").glob("*/seed_1/test_predictions.csv")))
    plot = read(assay_job / "plots" / "test_predictions.csv")
    combined = read(assay_job / "predictions.csv")
    inputs = ["ID", "Compound_SMILES", "logS"]
    assert run.columns.tolist() == plot.columns.tolist() == inputs + ["predicted_logS", "seed"]
    assert combined.columns.tolist()[:4] == inputs + ["predicted_logS"] and combined.columns[-1] == "seed"
    assert not [c for c in combined.columns if c.startswith("measured_")]
    for table in (run, plot, combined):
        assert set(table.logS) <= set(ASSAY_LABELS) and all(len(i) == 4 for i in table.ID)  # as written: 0007, -1
        for column in [c for c in table.columns if c.startswith("predicted_")]:
            assert all(str(np.float32(c)) == c for c in table[column] if c not in ("", "inf", "-inf")), column
    pd.testing.assert_frame_equal(plot, run)  # the saved run's own table


def test_results_json_is_strict_json_with_null_where_a_number_is_undefined(assay_job):
    """One seed has no standard deviation: results.json (and its copy in the model folder) says null, not NaN, which
    strict JSON parsers refuse."""
    def refuse(constant):
        raise AssertionError(f"results.json holds {constant}, which is not JSON")

    for path in (assay_job / "results.json", assay_job / "model" / "results.json"):
        if path.is_file():  # a fingerprint model folder holds no copy
            results = json.loads(path.read_text(), parse_constant=refuse)
            assert results["final"]["summary"]["test"]["mae"]["std"] is None


def test_json_text_writes_null_for_numbers_that_are_not_finite():
    from moleclip.training.outputs import json_text

    text = json_text({"a": float("nan"), "b": [np.float32(1.5), np.inf], "c": np.array([1.0, np.nan])}, indent=None)
    assert json.loads(text, parse_constant=lambda c: pytest.fail(c)) == {"a": None, "b": [1.5, None], "c": [1.0, None]}

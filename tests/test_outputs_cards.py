"""Model cards written by save_model_dir and the commands that call it: what they say matches what was done."""

import re

import pytest
import torch

from moleclip import MoleCLIPConfig, MoleCLIPImageProcessor, MoleCLIPModel


@pytest.fixture(scope="module")
def encoder():
    torch.manual_seed(0)
    return MoleCLIPModel(MoleCLIPConfig.from_preset("tiny", pseudo_label_classes=[4]))


def _loaded_names(card: str) -> list[str]:
    return re.findall(r'from_pretrained\("([^"]*)"', card)


def test_a_model_not_pushed_gets_a_placeholder_repository_in_its_card_not_n_a(tmp_path, encoder):
    from moleclip.training.serving.hub import save_model_dir

    # init, convert-original and pretrain pass the --push-to-hub value, None when nothing is pushed
    folder = save_model_dir(tmp_path / "run" / "model", encoder, MoleCLIPImageProcessor(), card={"repo_id": None})
    assert _loaded_names((folder / "README.md").read_text()) == ["<your-name>/run", "<your-name>/run"]  # a run's model/ is named after the run
    folder = save_model_dir(tmp_path / "esol-encoder", encoder, MoleCLIPImageProcessor(), card={"repo_id": "lab/x"})
    assert _loaded_names((folder / "README.md").read_text()) == ["lab/x", "lab/x"]


def test_an_encoder_card_does_not_say_a_preset_started_from_clip(tmp_path, encoder):
    from moleclip.training.serving.hub import save_model_dir

    card = {"backbone": "the randomly initialised `tiny` preset", "training_summary": "none yet (initial weights)"}
    text = (save_model_dir(tmp_path / "m", encoder, MoleCLIPImageProcessor(), card=card) / "README.md").read_text()
    intro = " ".join(text.split("## This checkpoint")[0].split())
    # the paper's model is described as the paper's, not as this checkpoint
    assert "The paper's MoleCLIP (Harnik et al." in intro and "What this checkpoint started from" in intro
    assert "| started from | the randomly initialised `tiny` preset |" in text


def test_a_moleclip_folder_without_its_processor_gets_the_default_one_with_a_warning(tmp_path, encoder):
    from moleclip.training.serving.hub import load_processor, save_model_dir

    # the paper's converted weights are fed B, G, R pictures; a default processor would feed them R, G, B
    folder = save_model_dir(tmp_path / "primary", encoder, MoleCLIPImageProcessor(channel_order="bgr"))
    assert load_processor(str(folder)).channel_order == "bgr"
    (folder / "preprocessor_config.json").unlink()  # as model.save_pretrained(folder) alone leaves it
    with pytest.warns(UserWarning, match="has no preprocessor_config.json: .* default processor"):
        assert load_processor(str(folder)).channel_order == "rgb"
    assert load_processor("tiny").channel_order == "rgb"  # presets and CLIP checkpoints take the default


@pytest.mark.parametrize("baseline", ["fingerprint", "random_forest"])
def test_a_baseline_model_folder_has_its_card_and_results_like_a_moleclip_one(tmp_path, baseline):
    import json

    import pandas as pd
    import yaml

    from moleclip_cli.main import main

    smiles = ["C" * k + s for k in range(1, 9) for s in ("", "O", "N", "Cl", "c1ccccc1")]
    pd.DataFrame({"smiles": smiles, "y": [len(s) for s in smiles]}).to_csv(tmp_path / "t.csv", index=False)
    extra = ["--epochs", "2", "--head-lr", "1e-3", "--augmentation", "none"] if baseline == "fingerprint" else \
        ["--rf-estimators", "5"]
    assert main(["finetune", "--dataset", str(tmp_path / "t.csv"), "--output-dir", str(tmp_path / "run"), "--baseline",
                 baseline, "--split", "random", "--seeds", "1", "2", "--no-progress", "--no-plots", *extra]) == 0
    model = tmp_path / "run" / "model"
    card = (model / "README.md").read_text()
    header = yaml.safe_load(card.split("---")[1])
    scores = {m["type"]: m["value"] for m in header["model-index"][0]["results"][0]["metrics"]}
    summary = json.loads((tmp_path / "run" / "results.json").read_text())["final"]["summary"]["test"]
    assert scores["rmse"] == pytest.approx(summary["rmse"]["mean"], rel=1e-5)  # the card's scores are the job's
    assert "library_name: transformers" not in card and "n/a" not in card
    assert f"moleclip predict --model {model}" in card and ("--trust-pickle" in card) == (baseline == "random_forest")
    assert json.loads((model / "results.json").read_text())["mode"] == baseline
    assert (model / "results.md").read_text().startswith("# t: ")

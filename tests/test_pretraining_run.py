"""A pretraining run as a user starts it (`pretrain(config)`), for what the whole-run tests in test_pretrain.py
do not look at."""

import numpy as np
import pandas as pd
import pytest
import torch

from moleclip.processing.prerendered_store import prerender
from moleclip.training.pretraining.run import pretrain
from moleclip.training.pretraining.config import PretrainConfig

from test_pretrain import molecules


@pytest.fixture(autouse=True)
def one_torch_thread(monkeypatch):
    threads = torch.get_num_threads()  # see test_pretrain.one_torch_thread
    torch.set_num_threads(1)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    yield
    torch.set_num_threads(threads)


def test_the_run_says_how_many_molecules_the_prerendered_store_holds(tmp_path, capsys):
    smiles = molecules(40)
    pd.DataFrame({"smiles": smiles, "label_k4": [i % 4 for i in range(40)]}).to_parquet(tmp_path / "labelled.parquet")
    # a store of a few of them (say, drawn from another file): the others are drawn during training, which is slow
    prerender(smiles[:3] + ["CCCCCCCCCCO"], tmp_path / "store", n_variants=1, n_jobs=1, progress=False)
    config = PretrainConfig(input=str(tmp_path / "labelled.parquet"), output_dir=str(tmp_path / "run"), backbone="tiny",
                            batch_size=8, group_size=4, num_workers=0, valid_fraction=0, max_steps=1, save_every=None,
                            progress=False, prerendered=str(tmp_path / "store"))
    assert pretrain(config)["steps"] == 1
    assert f"pre-rendered store {tmp_path / 'store'} (3 of 40 molecules in it; the others are drawn)" in (
        capsys.readouterr().out)


def test_validation_accuracy_counts_only_molecules_with_a_class():
    from types import SimpleNamespace

    from accelerate import Accelerator

    from moleclip.training.pretraining.run import make_evaluator

    class Step:  # the model's output for one batch: the classifier answers 0, 1, 0, 0
        def forward(self, model, batch):
            logits = torch.tensor([[5.0, 0.0], [0.0, 5.0], [5.0, 0.0], [5.0, 0.0]])
            return SimpleNamespace(loss=torch.tensor(1.0), contrastive_loss=torch.tensor(0.5),
                                   classification_losses=torch.tensor([0.5]), label_logits=[logits])

    # the third molecule could not be drawn (label -100): right on 2 of the 3 molecules with a class
    batch = {"pseudo_labels": torch.tensor([[0], [1], [-100], [1]])}
    result = make_evaluator(Accelerator(cpu=True), Step(), [batch], [2])(torch.nn.Linear(1, 1))
    assert result["valid_accuracy_k2"] == pytest.approx(2 / 3)
    assert result["valid_loss"] == 1.0 and result["valid_classification_loss_k2"] == 0.5


def test_k_none_on_the_command_line_means_the_default_and_a_mixed_list_is_refused():
    base = ["--input", "x.smi", "--output-dir", "out"]
    assert PretrainConfig.from_args(base + ["--k", "none"]).k is None  # `none` sets an optional value to None
    with pytest.raises(ValueError, match=r"k must be integers or the single word auto, got \['300', 'none'\]"):
        PretrainConfig.from_args(base + ["--k", "300", "none"])


def test_a_seed_numpy_and_scikit_learn_cannot_take_is_refused_with_the_options():
    base = ["--input", "x.smi", "--output-dir", "out"]
    for seed in ("-1", str(2**32)):
        with pytest.raises(ValueError, match="seed must be in 0..4294967295"):
            PretrainConfig.from_args(base + ["--seed", seed])
    assert PretrainConfig.from_args(base + ["--seed", str(2**32 - 1)]).seed == 2**32 - 1


def _smiles_without_pseudo_labels(tmp_path, monkeypatch):
    """A SMILES file for a run that must stop before its pseudo-labels: computing them fails the test."""
    from moleclip.processing import pseudo_labels

    def no_work(*args, **kwargs):
        raise AssertionError("pseudo-labels were computed for a run that cannot start")

    monkeypatch.setattr(pseudo_labels, "compute_pseudo_labels", no_work)
    source = tmp_path / "mols.smi"
    source.write_text("\n".join(molecules(40)) + "\n")
    return source


def test_a_missing_backbone_or_store_is_refused_before_the_pseudo_labels(tmp_path, monkeypatch):
    from moleclip.training.serving.hub import HubUnavailableError

    source = _smiles_without_pseudo_labels(tmp_path, monkeypatch)
    settings = dict(input=str(source), batch_size=8, group_size=4, num_workers=0, progress=False, k=[3, 6])
    with pytest.raises(FileNotFoundError, match="not found"):
        pretrain(PretrainConfig(output_dir=str(tmp_path / "a"), backbone=str(tmp_path / "no" / "such" / "model"),
                                **settings))
    with pytest.raises(FileNotFoundError, match="no config.json"):  # a folder that is no checkpoint
        pretrain(PretrainConfig(output_dir=str(tmp_path / "b"), backbone=str(tmp_path), **settings))
    with pytest.raises(HubUnavailableError, match="cannot load 'lab/no-such-model'"):  # not cached (tests run offline)
        pretrain(PretrainConfig(output_dir=str(tmp_path / "c"), backbone="lab/no-such-model", **settings))
    with pytest.raises(FileNotFoundError, match="not a pre-rendered store"):
        pretrain(PretrainConfig(output_dir=str(tmp_path / "d"), backbone="tiny", prerendered=str(tmp_path / "none"),
                                **settings))


def test_a_push_that_cannot_happen_is_refused_before_the_training(tmp_path, monkeypatch):
    from moleclip.training.serving.hub import HubUnavailableError

    source = _smiles_without_pseudo_labels(tmp_path, monkeypatch)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    config = PretrainConfig(input=str(source), output_dir=str(tmp_path / "run"), backbone="tiny", k=[3, 6],
                            batch_size=8, group_size=4, num_workers=0, progress=False, push_to_hub="lab/model")
    with pytest.raises(HubUnavailableError, match="HF_HUB_OFFLINE is set: unset it .* or leave --push-to-hub out"):
        pretrain(config)
    assert not (tmp_path / "run" / "pseudo_labels.parquet").exists()


def test_a_run_folder_given_as_a_model_points_to_its_model_folder(tmp_path):
    from moleclip import MoleCLIPImageProcessor
    from moleclip.training.serving.hub import load_backbone, save_model_dir

    run = tmp_path / "run"  # what a pretraining leaves: the run's files, and the model in run/model
    save_model_dir(run / "model", load_backbone("tiny"), MoleCLIPImageProcessor())
    with pytest.raises(FileNotFoundError, match=f"has no config.json.*its model is in {run / 'model'}: pass that"):
        load_backbone(str(run))
    with pytest.raises(FileNotFoundError, match="has no config.json: not a Hugging Face checkpoint folder$"):
        load_backbone(str(tmp_path))  # a folder without a model/ in it: no hint


def test_overwrite_refuses_to_remove_the_runs_own_input(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    labels = run / "pseudo_labels.parquet"  # an earlier run's labels, reused for a run with other settings
    pd.DataFrame({"smiles": molecules(40), "label_k4": [i % 4 for i in range(40)]}).to_parquet(labels)
    (run / "metrics.csv").write_text("step,loss\n1,2.0\n")
    settings = dict(output_dir=str(run), backbone="tiny", batch_size=8, group_size=4, num_workers=0, max_steps=1,
                    save_every=None, valid_fraction=0, progress=False, overwrite=True)
    with pytest.raises(ValueError, match="--input .* is inside .* --overwrite removes: copy it out"):
        pretrain(PretrainConfig(input=str(labels), **settings))
    assert labels.is_file() and (run / "metrics.csv").is_file()  # nothing was removed
    kept = tmp_path / "labels.parquet"
    labels.rename(kept)
    assert pretrain(PretrainConfig(input=str(kept), **settings))["steps"] == 1


def test_a_coordinate_cache_of_no_molecules_is_refused_not_drawn_blank():
    from moleclip.processing.pretraining_data import TwoViewDataset

    # the cache is built at the first drawing, inside the net that turns an undrawable molecule into a blank picture
    with pytest.raises(ValueError, match="coordinate_cache_size must be at least 1 molecule, got 0"):
        TwoViewDataset(molecules(4), coordinate_cache_size=0)
    with pytest.raises(ValueError, match="coordinate_cache_size must be >= 1"):
        PretrainConfig.from_args(["--input", "x.smi", "--output-dir", "out", "--coordinate-cache-size", "0"])


def test_drawing_that_fails_for_every_molecule_stops_instead_of_training_on_blanks(monkeypatch):
    from moleclip.processing import image_processing_moleclip
    from moleclip.processing.pretraining_data import TwoViewDataset

    smiles = molecules(60)
    labels = np.zeros((60, 1), dtype=np.int64)
    dataset = TwoViewDataset(["C1CC"] + smiles[1:], labels, augmentation="none")  # one bad molecule: ignored
    assert dataset[0]["pseudo_labels"].tolist() == [-100] and dataset[1]["pseudo_labels"].tolist() == [0]

    def broken(*args, **kwargs):  # a drawing that cannot work here (a font, Cairo, a setting)
        raise RuntimeError("no font")

    # the drawing's own failure, inside the processor that draws every picture
    monkeypatch.setattr(image_processing_moleclip, "render", broken)
    failing = TwoViewDataset(smiles, labels, augmentation="none")
    for i in range(49):  # each looks like a bad molecule at first ...
        assert failing[i]["pseudo_labels"].tolist() == [-100]
    with pytest.raises(RuntimeError, match="none of the first 50 molecules could be drawn.*no font"):
        failing[49]  # ... but not fifty in a row with none drawn
    drawn_before = TwoViewDataset(smiles, labels, augmentation="none")
    monkeypatch.undo()
    drawn_before[0]
    monkeypatch.setattr(image_processing_moleclip, "render", broken)
    assert all(drawn_before[i]["pseudo_labels"].tolist() == [-100] for i in range(1, 60))  # drawing worked once


def test_a_checkpoint_to_resume_that_is_not_there_is_refused_before_the_pseudo_labels(tmp_path, monkeypatch):
    source = _smiles_without_pseudo_labels(tmp_path, monkeypatch)
    settings = dict(input=str(source), output_dir=str(tmp_path / "run"), backbone="tiny", batch_size=8, group_size=4,
                    num_workers=0, progress=False, k=[3, 6])
    with pytest.raises(FileNotFoundError, match="--resume .*step_7 does not exist"):
        pretrain(PretrainConfig(resume=str(tmp_path / "run" / "checkpoints" / "step_7"), **settings))
    (tmp_path / "half").mkdir()
    with pytest.raises(FileNotFoundError, match="is not a complete checkpoint"):
        pretrain(PretrainConfig(resume=str(tmp_path / "half"), **settings))


def test_a_run_from_a_moleclip_checkpoint_starts_its_pseudo_label_classifiers_afresh(tmp_path, capsys):
    from safetensors.torch import load_file

    from moleclip import MoleCLIPConfig, MoleCLIPModel

    smiles = molecules(40)
    pd.DataFrame({"smiles": smiles, "label_k4": [i % 4 for i in range(40)]}).to_parquet(tmp_path / "labelled.parquet")
    torch.manual_seed(1)
    earlier = MoleCLIPModel(MoleCLIPConfig.from_preset("tiny", pseudo_label_classes=[4]))
    with torch.no_grad():
        earlier.label_heads[0].weight.fill_(7.0)  # another K-means' class 0..3: nothing to do with this run's
    earlier.save_pretrained(tmp_path / "earlier")
    config = PretrainConfig(input=str(tmp_path / "labelled.parquet"), output_dir=str(tmp_path / "run"),
                            backbone=str(tmp_path / "earlier"), batch_size=8, group_size=4, num_workers=0,
                            valid_fraction=0, max_steps=1, save_every=None, progress=False, classifier_lr=1e-9)
    pretrain(config)
    assert "classifiers of" in capsys.readouterr().out
    final = load_file(tmp_path / "run" / "model" / "model.safetensors")
    head = final["label_heads.0.weight"]
    assert head.abs().max() < 1.0  # nn.Linear's own initialisation, not the 7s it was given
    encoder = load_file(tmp_path / "earlier" / "model.safetensors")["visual_projection.weight"]
    assert torch.allclose(final["visual_projection.weight"], encoder, atol=1e-3)  # the encoder itself is kept


def test_resuming_a_cosine_schedule_with_another_length_is_warned_about(tmp_path):
    from moleclip.training.pretraining.run import _check_resumed_config

    class Printer:
        def __init__(self):
            self.lines = []

        def print(self, line):
            self.lines.append(line)

    for schedule, warned in (("constant", False), ("cosine", True)):
        saved = PretrainConfig(input="x.smi", output_dir=str(tmp_path), schedule=schedule, max_steps=100)
        (tmp_path / "pretrain_config.json").write_text(saved.to_json())
        printer = Printer()
        longer = PretrainConfig(input="x.smi", output_dir=str(tmp_path), schedule=schedule, max_steps=200,
                                resume="latest")
        _check_resumed_config(longer, tmp_path / "pretrain_config.json", printer)
        assert any("max_steps 100 -> 200" in line for line in printer.lines) is warned


@pytest.mark.parametrize("setting, view", [({"r_groups": True}, "pixel_values"),
                                           ({"drawing_backend": "fast"}, "pixel_values"),
                                           ({"drawing_backend": "cairo"}, "augmented_pixel_values")])
def test_the_processor_draws_pretraining_pictures_as_it_draws_inference_pictures(setting, view):
    # pretraining drew with the renderer directly, so a processor's drawing settings reached inference pictures only:
    # the model learnt on other pictures than it was later fed
    from moleclip.processing.image_processing_moleclip import MoleCLIPImageProcessor
    from moleclip.processing.pretraining_data import STYLE_DRAWS, TRAIN_STREAM, TwoViewDataset
    from moleclip.processing.seeding import sample_rng

    smiles = ["CCO", "c1ccccc1CCN", "CC(=O)Nc1ccc(O)cc1"]
    processor = MoleCLIPImageProcessor(size=96, **setting)
    changed = TwoViewDataset(smiles, seed=2, size=96, augmentation="none", processor=processor)
    default = TwoViewDataset(smiles, seed=2, size=96, augmentation="none")
    for i, molecule in enumerate(smiles):
        item = changed[(1, i)]
        plain = processor([molecule], return_tensors="pt")["pixel_values"][0]  # what inference feeds the model
        torch.testing.assert_close(processor.pictures_to_pixel_values([item["pixel_values"].permute(1, 2, 0).numpy()])[0],
                                   plain, rtol=0, atol=0)
        styled = processor([molecule], randomize_drawing=True, return_tensors="pt",
                           seed=sample_rng(2, TRAIN_STREAM, 1, i, STYLE_DRAWS))["pixel_values"][0]
        torch.testing.assert_close(
            processor.pictures_to_pixel_values([item["augmented_pixel_values"].permute(1, 2, 0).numpy()])[0], styled,
            rtol=0, atol=0)
    # the setting changed the pretraining pictures (not only: both paths ignore it alike)
    assert not torch.equal(changed[(1, 2)][view], default[(1, 2)][view])


def test_a_processor_of_another_size_than_the_model_reads_is_refused():
    from moleclip.processing.image_processing_moleclip import MoleCLIPImageProcessor
    from moleclip.processing.pretraining_data import TwoViewDataset

    with pytest.raises(ValueError, match="the processor draws 64 px pictures, the model reads 96 px"):
        TwoViewDataset(molecules(2), size=96, processor=MoleCLIPImageProcessor(size=64))

"""Pretraining: the two-view data pipeline, the config/command line (`training/pretrain.py` and `moleclip pretrain`),
the optimiser, a whole tiny run with a Hub push, two processes on CPU (global-batch contrastive loss, disjoint shards,
one copy of each checkpoint), and a SIGKILLed run resumed to bit-identical weights and a log without repeated steps."""

import argparse
import csv
import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from moleclip.processing.pretraining_data import (
    VALID_STREAM, FixedBatches, PackedStrings, PrerenderedImages, TwoViewDataset, collate_two_views, prerender)
from moleclip.processing.rendering import CoordinateCache, DrawingStyle, render
from moleclip.training.loop import OPTIMIZER_TEXT, checkpoint_dirs
from moleclip.training.samplers import EpochBatches
from moleclip.training.pretraining.config import KILL_ENV, PretrainConfig
from moleclip.training.pretraining.run import build_param_groups, build_pretrain_optimizer, pretrain

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "training" / "pretrain.py"
SMILES = ["CCO", "c1ccccc1O", "CC(=O)Nc1ccc(O)cc1", "CCN(CC)CC", "O=C(O)c1ccccc1", "C1CCCCC1", "CC(C)Cc1ccc(C)cc1",
          "Clc1ccc(Br)cc1", "CCOC(=O)C", "N#Cc1ccccc1", "CC(=O)OC1=CC=CC=C1C(=O)O", "C1=CC=C2C=CC=CC2=C1"]


def molecules(n: int) -> list[str]:
    """`n` distinct valid molecules (the base set with alkyl tails), so tests need no data files."""
    out = []
    i = 0
    while len(out) < n:
        base = SMILES[i % len(SMILES)]
        out.append(base + "C" * (i // len(SMILES)))
        i += 1
    return out


@pytest.fixture(scope="module")
def smi_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "mols.smi"
    path.write_text("\n".join(molecules(120)) + "\n")
    return path


def tiny_args(input_path, output_dir, *extra):
    return ["--input", str(input_path), "--backbone", "tiny", "--output-dir", str(output_dir), "--k", "3", "6",
            "--batch-size", "8", "--group-size", "2", "--num-workers", "0", "--valid-fraction", "0.1",
            "--log-every", "1", "--pseudo-label-jobs", "1", "--no-progress", *extra]


@pytest.fixture(autouse=True)
def one_torch_thread(monkeypatch):
    # A tiny model gains nothing from a second thread, and on a busy 2-core machine an OpenMP thread waiting for a
    # core slows every step many times over. OMP_NUM_THREADS tells pretrain() to leave the setting alone.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    yield
    torch.set_num_threads(threads)


def subprocess_env():
    env = dict(os.environ)
    env.pop(KILL_ENV, None)
    env["OMP_NUM_THREADS"] = "1"  # see one_torch_thread
    return env


# ---------------------------------------------------------------------------------------------------- data pipeline
def test_views_are_a_function_of_seed_epoch_and_index():
    labels = np.arange(len(SMILES))[:, None] % 3
    data = TwoViewDataset(SMILES, labels, seed=3)
    item = data[(2, 4)]
    assert item["pixel_values"].shape == (3, 224, 224) and item["pixel_values"].dtype == torch.uint8
    assert item["pseudo_labels"].tolist() == [labels[4, 0]] and item["index"] == 4
    again = TwoViewDataset(SMILES, labels, seed=3)[(2, 4)]  # a fresh dataset: another worker, or a resumed run
    assert torch.equal(again["pixel_values"], item["pixel_values"])
    assert torch.equal(again["augmented_pixel_values"], item["augmented_pixel_values"])
    other_epoch = data[(3, 4)]
    assert not torch.equal(other_epoch["augmented_pixel_values"], item["augmented_pixel_values"])
    assert not torch.equal(TwoViewDataset(SMILES, labels, seed=4)[(2, 4)]["pixel_values"], item["pixel_values"])
    valid = TwoViewDataset(SMILES, labels, seed=3, stream=VALID_STREAM)[(2, 4)]
    assert not torch.equal(valid["pixel_values"], item["pixel_values"])
    # The two views differ (random drawing style), and without augmentation view 1 is exactly the plain drawing.
    assert not torch.equal(item["pixel_values"], item["augmented_pixel_values"])
    plain = TwoViewDataset(SMILES, labels, augmentation="none")[(0, 1)]["pixel_values"]
    expected = render(CoordinateCache(max_size=4).get(SMILES[1], index=1), size=224, style=DrawingStyle())
    assert torch.equal(plain, torch.from_numpy(np.array(expected)).permute(2, 0, 1))


def test_workers_draw_the_same_batches_as_the_main_process():
    from torch.utils.data import DataLoader

    class Sampler:
        def __init__(self):
            self.start = 0

        def set_epoch(self, epoch, start_batch=0):
            self.start = start_batch

        def __len__(self):
            return 3

        def __iter__(self):
            return iter([[0, 5, 2, 7], [1, 3, 4, 6], [8, 9, 10, 11]][self.start:])

    data = TwoViewDataset(SMILES, np.zeros((len(SMILES), 2), dtype=np.int64), seed=1)

    def batches(workers, epoch, start=0):
        wrapped = EpochBatches(Sampler())
        wrapped.set_epoch(epoch, start_batch=start)
        return list(DataLoader(data, batch_sampler=wrapped, num_workers=workers, collate_fn=collate_two_views))

    main, workers = batches(0, epoch=1), batches(2, epoch=1)
    for a, b in zip(main, workers):
        assert a["indices"].tolist() == b["indices"].tolist()
        for key in ("pixel_values", "augmented_pixel_values", "pseudo_labels"):
            assert torch.equal(a[key], b[key])
    resumed = batches(0, epoch=1, start=2)  # resuming mid-epoch skips batches without drawing them
    assert len(resumed) == 1 and torch.equal(resumed[0]["augmented_pixel_values"], main[2]["augmented_pixel_values"])
    assert main[0]["pixel_values"].shape == (4, 3, 224, 224) and main[0]["pseudo_labels"].shape == (4, 2)


def test_undrawable_molecule_keeps_the_batch_shape_with_ignored_labels():
    data = TwoViewDataset(["CCO", "C1CC"], np.array([[1], [2]]))  # "C1CC": an unclosed ring
    with pytest.warns(UserWarning, match="could not be drawn"):
        item = data[1]
    assert item["pseudo_labels"].tolist() == [-100] and item["pixel_values"].shape == (3, 224, 224)


def test_fixed_batches_give_every_process_equal_batches():
    shards = [FixedBatches(range(23), batch_size=4, num_replicas=2, rank=r) for r in (0, 1)]
    assert len(shards[0]) == len(shards[1]) == 2  # 23 // 8; the last 7 cannot fill both processes
    seen = [i for s in shards for b in s for i in b]
    assert sorted(seen) == list(range(16)) and all(len(b) == 4 for s in shards for b in s)


def test_packed_strings_behave_like_a_list():
    packed = PackedStrings(["CCO", "", "c1ccccc1", "[Na+].[Cl-]"])
    assert len(packed) == 4 and packed[2] == "c1ccccc1" and packed[-1] == "[Na+].[Cl-]" and packed[1:3] == ["", "c1ccccc1"]
    with pytest.raises(IndexError):
        packed[4]


def test_prerendered_store_round_trip(tmp_path):
    store = prerender(SMILES[:5] + ["C1CC"], tmp_path / "store", n_variants=2, seed=0, n_jobs=1, progress=False)
    assert len(store) == 6 and store.meta["failed"] == 1 and store.n_variants == 2
    assert store.meta["format"] == "moleclip-prerendered-parquet-v2" and store.smiles() == SMILES[:5] + ["C1CC"]
    expected = render(CoordinateCache(max_size=1).get(SMILES[2], index=2), size=224, style=DrawingStyle())
    np.testing.assert_array_equal(store.read(2), expected)  # PNG is lossless
    assert store.read(5) is None
    assert not np.array_equal(store.read(2, 0), store.read(2, 1))
    with pytest.raises(FileExistsError):
        prerender(SMILES[:2], tmp_path / "store", n_jobs=1, progress=False)

    labels = np.zeros((6, 1), dtype=np.int64)
    reordered = [SMILES[3], SMILES[0], "CCCCCCCC"]  # slots are found by SMILES; a molecule not in the store is drawn
    slots = store.slots_for(reordered)
    assert slots.tolist() == [3, 0, -1]
    from_store = TwoViewDataset(reordered, labels[:3], seed=5, prerendered=PrerenderedImages(tmp_path / "store"),
                                store_slots=slots)
    drawn = TwoViewDataset(reordered, labels[:3], seed=5)
    for i in range(3):
        a, b = from_store[(1, i)], drawn[(1, i)]
        # The plain view and every augmentation draw are identical either way; only the random-style view comes
        # from a finite set of stored drawings.
        assert torch.equal(a["pixel_values"], b["pixel_values"])
    variants = [torch.from_numpy(np.array(store.read(3, v))) for v in range(2)]
    no_aug = TwoViewDataset(reordered, labels[:3], augmentation="none", prerendered=store, store_slots=slots)
    assert any(torch.equal(no_aug[(0, 0)]["augmented_pixel_values"], v.permute(2, 0, 1)) for v in variants)
    with pytest.raises(ValueError, match="px"):
        TwoViewDataset(SMILES[:6], labels, size=128, prerendered=store)


def test_prerender_command(tmp_path, capsys):
    import argparse

    from moleclip_cli import prerender as command

    source = tmp_path / "mols.smi"
    source.write_text("smiles\n" + "\n".join(SMILES[:4]) + "\nnot_a_smiles\n")
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    args = parser.parse_args(["--input", str(source), "--output", str(tmp_path / "store"), "--variants", "1",
                              "--n-jobs", "1", "--no-progress"])
    assert command.run(args) == 0
    assert "5 molecules x 2 drawings" in capsys.readouterr().out
    store = PrerenderedImages(tmp_path / "store")
    assert store.smiles() == SMILES[:4] + ["not_a_smiles"] and store.meta["failed"] == 1
    assert store.rows().tolist() == [0, 1, 2, 3, 4] and store.read(4) is None and store.read(3, 0) is not None


# ---------------------------------------------------------------------------------------------------- configuration
def test_command_line_contract_and_config_file():
    config = PretrainConfig.from_args([
        "--input", "x.smi", "--backbone", "tiny", "--output-dir", "out", "--batch-size", "64", "--max-steps", "10",
        "--seed", "3", "--resume", "latest", "--push-to-hub", "lab/model", "--k", "30", "300", "--schedule", "cosine",
        "--warmup-steps", "5", "--mixed-precision", "bf16", "--gradient-accumulation-steps", "2", "--max-grad-norm",
        "none", "--save-every", "5", "--save-total-limit", "2", "--eval-every", "4", "--valid-fraction", "0.05",
        "--num-workers", "3", "--group-size", "16", "--prerendered", "store", "--no-progress", "--optimizer", "adamw",
        "--classifier-lr", "0.02", "--classifier-weight-decay", "0.001",
    ])
    assert (config.batch_size, config.max_steps, config.seed, config.resume, config.push_to_hub) == (64, 10, 3, "latest", "lab/model")
    assert config.k == [30, 300] and config.groups_per_batch == 4 and config.max_grad_norm is None
    assert (config.encoder_lr, config.encoder_weight_decay, config.classifier_lr, config.classifier_weight_decay) == (
        5e-6, 0.1, 0.02, 0.001)
    assert config.progress is False and config.mixed_precision == "bf16" and config.optimizer == "adamw"
    assert PretrainConfig.from_json(config.to_json()) == config
    assert json.loads(config.to_json())["optimizer"] == "adamw"  # saved in pretrain_config.json
    # The paper's optimisation is the default: Adam (L2 decay), encoder decay 0.1, classifiers lr 0.01, no clipping.
    paper = PretrainConfig(input="x", output_dir="y")
    assert (paper.optimizer, paper.encoder_weight_decay, paper.classifier_lr, paper.max_grad_norm) == ("adam", 0.1, 0.01, None)
    # A pretrain_config.json written before the rename still reads (head_lr was the classifiers' learning rate).
    old = json.loads(paper.to_json())
    old["head_lr"] = old.pop("classifier_lr")
    old["head_weight_decay"] = old.pop("classifier_weight_decay")
    old["head_lr"] = 0.5
    assert PretrainConfig.from_json(json.dumps(old)).classifier_lr == 0.5
    with pytest.raises(ValueError, match="optimizer must be one of adam, adamw"):
        PretrainConfig(input="x", output_dir="y", optimizer="sgd")
    with pytest.raises(SystemExit):
        PretrainConfig.from_args(["--input", "x", "--output-dir", "y", "--head-lr", "0.1"])  # the old name is gone
    with pytest.raises(ValueError, match="multiple of group_size"):
        PretrainConfig(input="x", output_dir="y", batch_size=48, group_size=32)
    with pytest.raises(ValueError, match="groups_per_batch"):
        PretrainConfig(input="x", output_dir="y", batch_size=64, group_size=16, groups_per_batch=2)
    with pytest.raises(SystemExit):
        PretrainConfig.from_args(["--input", "x.smi"])  # --output-dir is required
    with pytest.raises(ValueError, match="only applies to a randomly initialised preset"):
        PretrainConfig(input="x", output_dir="y", init_factor=5.0)  # the default backbone is CLIP's trained weights
    with pytest.raises(ValueError, match="positive"):
        PretrainConfig(input="x", output_dir="y", backbone="tiny", init_factor=0.0)


def load_command_module():
    from moleclip_cli import pretrain as command

    return command


def option_strings(parser: argparse.ArgumentParser) -> list[str]:
    return sorted(s for action in parser._actions for s in action.option_strings)


def test_command_module_follows_the_cli_contract_with_the_scripts_options():
    command = load_command_module()
    assert command.NAME == "pretrain" and command.HELP and "\n" not in command.HELP
    assert "--optimizer" in command.__doc__ and "model/" in command.__doc__
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    assert option_strings(parser) == option_strings(PretrainConfig.build_parser())  # one builder for both
    assert {"--optimizer", "--classifier-lr", "--classifier-weight-decay"} <= set(option_strings(parser))
    assert not {"--head-lr", "--head-weight-decay"} & set(option_strings(parser))
    from moleclip_cli.main import build_parser  # registered with the `moleclip` command

    args = build_parser().parse_args(["pretrain", "--input", "x.smi", "--output-dir", "y", "--optimizer", "adamw"])
    assert args._run is command.run and PretrainConfig.from_namespace(args).optimizer == "adamw"


def test_param_groups_follow_the_paper():
    from moleclip import MoleCLIPConfig, MoleCLIPModel
    from moleclip.training.loop import build_optimizer

    model = MoleCLIPModel(MoleCLIPConfig.from_preset("tiny", pseudo_label_classes=[3, 6]))
    groups = {g["name"]: g for g in build_param_groups(model, PretrainConfig(input="x", output_dir="y"))}
    assert (groups["encoder"]["lr"], groups["encoder"]["weight_decay"]) == (5e-6, 0.1)
    assert (groups["heads"]["lr"], groups["heads"]["weight_decay"]) == (0.01, 0.0)
    n_encoder = sum(p.numel() for p in list(model.vision_model.parameters()) + list(model.visual_projection.parameters()))
    assert sum(p.numel() for p in groups["encoder"]["params"]) == n_encoder
    assert sum(p.numel() for p in groups["heads"]["params"]) == 32 * 3 + 3 + 32 * 6 + 6
    optimizer = build_optimizer(list(groups.values()))
    assert [g["name"] for g in optimizer.param_groups] == ["encoder", "heads"]  # the fixed logit scale is not trained


def test_optimizer_is_the_papers_adam_with_l2_decay_or_adamw_on_request():
    from moleclip import MoleCLIPConfig, MoleCLIPModel

    def one_step(kind):
        torch.manual_seed(0)
        model = MoleCLIPModel(MoleCLIPConfig.from_preset("tiny", pseudo_label_classes=[3]))
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        optimizer = build_pretrain_optimizer(model, PretrainConfig(input="x", output_dir="y", optimizer=kind))
        for p in model.parameters():
            if p.requires_grad:
                p.grad = torch.zeros_like(p)  # no loss gradient: whatever moves, moves by weight decay
        optimizer.step()
        return optimizer, before, dict(model.named_parameters())

    lr, wd = 5e-6, 0.1  # the encoder's defaults
    optimizer, before, after = one_step("adam")
    assert type(optimizer) is torch.optim.Adam  # (AdamW subclasses Adam: compare the exact type)
    w0, w1 = before["visual_projection.weight"], after["visual_projection.weight"].detach()
    # Adam: the decay is an L2 term in the gradient, g = wd * w, and Adam's first step is lr * g / (|g| + eps):
    # about lr * sign(w) for every weight, however small.
    g = wd * w0
    torch.testing.assert_close(w1, w0 - lr * g / (g.abs() + 1e-6), rtol=0, atol=1e-7)
    head = "label_heads.0.weight"  # the classifiers have no decay: nothing moves them
    assert torch.equal(before[head], after[head].detach())

    optimizer, before, after = one_step("adamw")
    assert type(optimizer) is torch.optim.AdamW
    # AdamW: the decay multiplies the weight, w (1 - lr wd); the zero gradient adds nothing.
    torch.testing.assert_close(after["visual_projection.weight"].detach(), before["visual_projection.weight"] * (1 - lr * wd),
                               rtol=0, atol=1e-12)
    assert torch.equal(before[head], after[head].detach())


# ---------------------------------------------------------------------------------------------------- whole runs
class RecordingHub:
    """Stands in for `huggingface_hub.HfApi`: records what would be uploaded."""

    def __init__(self):
        self.calls = []

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", repo_id, kwargs.get("private")))
        from types import SimpleNamespace

        return SimpleNamespace(repo_id=repo_id)

    def upload_folder(self, repo_id, folder_path, ignore_patterns=(), **kwargs):
        import fnmatch

        folder = Path(folder_path)
        files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
        files = [f for f in files if not any(fnmatch.fnmatch(f, pat) for pat in ignore_patterns)]
        self.calls.append(("upload_folder", repo_id, files, kwargs.get("commit_message")))
        return f"https://huggingface.co/{repo_id}/commit/0123"


def test_tiny_pretraining_saves_a_loadable_model_and_pushes_it(tmp_path, smi_file, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)  # CI sets it; the push goes to the stand-in
    hub = RecordingHub()
    out = tmp_path / "run"
    # 5 steps, checkpoints every 2: the run ends between two intervals.
    config = PretrainConfig.from_args(tiny_args(smi_file, out, "--max-steps", "5", "--save-every", "2",
                                                "--eval-every", "2", "--push-to-hub", "lab/tiny-moleclip",
                                                "--init-factor", "5"))
    summary = pretrain(config, hub_api=hub)

    assert summary["steps"] == 5 and summary["pseudo_label_ks"] == [3, 6] and summary["train_molecules"] == 108
    # The run folder: settings, logs, pseudo-labels, checkpoints, results; the model in its own folder.
    assert {p.name for p in out.iterdir()} >= {"pretrain_config.json", "training_results.json", "metrics.csv",
                                               "pseudo_labels.parquet", "validation_initial.json", "checkpoints", "model"}
    assert not (out / "model.safetensors").exists()
    model_dir = out / "model"
    assert summary["model_dir"] == str(model_dir)
    in_model = {p.name for p in model_dir.iterdir()}
    assert {"config.json", "model.safetensors", "preprocessor_config.json", "README.md", "modeling_moleclip.py",
            "training_results.json"} <= in_model
    assert not in_model & {"checkpoints", "metrics.csv", "pseudo_labels.parquet", "pretrain_config.json"}
    # The last step is checkpointed too (limit 3: steps 2, 4 and 5), with the final model's weights.
    assert [p.name for p in checkpoint_dirs(out)] == ["step_2", "step_4", "step_5"]
    final = load_file(model_dir / "model.safetensors")
    last_checkpoint = load_file(out / "checkpoints" / "step_5" / "model.safetensors")
    assert all(torch.equal(final[k], last_checkpoint[k]) for k in final)
    # saved with "auto" resolved to where augmentation ran (the workers without a GPU, the device with one)
    assert PretrainConfig.from_json((out / "pretrain_config.json").read_text()) == dataclasses.replace(
        config, augment_on="device" if torch.cuda.is_available() else "workers")
    card = (model_dir / "README.md").read_text()
    assert "5 optimizer steps" in card and "K = 3, 6" in card and "lab/tiny-moleclip" in card
    assert OPTIMIZER_TEXT["adam"] in card and "no gradient clipping" in card
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    train_rows = [r for r in rows if r["loss"]]
    assert [int(r["step"]) for r in train_rows] == [1, 2, 3, 4, 5]
    for r in train_rows:  # the total is the sum of its logged parts
        parts = float(r["contrastive_loss"]) + float(r["classification_loss_k3"]) + float(r["classification_loss_k6"])
        assert abs(float(r["loss"]) - parts) < 1e-4
        assert float(r["lr"]) == 5e-6 and float(r["images_per_s"]) > 0
    valid_rows = [r for r in rows if r.get("valid_loss")]
    assert [int(r["step"]) for r in valid_rows] == [2, 4] and "valid_accuracy_k6" in valid_rows[0]
    labels = pd.read_parquet(out / "pseudo_labels.parquet")
    assert len(labels) == 120 and labels["label_k6"].between(0, 5).all()

    from transformers import AutoModel

    loaded = AutoModel.from_pretrained(model_dir)
    assert loaded.config.pseudo_label_classes == [3, 6] and [h.out_features for h in loaded.label_heads] == [3, 6]
    assert loaded.config.vision_config.initializer_factor == 5.0

    assert hub.calls[0] == ("create_repo", "lab/tiny-moleclip", None)
    uploaded = hub.calls[1][2]
    assert uploaded == sorted(p.name for p in model_dir.iterdir())  # the model folder, nothing of the run around it
    assert json.loads((out / "training_results.json").read_text())["hub_commit"].endswith("/commit/0123")
    with pytest.raises(FileExistsError, match="--resume latest"):  # a second run may not overwrite the first by accident
        pretrain(PretrainConfig.from_args(tiny_args(smi_file, out, "--max-steps", "4")))
    # ... but may replace it when told to: nothing of the first run is left beside the second's results
    pretrain(PretrainConfig.from_args(tiny_args(smi_file, out, "--max-steps", "3", "--save-every", "none",
                                                "--overwrite")))
    assert not (out / "checkpoints").exists() and not (out / ".moleclip.lock").exists()
    assert [int(r["step"]) for r in csv.DictReader(open(out / "metrics.csv")) if r["loss"]] == [1, 2, 3]


def test_input_label_columns_are_used_and_checked(tmp_path):
    table = pd.DataFrame({"smiles": molecules(40), "label_k4": np.arange(40) % 4, "label_k8": np.arange(40) % 8})
    path = tmp_path / "labelled.parquet"
    table.to_parquet(path)
    args = ["--input", str(path), "--backbone", "tiny", "--batch-size", "8", "--group-size", "4", "--num-workers", "0",
            "--valid-fraction", "0", "--max-steps", "1", "--save-every", "none", "--no-progress"]
    # (no pseudo-labels are computed here: the input has them)
    summary = pretrain(PretrainConfig.from_args(args + ["--output-dir", str(tmp_path / "a"), "--k", "8"]))
    assert summary["pseudo_label_ks"] == [8] and "label columns label_k8" in summary["pseudo_labels"]
    assert not (tmp_path / "a" / "pseudo_labels.parquet").exists()
    with pytest.raises(ValueError, match="not \\[30\\]"):
        pretrain(PretrainConfig.from_args(args + ["--output-dir", str(tmp_path / "b"), "--k", "30"]))
    table["label_k4"] = 4  # a K=4 label must be 0..3
    table.to_parquet(path)
    with pytest.raises(ValueError, match="must be in 0..3"):
        pretrain(PretrainConfig.from_args(args + ["--output-dir", str(tmp_path / "c")]))


def test_moleclip_pretrain_command_runs_a_pretraining(tmp_path):
    command = load_command_module()
    table = pd.DataFrame({"smiles": molecules(40), "label_k4": np.arange(40) % 4})  # labelled: nothing to compute
    table.to_parquet(tmp_path / "labelled.parquet")
    out = tmp_path / "run"
    argv = ["--input", str(tmp_path / "labelled.parquet"), "--backbone", "tiny", "--output-dir", str(out),
            "--batch-size", "8", "--group-size", "4", "--num-workers", "0", "--valid-fraction", "0", "--max-steps", "1",
            "--save-every", "none", "--no-progress", "--optimizer", "adamw"]
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    args = parser.parse_args(argv)
    args.command, args._run = "pretrain", command.run  # what a dispatcher adds to the options is not a setting
    assert command.run(args) == 0
    assert PretrainConfig.from_json((out / "pretrain_config.json").read_text()) == dataclasses.replace(
        PretrainConfig.from_args(argv), augment_on="device" if torch.cuda.is_available() else "workers")
    assert (out / "model" / "model.safetensors").is_file()
    assert not (out / "checkpoints").exists()  # --save-every none: no checkpoints, not even the last step
    assert OPTIMIZER_TEXT["adamw"] in (out / "model" / "README.md").read_text()


@pytest.mark.slow
def test_script_runs_from_a_checkout_without_installation(tmp_path):
    # Drop the editable install's import hook: `moleclip` must then come from the folders next to the script.
    code = (
        "import runpy, sys\n"
        "sys.meta_path[:] = [f for f in sys.meta_path if 'editable' not in repr(f).lower()]\n"
        "sys.modules.pop('moleclip', None)\n"
        f"sys.argv = [{str(SCRIPT)!r}, '--help']\n"
        "try:\n"
        f"    runpy.run_path({str(SCRIPT)!r}, run_name='__main__')\n"
        "except SystemExit as stop:\n"
        "    assert stop.code == 0, stop.code\n"
        "import moleclip.training.loop, moleclip.processing.pretraining_data as d\n"
        "print('FROM', d.__file__)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120,
                          env=subprocess_env())
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "--push-to-hub" in proc.stdout and f"FROM {REPO / 'processing' / 'pretraining_data.py'}" in proc.stdout


@pytest.mark.slow
def test_killed_run_resumes_to_identical_weights(tmp_path, smi_file):
    common = tiny_args(smi_file, "OUT", "--max-steps", "9", "--save-every", "3", "--eval-every", "4", "--seed", "5")

    def launch(out, extra=(), kill_at=None):
        args = [a if a != "OUT" else str(out) for a in common] + list(extra)
        env = subprocess_env()
        if kill_at is not None:
            env[KILL_ENV] = str(kill_at)
        return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=env,
                              cwd=tmp_path, timeout=600)

    full = launch(tmp_path / "full")
    assert full.returncode == 0, full.stderr[-3000:]
    # The same run, SIGKILLed while working on step 8: its newest checkpoint is step 6, mid-epoch (13 batches an epoch).
    cut = launch(tmp_path / "cut", kill_at=7)
    assert cut.returncode == -signal.SIGKILL
    assert [p.name for p in checkpoint_dirs(tmp_path / "cut")] == ["step_3", "step_6"]
    assert not (tmp_path / "cut" / "model").exists()
    killed_steps = [int(r["step"]) for r in csv.DictReader(open(tmp_path / "cut" / "metrics.csv")) if r["loss"]]
    assert killed_steps == [1, 2, 3, 4, 5, 6, 7]  # step 7 was logged after the last checkpoint (6)
    # A checkpoint left half-written by a crash during saving must be ignored.
    (tmp_path / "cut" / "checkpoints" / "step_7.tmp").mkdir()
    resumed = launch(tmp_path / "cut", extra=["--resume", "latest"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in resumed.stdout + resumed.stderr and "step 6" in resumed.stdout + resumed.stderr

    a, b = load_file(tmp_path / "full" / "model" / "model.safetensors"), load_file(tmp_path / "cut" / "model" / "model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)
    start = load_file(tmp_path / "cut" / "checkpoints" / "step_3" / "model.safetensors")
    assert not torch.equal(start["visual_projection.weight"], a["visual_projection.weight"])  # training moved it
    # The log of the resumed run continues the killed one: each step once (step 7 is the resumed run's), the same
    # rows as the uninterrupted run's but for the throughput column.
    def log(run):
        return [{k: v for k, v in r.items() if k != "images_per_s"} for r in csv.DictReader(open(tmp_path / run / "metrics.csv"))]

    assert [int(r["step"]) for r in log("cut") if r["loss"]] == list(range(1, 10))
    assert [int(r["step"]) for r in log("cut") if r.get("valid_loss")] == [4, 8]
    assert log("cut") == log("full")
    # The last step (9) is checkpointed once, like every third step before it.
    assert [p.name for p in checkpoint_dirs(tmp_path / "cut")] == ["step_3", "step_6", "step_9"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_share_the_contrastive_batch(tmp_path, smi_file):
    from moleclip.modeling_moleclip import contrastive_loss

    out, dump = tmp_path / "run", tmp_path / "dump"
    env = subprocess_env()
    env["ACCELERATE_USE_CPU"] = "true"
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port",
               str(free_port()), str(SCRIPT),
               *tiny_args(smi_file, out, "--max-steps", "4", "--save-every", "2", "--eval-every", "2", "--schedule",
                          "cosine", "--warmup-steps", "2", "--debug-dump-dir", str(dump))]
    proc = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]

    records = {r: [json.loads(line) for line in open(dump / f"rank{r}.jsonl")] for r in (0, 1)}
    assert len(records[0]) == len(records[1]) == 4
    for r0, r1 in zip(records[0], records[1]):
        assert r0["step"] == r1["step"]
        # Each process scores its 4 molecules against all 8 of the global batch ...
        assert r0["logits_shape"] == r1["logits_shape"] == [4, 8]
        # ... and the two processes hold different molecules.
        assert len(r0["indices"]) == len(r1["indices"]) == 4 and not set(r0["indices"]) & set(r1["indices"])
    seen = [i for r in (0, 1) for rec in records[r] for i in rec["indices"]]
    assert len(seen) == len(set(seen)) == 32  # 4 steps x 8 molecules, none twice within the epoch
    # The mean of the per-process losses is the single-process loss over the whole global batch.
    for call in range(2):
        e1 = torch.tensor(records[0][call]["image_embeds"] + records[1][call]["image_embeds"])
        e2 = torch.tensor(records[0][call]["augmented_image_embeds"] + records[1][call]["augmented_image_embeds"])
        scale = records[0][call]["logit_scale"]
        expected, logits = contrastive_loss(e1, e2, scale, gather=False)
        got = (records[0][call]["contrastive_loss"] + records[1][call]["contrastive_loss"]) / 2
        assert logits.shape == (8, 8) and abs(got - float(expected)) < 1e-5
        local, _ = contrastive_loss(e1[:4], e2[:4], scale, gather=False)
        assert abs(records[0][call]["contrastive_loss"] - float(local)) > 1e-4  # not a per-process loss

    # Exactly one copy of each checkpoint and of the final model; one metrics row per step.
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step_2", "step_4"]  # 4: the last step
    assert sorted(p.name for p in (out / "checkpoints" / "step_2").iterdir()) == [
        "loop_state.json", "model.safetensors", "optimizer.bin", "random_states_0.pkl", "random_states_1.pkl",
        "scheduler.bin"]
    rows = [r for r in csv.DictReader(open(out / "metrics.csv")) if r["loss"]]
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4]
    # the logged losses are the mean over both processes, not rank 0's own (--log-every 1: one batch a row)
    for row, r0, r1 in zip(rows, records[0], records[1]):
        mean = (r0["contrastive_loss"] + r1["contrastive_loss"]) / 2
        assert float(row["contrastive_loss"]) == pytest.approx(mean, abs=1e-5)
        assert abs(r0["contrastive_loss"] - r1["contrastive_loss"]) > 1e-4  # so the check can tell the two apart
    # The schedule counts optimizer steps, whatever the number of processes: warm-up over 2 steps, cosine to 0 at 4.
    assert [float(r["lr"]) for r in rows] == pytest.approx([5e-6, 5e-6, 2.5e-6, 0.0], abs=1e-12)
    summary = json.loads((out / "training_results.json").read_text())
    assert summary["processes"] == 2 and summary["steps"] == 4


def test_device_normalisation_matches_the_processor_in_both_channel_orders():
    # pretraining normalises whole uint8 batches on the device; it must feed the model exactly what the saved
    # processor feeds it, BGR included (the paper's converted weights)
    import numpy as np
    import torch

    from moleclip.processing.image_processing_moleclip import MoleCLIPImageProcessor
    from moleclip.training.pretraining.run import PretrainStep

    seen = []

    class Recorder(torch.nn.Module):
        def forward(self, pixel_values, augmented_pixel_values, pseudo_labels=None):
            seen.append((pixel_values, augmented_pixel_values))

    pictures = np.random.default_rng(0).integers(0, 256, size=(2, 32, 32, 3), dtype=np.uint8)
    for order in ("rgb", "bgr"):
        processor = MoleCLIPImageProcessor(size=32, channel_order=order)
        expected = processor.pictures_to_pixel_values(list(pictures))
        batch = torch.from_numpy(pictures).permute(0, 3, 1, 2).contiguous()
        PretrainStep([], processor=processor).forward(Recorder(), {"pixel_values": batch,
                                                                   "augmented_pixel_values": batch})
        torch.testing.assert_close(seen[-1][0], expected, rtol=0, atol=0)
        torch.testing.assert_close(seen[-1][1], expected, rtol=0, atol=0)


def test_label_columns_of_a_csv_are_read_as_integer_classes(tmp_path):
    # the one table reader keeps CSV cells as text; pseudo-label columns must still become classes, or be refused
    from moleclip.training.pretraining.table import load_pretraining_table

    path = tmp_path / "labelled.csv"
    path.write_text("smiles,label_k3\nCCO,0\nCCN,2\nc1ccccc1,1\n")
    table = load_pretraining_table(PretrainConfig(input=str(path), output_dir=str(tmp_path / "out")))
    assert table.ks == [3] and table.labels[:, 0].tolist() == [0, 2, 1] and table.smiles[2] == "c1ccccc1"
    path.write_text("smiles,label_k3\nCCO,0\nCCN,two\n")
    with pytest.raises(ValueError, match="integer classes; row 2 holds 'two'"):
        load_pretraining_table(PretrainConfig(input=str(path), output_dir=str(tmp_path / "out")))


def test_device_augmentation_is_a_function_of_the_sample_and_resumes_exactly(tmp_path, smi_file):
    # With augment_on="device" the workers hand over un-augmented pictures and a seed per view; the training step
    # augments the batch. The pictures a sample gets must not depend on its batch, and a resumed run must repeat.
    from moleclip.training.pretraining.run import PretrainStep

    smiles = ["CCO", "c1ccccc1O", "CC(=O)Nc1ccc(O)cc1", "CCN(CC)CC"]
    workers = TwoViewDataset(smiles, seed=3, size=64)
    device = TwoViewDataset(smiles, seed=3, size=64, augment_on="device")
    item = device[(1, 2)]
    assert set(item["augment_seeds"].shape) == {2} and item["augment_seeds"][0] != item["augment_seeds"][1]
    plain = torch.from_numpy(workers._draw_pair(2, np.random.default_rng(0))[0].transpose(2, 0, 1).copy())
    assert torch.equal(item["pixel_values"], plain)  # handed over as drawn
    assert not torch.equal(workers[(1, 2)]["pixel_values"], plain)  # the workers' path augments (default preset)

    seen = []

    class Recorder(torch.nn.Module):
        def forward(self, pixel_values, augmented_pixel_values, pseudo_labels=None):
            seen.append((pixel_values, augmented_pixel_values))

    step = PretrainStep([], augmentation="default")
    together = collate_two_views([device[(1, i)] for i in range(4)])
    alone = collate_two_views([device[(1, 2)]])
    step.forward(Recorder(), together)
    step.forward(Recorder(), alone)
    torch.testing.assert_close(seen[0][0][2], seen[1][0][0], rtol=0, atol=0)
    torch.testing.assert_close(seen[0][1][2], seen[1][1][0], rtol=0, atol=0)
    assert not torch.equal(seen[0][0][2], seen[0][1][2])  # the two views differ

    def run(out, *extra):
        return pretrain(PretrainConfig.from_args(tiny_args(smi_file, out, "--augment-on", "device", "--seed", "5",
                                                           "--eval-every", "none", *extra)))

    run(tmp_path / "full", "--max-steps", "4")
    run(tmp_path / "cut", "--max-steps", "2", "--save-every", "2")
    run(tmp_path / "cut", "--max-steps", "4", "--save-every", "2", "--resume", "latest")
    a = load_file(tmp_path / "full" / "model" / "model.safetensors")
    b = load_file(tmp_path / "cut" / "model" / "model.safetensors")
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)
    assert json.loads((tmp_path / "cut" / "pretrain_config.json").read_text())["augment_on"] == "device"

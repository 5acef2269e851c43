"""`--tasks`: a pretraining of the classification task alone, the contrastive task alone, or both (the paper's)."""

import csv
import json
import math

import pytest

from moleclip.processing import pseudo_labels
from moleclip.processing.image_processing_moleclip import MoleCLIPImageProcessor
from moleclip.training.pretraining.config import PretrainConfig
from moleclip.training.pretraining.run import pretrain
from test_pretrain import molecules, one_torch_thread  # noqa: F401  (the autouse fixture applies here too)


@pytest.fixture
def smi_file(tmp_path):
    path = tmp_path / "mols.smi"
    path.write_text("\n".join(molecules(40)) + "\n")
    return path


def tiny_args(input_path, output_dir, *extra):
    return ["--input", str(input_path), "--backbone", "tiny", "--output-dir", str(output_dir), "--batch-size", "8",
            "--group-size", "2", "--num-workers", "0", "--valid-fraction", "0.2", "--log-every", "1", "--eval-every",
            "1", "--max-steps", "2", "--pseudo-label-jobs", "1", "--no-progress", *extra]


def metrics_columns(run_dir) -> tuple[list[str], list[dict]]:
    with open(run_dir / "metrics.csv", newline="") as fh:
        reader = csv.DictReader(fh)
        return list(reader.fieldnames), list(reader)


def count_drawings(monkeypatch) -> dict:
    drawn = {False: 0, True: 0}
    render = MoleCLIPImageProcessor.render_images

    def counting(self, *args, randomize_drawing=False, **kwargs):
        drawn[bool(randomize_drawing)] += 1
        return render(self, *args, randomize_drawing=randomize_drawing, **kwargs)

    monkeypatch.setattr(MoleCLIPImageProcessor, "render_images", counting)
    return drawn


def test_contrastive_only_trains_without_pseudo_labels_or_classifiers(tmp_path, smi_file, monkeypatch, capsys):
    def no_labels(*args, **kwargs):
        raise AssertionError("pseudo-labels were computed for a contrastive-only run")

    monkeypatch.setattr(pseudo_labels, "compute_pseudo_labels", no_labels)
    out = tmp_path / "run"
    summary = pretrain(PretrainConfig.from_args(tiny_args(smi_file, out, "--tasks", "contrastive")))
    assert "contrastive task only: no pseudo-labels are computed" in capsys.readouterr().out
    assert summary["tasks"] == ["contrastive"] and summary["pseudo_label_ks"] == []
    assert not (out / "pseudo_labels.parquet").exists()
    columns, rows = metrics_columns(out)
    assert "contrastive_loss" in columns and "valid_contrastive_loss" in columns
    assert not [c for c in columns if "classification" in c or "accuracy" in c]
    assert all(math.isfinite(float(r["loss"])) for r in rows if r["loss"])
    model_config = json.loads((out / "model" / "config.json").read_text())
    assert model_config["pseudo_label_classes"] == []  # no classifier was trained, none is saved
    assert "contrastive only" in (out / "model" / "README.md").read_text()


def test_classification_only_draws_one_view_and_logs_no_contrastive_loss(tmp_path, smi_file, monkeypatch):
    drawn = count_drawings(monkeypatch)
    out = tmp_path / "run"
    summary = pretrain(PretrainConfig.from_args(tiny_args(smi_file, out, "--tasks", "classification", "--k", "3", "6")))
    assert drawn[False] > 0 and drawn[True] == 0  # the styled view is never drawn
    assert summary["tasks"] == ["classification"] and summary["images_seen"] == summary["molecules_seen"]
    columns, rows = metrics_columns(out)
    assert {"classification_loss_k3", "classification_loss_k6", "valid_classification_loss_k6"} <= set(columns)
    assert not [c for c in columns if "contrastive" in c]
    assert all(math.isfinite(float(r["loss"])) for r in rows if r["loss"])
    assert "classification (K = 3, 6) only" in (out / "model" / "README.md").read_text()


def test_both_tasks_are_the_default_and_draw_both_views(tmp_path, smi_file, monkeypatch):
    drawn = count_drawings(monkeypatch)
    config = PretrainConfig.from_args(tiny_args(smi_file, tmp_path / "run", "--k", "3"))
    assert config.tasks == ["classification", "contrastive"]
    summary = pretrain(config)
    assert drawn[True] > 0 and summary["images_seen"] == 2 * summary["molecules_seen"]
    columns, _ = metrics_columns(tmp_path / "run")
    assert {"contrastive_loss", "classification_loss_k3"} <= set(columns)


def test_the_tasks_are_saved_and_a_resume_with_other_tasks_is_refused(tmp_path, smi_file):
    out = tmp_path / "run"
    pretrain(PretrainConfig.from_args(tiny_args(smi_file, out, "--tasks", "contrastive", "--save-every", "1")))
    assert json.loads((out / "pretrain_config.json").read_text())["tasks"] == ["contrastive"]
    with pytest.raises(ValueError, match="trained --tasks contrastive; it cannot be resumed with --tasks classification "
                                         "contrastive"):
        pretrain(PretrainConfig.from_args(tiny_args(smi_file, out, "--resume", "latest", "--max-steps", "3")))
    # the same tasks resume
    summary = pretrain(PretrainConfig.from_args(tiny_args(smi_file, out, "--tasks", "contrastive", "--resume", "latest",
                                                          "--max-steps", "3")))
    assert summary["steps"] == 3


def test_a_config_file_from_before_the_setting_ran_both_tasks():
    saved = json.loads(PretrainConfig(input="x.smi", output_dir="out").to_json())
    del saved["tasks"]
    assert PretrainConfig.from_json(json.dumps(saved)).tasks == ["classification", "contrastive"]


def test_unknown_or_contradictory_tasks_are_refused_with_one_line():
    base = ["--input", "x.smi", "--output-dir", "out"]
    with pytest.raises(ValueError, match="^tasks must be classification, contrastive or both, got contrastive regression$"):
        PretrainConfig.from_args(base + ["--tasks", "contrastive", "regression"])
    with pytest.raises(ValueError, match="--k sets the pseudo-labels of the classification task"):
        PretrainConfig.from_args(base + ["--tasks", "contrastive", "--k", "300"])
    # either order, one spelling
    assert PretrainConfig.from_args(base + ["--tasks", "contrastive", "classification"]).tasks == [
        "classification", "contrastive"]


def test_the_command_refuses_an_unknown_task_in_one_line(capsys):
    from moleclip_cli.main import main

    assert main(["pretrain", "--input", "x.smi", "--output-dir", "out", "--tasks", "both-of-them"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "moleclip pretrain: error: tasks must be classification, contrastive or both, got both-of-them"

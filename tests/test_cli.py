"""The `moleclip` command line: its commands, their help, their errors (in-process, tiny preset, offline)."""

import json
import os
import shutil
import socket
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from moleclip_cli.main import COMMANDS, build_parser, main

HEAVY = ("torch", "transformers", "rdkit", "pandas", "datasets", "accelerate", "matplotlib", "sklearn")


@pytest.fixture()
def smi_file(tmp_path):
    path = tmp_path / "mols.smi"
    path.write_text("CCO ethanol\nc1ccccc1O phenol\nnot_a_smiles bad\nCC(=O)Nc1ccc(O)cc1 paracetamol\n")
    return path


def _one_line_error(capsys, command: str) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"moleclip {command}: error: ") and "\n" not in err and "Traceback" not in err, err
    return err


# ------------------------------------------------------------------------------------------------ commands, help
def test_console_script_is_installed_and_lists_every_command():
    exe = shutil.which("moleclip")
    assert exe is not None
    out = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0
    for command in ("render", "init", "embed", "convert-original", "pseudo-labels", "prerender", "predict", "pretrain",
                    "finetune"):
        assert command in out.stdout and command in COMMANDS


@pytest.mark.parametrize("command", list(COMMANDS))
def test_each_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith(f"usage: moleclip {command}")
    assert "DESIGN.md" not in text


def test_help_texts_cite_nothing_that_does_not_exist():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name, command in sub.choices.items():
        text = command.format_help()
        assert "DESIGN.md" not in text and "finetune.py's" not in text, name


def test_building_the_parser_imports_nothing_heavy():
    """Deterministic stand-in for "`--help` is quick": the command line (`moleclip_cli`, a package of its own so that
    the model package's registration with transformers is not paid for) imports no heavy library, nor `moleclip`,
    until a command runs. The wall time is measured by benchmarks/cli_startup.py."""
    code = f"""
import sys
from moleclip_cli.main import build_parser
build_parser().parse_args(["embed", "--model", "tiny", "--input", "x.smi", "--output", "y.csv"])
print(sorted(m for m in sys.modules if m.split(".")[0] in {HEAVY!r} or m.split(".")[0] == "moleclip"))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_pretrain_options_come_when_the_command_is_chosen_and_follow_the_same_rules():
    """pretrain's options are the fields of the library's PretrainConfig, added only when the command is chosen (the
    test above): once there, each says what it is for and its default, like every other command's."""
    from moleclip.training.pretraining.config import PretrainConfig

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    command = sub.choices["pretrain"]
    assert [a.dest for a in command._actions] == ["help"]  # nothing built yet
    assert "--classifier-lr" in command.format_help()
    fields = {"--" + name.replace("_", "-") for name in PretrainConfig.__dataclass_fields__}
    assert {s for a in command._actions for s in a.option_strings if not s.startswith("--no-")} == fields | {"-h", "--help"}
    for action in command._actions:
        if action.option_strings and action.dest != "help":
            assert action.help and not action.help.startswith("default:"), action.option_strings
            if action.default not in (None, False):
                assert "default" in action.help.lower(), action.option_strings


# ------------------------------------------------------------------------------------------------------- errors
def test_unknown_input_file_is_one_line_exit_2(tmp_path, capsys):
    missing = tmp_path / "absent.smi"
    assert main(["embed", "--model", "tiny", "--input", str(missing), "--output", str(tmp_path / "out" / "e.csv")]) == 2
    assert f"not found: {missing}" in _one_line_error(capsys, "embed")
    assert not (tmp_path / "out").exists()


def test_missing_local_model_folder_is_not_found(tmp_path, smi_file, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    for spec in ("./runs/x/model", "runs/x/model", "runs/model", str(tmp_path / "nothing"), "missing.pth"):
        assert main(["embed", "--model", spec, "--input", str(smi_file), "--output", "new/e.csv"]) == 2
        assert _one_line_error(capsys, "embed").endswith(f"error: not found: {spec}")
    assert main(["init", "--backbone", "./runs/x/model", "--output-dir", "runs/new/model"]) == 2
    assert _one_line_error(capsys, "init").endswith("not found: ./runs/x/model")
    assert not (tmp_path / "new").exists() and not (tmp_path / "runs" / "new").exists()


@pytest.fixture()
def no_network(monkeypatch):
    """Every attempt to resolve or reach a host is counted and refused."""
    calls = []

    def refuse(*args, **kwargs):
        calls.append(args[:2])
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket.socket, "connect", lambda self, *a: refuse(*a))
    return calls


def test_offline_hub_name_fails_at_once_with_the_advice(tmp_path, monkeypatch, capsys, go_offline, no_network):
    go_offline(monkeypatch, tmp_path / "cache")
    out = tmp_path / "m"
    assert main(["init", "--backbone", "openai/clip-vit-base-patch16", "--output-dir", str(out)]) == 2
    err = _one_line_error(capsys, "init")
    assert "'openai/clip-vit-base-patch16'" in err and "HF_HUB_OFFLINE" in err
    assert "tiny" in err and "local folder" in err
    assert no_network == [] and not out.exists()


def test_unreachable_hub_fails_after_one_attempt(tmp_path, monkeypatch, capsys, no_network):
    import huggingface_hub.constants as hub_constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    assert main(["init", "--backbone", "someone/some-model", "--output-dir", str(tmp_path / "m")]) == 2
    err = _one_line_error(capsys, "init")
    assert "cannot be reached" in err and "tiny" in err and "local folder" in err
    assert 1 <= len(no_network) <= 2  # one request (an IPv4/IPv6 pair at most), not huggingface_hub's five retries


def test_a_failed_command_leaves_no_empty_output_folder(tmp_path, monkeypatch, capsys):
    from moleclip_cli import embed

    def fails_after_mkdir(args):
        os.makedirs(os.path.dirname(args.output))
        raise ValueError("something went wrong\nover two lines")

    monkeypatch.setattr(embed, "run", fails_after_mkdir)
    output = tmp_path / "a" / "b" / "e.csv"
    assert main(["embed", "--model", "tiny", "--input", "x.smi", "--output", str(output)]) == 2
    assert _one_line_error(capsys, "embed").endswith("something went wrong over two lines")
    assert not (tmp_path / "a").exists() and tmp_path.exists()


def test_unexpected_errors_are_one_line_too_and_debug_keeps_the_trace(monkeypatch, capsys):
    from moleclip_cli import render

    monkeypatch.setattr(render, "run", lambda args: {}["bug"] if False else 1 / 0)
    assert main(["render", "CCO", "--output", "x.png"]) == 1
    err = capsys.readouterr().err
    assert "internal error (ZeroDivisionError)" in err and "MOLECLIP_DEBUG=1" in err and "Traceback" not in err
    monkeypatch.setenv("MOLECLIP_DEBUG", "1")
    with pytest.raises(ZeroDivisionError):
        main(["render", "CCO", "--output", "x.png"])


# ----------------------------------------------------------------------------------------------- the commands
def test_render_one_png(tmp_path):
    assert main(["render", "c1ccccc1O", "--output", str(tmp_path / "phenol.png")]) == 0
    image = Image.open(tmp_path / "phenol.png")
    assert image.size == (224, 224) and image.mode == "RGB"


def test_render_many_skips_and_reports(tmp_path, smi_file, capsys):
    assert main(["render", "--input", str(smi_file), "--output-dir", str(tmp_path / "out"), "--randomize", "--seed", "1"]) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["mol_0.png", "mol_1.png", "mol_3.png"]
    assert "not_a_smiles" in capsys.readouterr().out


def test_render_bad_smiles_is_one_clear_line(tmp_path, capsys):
    assert main(["render", "C1CC", "--output", str(tmp_path / "x.png")]) == 2
    assert "'C1CC'" in _one_line_error(capsys, "render")
    assert main(["render", "C1CC", "xx", "--output-dir", str(tmp_path / "none")]) == 2
    assert "none of the 2 molecules" in capsys.readouterr().err and not (tmp_path / "none").exists()


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny") / "model"
    assert main(["init", "--backbone", "tiny", "--output-dir", str(folder), "--pseudo-label-classes", "4", "8"]) == 0
    return folder


def test_init_writes_a_complete_checkpoint(tiny_dir):
    files = {p.name for p in tiny_dir.iterdir()}
    assert {"config.json", "model.safetensors", "preprocessor_config.json", "README.md", "modeling_moleclip.py"} <= files
    assert json.loads((tiny_dir / "config.json").read_text())["pseudo_label_classes"] == [4, 8]
    card = (tiny_dir / "README.md").read_text()
    assert card.startswith("---") and "library_name: transformers" in card and "tiny" in card


def test_embed_to_parquet_and_npy(tiny_dir, smi_file, tmp_path, capsys):
    out = tmp_path / "emb.parquet"
    # a warning, printed by the command line as its others ('moleclip embed: warning: ...'), not a bare print
    with pytest.warns(UserWarning, match="1 of 4 molecules could not be used: line 3 'not_a_smiles'"):
        assert main(["embed", "--model", str(tiny_dir), "--input", str(smi_file), "--output", str(out),
                     "--batch-size", "2"]) == 0
    table = pd.read_parquet(out)
    # every input row, in order (as predict does): the one that could not be drawn has empty cells and its reason
    assert table["smiles"].tolist() == ["CCO", "c1ccccc1O", "not_a_smiles", "CC(=O)Nc1ccc(O)cc1"]
    assert table["name"].tolist() == ["ethanol", "phenol", "bad", "paracetamol"]  # the .smi names travel along
    columns = [c for c in table.columns if c.startswith("emb_")]
    assert columns == [f"emb_{i}" for i in range(32)]
    assert table[columns].iloc[2].isna().all() and not table[columns].drop(index=2).isna().any().any()
    assert table["moleclip_skipped"].tolist()[2].startswith("could not be parsed")
    assert "could not be used" not in capsys.readouterr().out
    npy = tmp_path / "emb.npy"
    assert main(["embed", "--model", str(tiny_dir), "--input", str(smi_file), "--output", str(npy)]) == 0
    matrix = np.load(npy)
    assert np.load(tmp_path / "emb.rows.npy").tolist() == [0, 1, 3]
    np.testing.assert_allclose(matrix, table[columns].drop(index=2).to_numpy(), rtol=1e-5, atol=1e-6)


def test_embed_with_a_finetuned_model_gives_no_training_advice(tmp_path, smi_file, caplog):
    # A finetuned folder has no pseudo-label classifiers; embedding uses none, so nothing may say that new ones are
    # "initialised, to be trained": loading a model for inference trains nothing.
    import logging

    import torch

    from moleclip import MoleCLIPConfig, MoleCLIPForPropertyPrediction, MoleCLIPImageProcessor
    from moleclip.training.serving.hub import load_encoder

    torch.manual_seed(0)
    finetuned = MoleCLIPForPropertyPrediction(MoleCLIPConfig.from_preset("tiny", num_targets=1))
    folder = tmp_path / "model"
    finetuned.save_pretrained(folder)
    MoleCLIPImageProcessor().save_pretrained(folder)
    with caplog.at_level(logging.INFO):
        assert main(["embed", "--model", str(folder), "--input", str(smi_file), "--output", str(tmp_path / "e.parquet"),
                     "--no-progress"]) == 0
        encoder = load_encoder(str(folder))
    assert not [r for r in caplog.records if "initialised" in r.getMessage()], caplog.text
    for name, tensor in finetuned.moleclip.state_dict().items():
        if name.startswith(("vision_model.", "visual_projection.")):
            torch.testing.assert_close(encoder.state_dict()[name], tensor)  # the encoder is the finetuned one


def test_embed_csv_keeps_text_columns_as_written(tiny_dir, tmp_path, capsys):
    csv = tmp_path / "in.csv"
    csv.write_text("id,SMILES_col,note\n0001,CCO,NA\n0002,CCN,\n")
    out = tmp_path / "o.csv"
    assert main(["embed", "--model", str(tiny_dir), "--input", str(csv), "--smiles-column", "SMILES_col",
                 "--output", str(out)]) == 0
    assert out.read_text().splitlines()[1].startswith("0001,CCO,NA,")
    capsys.readouterr()
    assert main(["embed", "--model", str(tiny_dir), "--input", str(csv), "--output", str(tmp_path / "p.csv")]) == 2
    assert "no SMILES column found" in _one_line_error(capsys, "embed") and not (tmp_path / "p.csv").exists()
    assert main(["embed", "--model", str(tiny_dir), "--input", str(csv), "--output", str(tmp_path / "p.xlsx")]) == 2
    assert "unsupported file type" in _one_line_error(capsys, "embed")


def test_convert_original_command(tmp_path):
    import torch

    from test_convert_original import PREFIX, synthetic_visual_state

    path = tmp_path / "MoleCLIP - Primary.pth"
    torch.save({"model": {PREFIX + k: v for k, v in synthetic_visual_state().items()}}, path)
    assert main(["convert-original", "--input", str(path), "--output-dir", str(tmp_path / "hf")]) == 0
    from moleclip import MoleCLIPModel

    model = MoleCLIPModel.from_pretrained(tmp_path / "hf")
    assert model.config.vision_config.hidden_size == 128


def test_thin_script_bootstrap_runs_a_command_from_a_checkout(tmp_path):
    """training/_script.run_command, as training/pretrain.py and finetune.py call it: the same command, same errors."""
    import moleclip.training._script as script

    root = script._ROOT
    # As from a checkout that was never pip-installed: the editable install's finder is taken away first.
    code = ("import sys; sys.meta_path[:] = [f for f in sys.meta_path if 'editable' not in "
            "(getattr(f, '__module__', '') or type(f).__module__)]; "
            "sys.path.insert(0, sys.argv[1]); import _script; "
            "sys.exit(_script.run_command('render', sys.argv[2:]))")
    out = subprocess.run([sys.executable, "-c", code, str(root / "training"), "CCO", "--output", str(tmp_path / "e.png")],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "e.png").is_file()
    assert set(script._package_folders()) >= {"moleclip", "moleclip_cli", "moleclip.training", "moleclip.processing"}


def test_a_preset_is_recorded_as_the_preset_even_beside_a_folder_of_its_name(tmp_path, monkeypatch):
    from moleclip_cli._common import model_name

    (tmp_path / "tiny").mkdir()  # load_backbone("tiny") builds the preset, whatever folder is here
    (tmp_path / "mine").mkdir()
    monkeypatch.chdir(tmp_path)
    assert model_name("tiny") == "tiny" and model_name("mine") == str(tmp_path / "mine")


def test_init_refuses_to_write_over_a_model_unless_told(tmp_path, capsys):
    folder = tmp_path / "model"
    assert main(["init", "--backbone", "tiny", "--output-dir", str(folder), "--seed", "1"]) == 0
    weights = (folder / "model.safetensors").read_bytes()
    capsys.readouterr()
    assert main(["init", "--backbone", "tiny", "--output-dir", str(folder), "--seed", "2"]) == 2
    assert "already holds a model" in _one_line_error(capsys, "init")
    assert (folder / "model.safetensors").read_bytes() == weights  # the model there is untouched
    assert main(["init", "--backbone", "tiny", "--output-dir", str(folder), "--seed", "2", "--overwrite"]) == 0
    assert (folder / "model.safetensors").read_bytes() != weights


def test_a_device_this_machine_lacks_is_one_clear_line(tiny_dir, smi_file, tmp_path, capsys):
    import torch

    base = ["embed", "--model", str(tiny_dir), "--input", str(smi_file), "--output", str(tmp_path / "e.csv")]
    assert main([*base, "--device", "gpu"]) == 2
    assert "--device gpu: not a device name torch knows" in _one_line_error(capsys, "embed")
    if not torch.cuda.is_available():  # "Torch not compiled with CUDA enabled" was an internal error
        assert main([*base, "--device", "cuda"]) == 2
        assert "no CUDA device is available here" in _one_line_error(capsys, "embed")
    assert not (tmp_path / "e.csv").exists()
    # explain and the app take --device too, and say so before loading anything
    explain = ["explain", "--model", str(tiny_dir), "--smiles", "CCO", "--output-dir", str(tmp_path / "x")]
    assert main([*explain, "--device", "gpu"]) == 2
    assert "--device gpu: not a device name torch knows" in _one_line_error(capsys, "explain")
    assert not (tmp_path / "x").exists()
    pytest.importorskip("gradio")
    assert main(["app", "--model", str(tiny_dir), "--device", "gpu"]) == 2
    assert "--device gpu: not a device name torch knows" in _one_line_error(capsys, "app")


def test_convert_original_refuses_to_write_over_a_model_unless_told(tmp_path, capsys):
    import torch

    from test_convert_original import PREFIX, synthetic_visual_state

    path = tmp_path / "MoleCLIP - Primary.pth"
    torch.save({"model": {PREFIX + k: v for k, v in synthetic_visual_state().items()}}, path)
    folder = tmp_path / "model"  # a (trained, perhaps) model the conversion would replace
    assert main(["init", "--backbone", "tiny", "--output-dir", str(folder)]) == 0
    weights = (folder / "model.safetensors").read_bytes()
    capsys.readouterr()
    assert main(["convert-original", "--input", str(path), "--output-dir", str(folder)]) == 2
    assert "already holds a model" in _one_line_error(capsys, "convert-original")
    assert (folder / "model.safetensors").read_bytes() == weights
    assert main(["convert-original", "--input", str(path), "--output-dir", str(folder), "--overwrite",
                 "--pseudo-label-classes", "none"]) == 0
    config = json.loads((folder / "config.json").read_text())
    assert config["vision_config"]["hidden_size"] == 128 and config["pseudo_label_classes"] == []


def test_init_heads_none_as_its_help_says_and_a_push_offline_is_refused_first(tmp_path, capsys, monkeypatch):
    assert main(["init", "--backbone", "tiny", "--output-dir", str(tmp_path / "a"), "--pseudo-label-classes",
                 "none"]) == 0
    assert json.loads((tmp_path / "a" / "config.json").read_text())["pseudo_label_classes"] == []
    capsys.readouterr()
    assert main(["init", "--backbone", "tiny", "--output-dir", str(tmp_path / "b"), "--pseudo-label-classes",
                 "4", "none"]) == 2
    assert "none means no heads" in _one_line_error(capsys, "init")
    with pytest.raises(SystemExit):
        main(["init", "--backbone", "tiny", "--output-dir", str(tmp_path / "b"), "--pseudo-label-classes", "abc"])
    assert "--pseudo-label-classes: not a whole number or none: 'abc'" in capsys.readouterr().err
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["init", "--backbone", "tiny", "--output-dir", str(tmp_path / "c"), "--push-to-hub", "me/x"]) == 2
    assert "HF_HUB_OFFLINE is set" in _one_line_error(capsys, "init")
    assert not (tmp_path / "b").exists() and not (tmp_path / "c").exists()  # refused before anything was written


def test_init_overwrite_refuses_a_finetuned_folder_whose_other_files_would_describe_the_new_weights(tmp_path, capsys):
    folder = tmp_path / "model"
    assert main(["init", "--backbone", "tiny", "--output-dir", str(folder)]) == 0
    (folder / "ensemble" / "seed_1").mkdir(parents=True)  # as finetune leaves them beside its model
    (folder / "results.json").write_text('{"final": {"test": {"mae": 0.41}}}')
    weights = (folder / "model.safetensors").read_bytes()
    capsys.readouterr()
    assert main(["init", "--backbone", "tiny", "--output-dir", str(folder), "--seed", "2", "--overwrite"]) == 2
    assert "also holds ensemble, results.json, which belong to the model" in _one_line_error(capsys, "init")
    assert (folder / "model.safetensors").read_bytes() == weights


def test_init_into_a_file_says_it_is_a_file_before_loading(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("x")
    assert main(["init", "--backbone", "tiny", "--output-dir", str(tmp_path / "notes.txt")]) == 2
    assert "notes.txt is a file, not a folder" in _one_line_error(capsys, "init")


def test_a_missing_font_or_drawing_back_end_and_memory_are_setup_errors_not_internal_ones(monkeypatch, capsys):
    import torch

    from moleclip.processing.rendering import DrawingBackendError, FontNotFoundError
    from moleclip_cli import render

    for err in (FontNotFoundError("no TrueType font found: `pip install matplotlib`"),
                DrawingBackendError("backend 'fast' cannot run here: install pycairo"),
                torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), MemoryError()):
        def fails(args, err=err):
            raise err

        monkeypatch.setattr(render, "run", fails)
        assert main(["render", "CCO", "--output", "x.png"]) == 2, err
        line = _one_line_error(capsys, "render")
        assert "internal error" not in line and "MOLECLIP_DEBUG" not in line
        if isinstance(err, (MemoryError, torch.OutOfMemoryError)):
            assert "use a smaller batch size" in line


def test_init_overwrite_refuses_old_format_weights_a_save_would_leave_beside_the_new(tmp_path, capsys):
    folder = tmp_path / "model"
    assert main(["init", "--backbone", "tiny", "--output-dir", str(folder)]) == 0
    (folder / "pytorch_model.bin").write_bytes(b"old weights")  # an older save of another model
    capsys.readouterr()
    assert main(["init", "--backbone", "tiny", "--output-dir", str(folder), "--overwrite"]) == 2
    assert "also holds pytorch_model.bin" in _one_line_error(capsys, "init")


def test_every_option_with_a_default_states_it_in_the_help():
    import argparse

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name, command in sub.choices.items():
        for action in command._actions:
            default = action.default
            if (not action.option_strings or default is None or default is False or default == []
                    or default is argparse.SUPPRESS):
                continue
            assert "default" in (action.help or "").lower(), (name, action.option_strings)
    text = " ".join(sub.choices["finetune"].format_help().split())
    assert "--head-lr HEAD_LR [HEAD_LR ...] learning rates of the head (default: 0.001 0.0004 0.0001 4e-05 1e-05)" in text
    assert "--warmup-steps WARMUP_STEPS linear warm-up steps of the schedule (default: 0)" in text  # 0 is a default too
    # and every option says what it is for, not only its default
    for name, command in sub.choices.items():
        for action in command._actions:
            if action.option_strings and action.dest != "help":
                assert action.help and not action.help.startswith("default:"), (name, action.option_strings)


def test_init_into_a_projects_folder_does_not_replace_its_readme_or_code(tmp_path, capsys):
    project = tmp_path / "project"
    project.mkdir()
    (project / "README.md").write_text("# My assay project\n")
    (project / "tasks.py").write_text("print('mine')\n")  # a name the model's code files also have
    (project / "data.csv").write_text("smiles\nCCO\n")
    assert main(["init", "--backbone", "tiny", "--output-dir", str(project)]) == 2
    assert "holds README.md, tasks.py but no model" in _one_line_error(capsys, "init")
    assert (project / "README.md").read_text() == "# My assay project\n" and not (project / "config.json").exists()
    only_data = tmp_path / "data"
    only_data.mkdir()
    (only_data / "data.csv").write_text("smiles\nCCO\n")
    assert main(["init", "--backbone", "tiny", "--output-dir", str(only_data)]) == 0  # nothing of its would be replaced


def test_convert_original_card_claims_the_papers_training_only_for_the_papers_file(tmp_path):
    import torch

    from test_convert_original import PREFIX, synthetic_visual_state

    for name in ("MoleCLIP - Primary.pth", "my_chembl_run.pth"):  # the second: a user's own run of the reference code
        path = tmp_path / name
        torch.save({"model": {PREFIX + k: v for k, v in synthetic_visual_state().items()}}, path)
        out = tmp_path / f"converted_{name[:-4].replace(' ', '_')}"
        assert main(["convert-original", "--input", str(path), "--output-dir", str(out)]) == 0
        card = (out / "README.md").read_text()
        assert ("ChEMBL-25 pretraining by the paper's authors" in card) == (name == "MoleCLIP - Primary.pth")
    assert "| training | not recorded in the converted file |" in card


@pytest.mark.slow  # a fresh process: pytest records warnings in its own, so they never reach stderr here
def test_warnings_are_one_line_like_errors(tmp_path):
    import subprocess
    import sys

    import torch

    from moleclip.training.kinds.baselines import FingerprintPredictor

    torch.manual_seed(0)
    FingerprintPredictor(256, 1, "regression", hidden_size=16, target_names=["logS"]).save(tmp_path / "fp")
    # a salt, a SMILES that cannot be parsed and ethanol again: predict warns about each
    (tmp_path / "in.csv").write_text("smiles\nCCO\nCC(=O)[O-].[Na+]\nC(\nOCC\n")
    proc = subprocess.run([sys.executable, "-m", "moleclip_cli.main", "predict", "--model", str(tmp_path / "fp"),
                           "--input", str(tmp_path / "in.csv"), "--output", str(tmp_path / "out.csv"), "--no-progress"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    for topic in ("fragments", "could not be used", "repeat the molecule"):
        lines = [line for line in proc.stderr.splitlines() if topic in line]
        assert len(lines) == 1 and lines[0].startswith("moleclip predict: warning: "), proc.stderr
    assert not [line for line in proc.stdout.splitlines() if "warning:" in line], proc.stdout
    assert "UserWarning" not in proc.stderr and ".py:" not in proc.stderr

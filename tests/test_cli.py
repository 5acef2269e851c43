"""Smoke tests of the `moleclip` command line (in-process, tiny preset, offline)."""

import json
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from moleclip.training.cli import main


@pytest.fixture()
def smi_file(tmp_path):
    path = tmp_path / "mols.smi"
    path.write_text("CCO ethanol\nc1ccccc1O phenol\nnot_a_smiles bad\nCC(=O)Nc1ccc(O)cc1 paracetamol\n")
    return path


def test_console_script_is_installed():
    exe = shutil.which("moleclip")
    assert exe is not None
    out = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0
    for command in ("render", "init", "embed", "convert-original", "pseudo-labels", "prerender", "predict"):
        assert command in out.stdout


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
    err = capsys.readouterr().err
    assert "error" in err and "'C1CC'" in err and "Traceback" not in err


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
    assert main(["embed", "--model", str(tiny_dir), "--input", str(smi_file), "--output", str(out), "--batch-size", "2"]) == 0
    table = pd.read_parquet(out)
    assert table["smiles"].tolist() == ["CCO", "c1ccccc1O", "CC(=O)Nc1ccc(O)cc1"]
    assert [c for c in table.columns if c.startswith("emb_")] == [f"emb_{i}" for i in range(32)]
    assert "1 molecule(s) skipped" in capsys.readouterr().out
    npy = tmp_path / "emb.npy"
    assert main(["embed", "--model", str(tiny_dir), "--input", str(smi_file), "--output", str(npy)]) == 0
    matrix = np.load(npy)
    assert np.load(tmp_path / "emb.rows.npy").tolist() == [0, 1, 3]
    np.testing.assert_allclose(matrix, table[[f"emb_{i}" for i in range(32)]].to_numpy(), rtol=1e-5, atol=1e-6)


def test_embed_csv_with_named_column(tiny_dir, tmp_path):
    csv = tmp_path / "in.csv"
    pd.DataFrame({"id": [1, 2], "SMILES_col": ["CCO", "CCN"]}).to_csv(csv, index=False)
    assert main(["embed", "--model", str(tiny_dir), "--input", str(csv), "--smiles-column", "SMILES_col",
                 "--output", str(tmp_path / "o.csv")]) == 0
    assert pd.read_csv(tmp_path / "o.csv")["id"].tolist() == [1, 2]
    assert main(["embed", "--model", str(tiny_dir), "--input", str(csv), "--output", str(tmp_path / "o.csv")]) == 2


def test_init_offline_says_how_to_proceed(tmp_path, monkeypatch, capsys, go_offline):
    go_offline(monkeypatch, tmp_path / "cache")
    assert main(["init", "--backbone", "openai/clip-vit-base-patch16", "--output-dir", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err
    assert "tiny" in err and "local folder" in err and "Traceback" not in err


def test_convert_original_command(tmp_path):
    import torch

    from test_convert_original import PREFIX, synthetic_visual_state

    path = tmp_path / "MoleCLIP - Primary.pth"
    torch.save({"model": {PREFIX + k: v for k, v in synthetic_visual_state().items()}}, path)
    assert main(["convert-original", "--input", str(path), "--output-dir", str(tmp_path / "hf")]) == 0
    from moleclip import MoleCLIPModel

    model = MoleCLIPModel.from_pretrained(tmp_path / "hf")
    assert model.config.vision_config.hidden_size == 128

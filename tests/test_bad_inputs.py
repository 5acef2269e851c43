"""A catalogue of inputs the package must refuse (or handle) rather than answer wrongly: one row per class of case.

To add a case, add a row to the table of its kind; each row says what comes in and what the message must say.
"""

import re
import time

import numpy as np
import pandas as pd
import pytest

from moleclip.processing.molecules import MAX_SMILES_LENGTH, InvalidMoleculeError, parse_many, to_mol

# ------------------------------------------------------------------------------------------------------- molecules
# (case, entry, words the reason must contain). Each would otherwise be read as something else, or crash a batch.
REFUSED_MOLECULES = [
    ("two molecules separated by a space", "CCO CCN", "whitespace at character 4"),
    ("two molecules separated by a newline", "CCO\nCCN", "whitespace at character 4"),
    ("a table cell with a name after the SMILES", "c1ccsc1 CCN", "whitespace at character 8"),
    ("a tab inside", "CC\tO", "whitespace at character 3"),
    ("a non-ASCII letter RDKit would skip", "CCÖ", "'Ö' at character 3"),
    ("a NUL byte RDKit would stop at", "CCO\x00", "'\\x00' at character 4"),
    ("another control character", "C\x07C", "'\\x07' at character 2"),
    ("a SMARTS query", "[#6]~[#7]", "query features"),
    ("a query bond", "C~C", "query features"),
    ("a missing cell (None)", None, "not a SMILES string (a NoneType)"),
    ("a missing cell (NaN)", float("nan"), "not a SMILES string (a float)"),
    ("a number", 42, "not a SMILES string (a int)"),
    ("bytes", b"CCO", "not a SMILES string (a bytes)"),
    ("an empty string", "", "is empty"),
    ("only whitespace", "   ", "is empty"),
    ("unparsable text", "C1CC(", "could not be parsed"),
    ("a string far longer than any drawable molecule", "C" * (MAX_SMILES_LENGTH + 1), "characters long"),
]


@pytest.mark.parametrize("case, entry, reason", REFUSED_MOLECULES, ids=[row[0] for row in REFUSED_MOLECULES])
def test_entries_that_are_not_one_smiles_are_refused_with_the_reason(case, entry, reason):
    with pytest.raises(InvalidMoleculeError) as info:
        to_mol(entry, index=7)
    assert reason in info.value.reason and info.value.index == 7


def test_skip_mode_skips_every_bad_entry_and_keeps_the_order():
    entries = ["CCO", *[row[1] for row in REFUSED_MOLECULES], "c1ccccc1"]
    mols, kept, skipped = parse_many(entries, on_error="skip")
    assert kept == [0, len(entries) - 1] and len(mols) == 2
    assert [s.index for s in skipped] == list(range(1, len(entries) - 1))


def test_outer_whitespace_is_not_an_error():
    assert to_mol("  CCO\n").GetNumAtoms() == 3


def test_a_megabyte_string_is_refused_before_rdkit_parses_it():
    started = time.perf_counter()
    with pytest.raises(InvalidMoleculeError, match="characters long"):
        to_mol("C" * 1_000_000)
    assert time.perf_counter() - started < 1.0  # RDKit would take seconds; the length check takes microseconds


def test_the_drawing_limit_applies_to_drawing_only():
    from moleclip.processing.fingerprints import morgan_fingerprints

    peptide = "N" + "CC(=O)N" * 80 + "CC(=O)O"  # 323 heavy atoms: too large to draw, a fine fingerprint
    with pytest.raises(InvalidMoleculeError, match="more than the 250 this package draws"):
        to_mol(peptide)
    result = morgan_fingerprints([peptide, "CCO"], progress=False)
    assert list(result.kept) == [0, 1] and result.bits[0].sum() > 0


def test_the_processor_skips_a_column_with_missing_cells():
    import pandas as pd

    from moleclip.processing.image_processing_moleclip import MoleCLIPImageProcessor

    column = pd.Series(["CCO", None, "c1ccccc1", np.nan, "CCO CCN"])
    out = MoleCLIPImageProcessor(size=32)(column.tolist(), on_error="skip")
    assert out["kept_indices"].tolist() == [0, 2] and out["pixel_values"].shape[0] == 2
    assert [s.index for s in out.skipped] == [1, 3, 4]


# ----------------------------------------------------------------------------------------------------- checkpoints
def _property_model_dir(folder):
    from moleclip import MoleCLIPConfig, MoleCLIPForPropertyPrediction, MoleCLIPImageProcessor
    from moleclip.training.serving.hub import save_model_dir

    model = MoleCLIPForPropertyPrediction(MoleCLIPConfig.from_preset("tiny", num_targets=1))
    return save_model_dir(folder, model, MoleCLIPImageProcessor(size=model.config.vision_config.image_size))


@pytest.mark.parametrize("damage", ["head removed", "encoder tensor removed", "extra tensor added"])
def test_predict_refuses_a_checkpoint_that_would_give_random_predictions(tmp_path, capsys, damage):
    import torch
    from safetensors.torch import load_file, save_file

    from moleclip_cli.main import main

    folder = _property_model_dir(tmp_path / "model")
    weights = load_file(str(folder / "model.safetensors"))
    if damage == "head removed":
        weights = {k: v for k, v in weights.items() if not k.startswith("head.")}
    elif damage == "encoder tensor removed":
        weights.pop(next(k for k in weights if "encoder.layers.1" in k))
    else:
        weights["moleclip.vision_model.extra.weight"] = torch.zeros(2)
    save_file(weights, str(folder / "model.safetensors"), metadata={"format": "pt"})
    (tmp_path / "new.smi").write_text("CCO\nc1ccccc1\n")
    capsys.readouterr()  # what saving the checkpoint printed
    status = main(["predict", "--model", str(folder), "--input", str(tmp_path / "new.smi"),
                   "--output", str(tmp_path / "out.csv"), "--no-progress"])
    assert status == 2 and not (tmp_path / "out.csv").exists()
    error = capsys.readouterr().err
    assert "would use random weights" in error and error.count("\n") == 1


def _recast(weights_file, name_part, dtype):
    """Store the first tensor of `weights_file` whose name contains `name_part` as `dtype`; its name."""
    from safetensors.torch import load_file, save_file

    weights = load_file(str(weights_file))
    name = next(k for k in weights if name_part in k)
    weights[name] = weights[name].to(dtype)
    save_file(weights, str(weights_file), metadata={"format": "pt"})
    return name


@pytest.mark.parametrize("dtype", ["int32", "int8", "bool"])
@pytest.mark.parametrize("model_kind", ["a MoleCLIP folder", "a fingerprint model"])
def test_weights_stored_in_a_dtype_no_model_uses_are_refused(tmp_path, capsys, model_kind, dtype):
    """Weights that are not floating point (integers, booleans) in a model's weights file: loading would cast them
    to float32 without a word and predict as confidently as ever. Refused in one line, exit 2, naming the file and
    the tensor, for a MoleCLIP checkpoint folder (transformers loads it) and a fingerprint model (our own loader)."""
    import torch

    from moleclip.training.kinds.baselines import FingerprintPredictor
    from moleclip_cli.main import main

    if model_kind == "a MoleCLIP folder":
        folder = _property_model_dir(tmp_path / "model")
        weights, part = folder / "model.safetensors", "head."
    else:
        folder = FingerprintPredictor(256, 1, "regression", hidden_size=16, target_names=["logS"]).save(tmp_path / "fp")
        weights, part = folder / FingerprintPredictor.WEIGHTS_FILE, "weight"
    name = _recast(weights, part, getattr(torch, dtype))
    (tmp_path / "new.smi").write_text("CCO\n")
    capsys.readouterr()
    status = main(["predict", "--model", str(folder), "--input", str(tmp_path / "new.smi"),
                   "--output", str(tmp_path / "out.csv"), "--no-progress"])
    error = capsys.readouterr().err
    assert status == 2 and error.count("\n") == 1 and not (tmp_path / "out.csv").exists(), error
    assert f"{weights}: tensor {name} is stored as" in error and "not as the floating-point weights" in error


@pytest.mark.parametrize("dtype", ["int32", "bool"])
def test_an_ensemble_member_stored_in_a_dtype_no_model_uses_is_refused(tmp_path, dtype):
    """The same for a frozen-mode ensemble member, whose head weights are read on their own by `predict
    --uncertainty`; a head saved in float16 or float64 still loads."""
    import torch

    from moleclip import MoleCLIPConfig, MoleCLIPForPropertyPrediction
    from moleclip.training.finetuning.trust import load_head_member, save_head_member

    base = MoleCLIPForPropertyPrediction(MoleCLIPConfig.from_preset("tiny", num_targets=1))
    for kept in (torch.float16, torch.float64):
        save_head_member(tmp_path / "kept", {k: v.to(kept) for k, v in base.head.state_dict().items()}, None)
        load_head_member(tmp_path / "kept", base)
    save_head_member(tmp_path / "seed_1", base.head.state_dict(), None)
    name = _recast(tmp_path / "seed_1" / "head.safetensors", "weight", getattr(torch, dtype))
    with pytest.raises(ValueError, match=rf"head.safetensors: tensor {name} is stored as (I32|BOOL)"):
        load_head_member(tmp_path / "seed_1", base)


# --------------------------------------------------------------------------------------------------------- outputs
def test_an_unwritable_output_fails_before_any_work(tmp_path, capsys, monkeypatch):
    import os

    from moleclip.training import outputs
    from moleclip_cli.main import main

    (tmp_path / "new.smi").write_text("CCO\n")
    locked = tmp_path / "locked"
    locked.mkdir()
    # a read-only folder, as a non-root user or a read-only mount sees it (root may write anywhere, so say it here)
    real_access = os.access
    monkeypatch.setattr(outputs.os, "access", lambda p, mode: False if str(p).startswith(str(locked))
                        else real_access(p, mode))
    status = main(["embed", "--model", "tiny", "--input", str(tmp_path / "new.smi"),
                   "--output", str(locked / "sub" / "emb.csv"), "--no-progress"])
    assert status == 2 and "permission denied" in capsys.readouterr().err
    assert not (locked / "sub").exists()
    (tmp_path / "folder.csv").mkdir()
    status = main(["embed", "--model", "tiny", "--input", str(tmp_path / "new.smi"),
                   "--output", str(tmp_path / "folder.csv"), "--no-progress"])
    assert status == 2 and "a folder is in the way" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["embed", "predict"])
@pytest.mark.parametrize("variant", ["the same absolute path", "a relative path to it", "a symlink to it",
                                     "a hard link to it"])
def test_an_output_that_is_the_input_file_is_refused(tmp_path, capsys, monkeypatch, command, variant):
    """An output that is the command's own input table, however it is named (the same path, a relative path from
    elsewhere, a symlink or a hard link to it): the results would take the input's place. Refused in one line,
    exit 2, before the model is loaded, and the input is left as it was."""
    import os

    from moleclip_cli.main import main

    table = tmp_path / "molecules.csv"
    table.write_text("smiles\nCCO\nc1ccccc1\n")
    model = "tiny" if command == "embed" else str(_property_model_dir(tmp_path / "model"))
    output = str(table)
    if variant == "a relative path to it":
        (tmp_path / "elsewhere").mkdir()
        monkeypatch.chdir(tmp_path / "elsewhere")
        output = os.path.join("..", "molecules.csv")
    elif variant == "a symlink to it":
        (tmp_path / "link.csv").symlink_to(table)
        output = str(tmp_path / "link.csv")
    elif variant == "a hard link to it":
        os.link(table, tmp_path / "hard.csv")
        output = str(tmp_path / "hard.csv")
    capsys.readouterr()  # what saving the model printed
    status = main([command, "--model", model, "--input", str(table), "--output", output, "--no-progress"])
    error = capsys.readouterr().err
    assert status == 2 and "is the same file as --input" in error and error.count("\n") == 1, error
    assert table.read_text() == "smiles\nCCO\nc1ccccc1\n"


def test_an_output_beside_the_input_is_still_written(tmp_path):
    """The check above compares files, not names: an output in the input's folder, with the input's stem, is fine."""
    from moleclip_cli.main import main

    (tmp_path / "molecules.csv").write_text("smiles\nCCO\n")
    assert main(["embed", "--model", "tiny", "--input", str(tmp_path / "molecules.csv"),
                 "--output", str(tmp_path / "molecules.parquet"), "--no-progress"]) == 0


def test_a_failed_write_leaves_the_previous_file_whole(tmp_path):
    from moleclip.training.outputs import write_atomically

    target = tmp_path / "predictions.csv"
    target.write_text("id,prediction\n1,0.5\n")

    def half_then_disk_full(tmp):
        tmp.write_text("id,prediction\n1,")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        write_atomically(target, half_then_disk_full)
    assert target.read_text() == "id,prediction\n1,0.5\n"
    assert [p.name for p in tmp_path.iterdir()] == ["predictions.csv"]  # no temporary file left behind


# ------------------------------------------------------------------------------------------------ untrusted configs
HOSTILE_CONFIGS = [
    ("a million layers", {"vision_config": {"num_hidden_layers": 1_000_000}}, "num_hidden_layers"),
    ("a million-wide model", {"vision_config": {"hidden_size": 1_200_000}}, "hidden_size"),
    ("huge pictures", {"vision_config": {"image_size": 20_000}}, "image_size"),
    ("billions of weights", {"vision_config": {"hidden_size": 8192, "num_hidden_layers": 256,
                                               "num_attention_heads": 16}}, "20 billion"),
    ("a gigantic head", {"head_hidden_size": 10_000_000}, "head_hidden_size"),
]


@pytest.mark.parametrize("case, settings, words", HOSTILE_CONFIGS, ids=[row[0] for row in HOSTILE_CONFIGS])
def test_configs_no_real_model_has_are_refused_before_allocating(tmp_path, case, settings, words):
    import json

    from moleclip import MoleCLIPConfig, MoleCLIPForPropertyPrediction

    with pytest.raises(ValueError, match=words):
        MoleCLIPConfig(**settings)
    # the same through a saved config.json, as a downloaded checkpoint would bring it
    MoleCLIPConfig.from_preset("tiny").save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    for key, value in settings.items():
        saved[key] = {**saved[key], **value} if isinstance(value, dict) else value
    (tmp_path / "config.json").write_text(json.dumps(saved))
    with pytest.raises(ValueError, match=words):
        MoleCLIPForPropertyPrediction.from_pretrained(tmp_path)


@pytest.mark.parametrize("size", [0, -3, 20_000])
def test_processor_sizes_out_of_range_are_refused_at_construction(size):
    from moleclip.processing.image_processing_moleclip import MoleCLIPImageProcessor

    with pytest.raises(ValueError, match="size must be 16 to 4096 pixels"):
        MoleCLIPImageProcessor(size=size)


# ------------------------------------------------------------------------------------------------------ run folders
def test_one_job_per_folder_unless_overwrite_which_leaves_no_stale_results(tmp_path):
    import pandas as pd

    from moleclip_cli.finetune import build_parser, run

    data = tmp_path / "data.csv"
    pd.DataFrame({"smiles": ["C" * k + s for k in range(1, 6) for s in ("", "O", "N")],
                  "y": [float(k) for k in range(15)]}).to_csv(data, index=False)

    def job(*extra):
        argv = ["--dataset", str(data), "--output-dir", str(tmp_path / "out"), "--baseline", "fingerprint", "--split",
                "random", "--seeds", "1", "--epochs", "1", "--no-progress", *extra]
        return run(build_parser().parse_args(argv))

    job("--head-lr", "1e-3", "4e-4")
    assert (tmp_path / "out" / "runs" / "search" / "head_lr=0.0004").is_dir()
    with pytest.raises(FileExistsError, match="--overwrite"):
        job("--head-lr", "1e-3")
    job("--head-lr", "1e-3", "--overwrite")
    assert not (tmp_path / "out" / "runs" / "search" / "head_lr=0.0004").exists()  # the earlier grid is gone
    assert not (tmp_path / "out" / ".moleclip.lock").exists()


def test_a_folder_held_by_a_live_process_is_refused(tmp_path):
    import os
    import socket
    import subprocess
    import sys

    from moleclip.training.outputs import FolderInUseError, hold_run_folder

    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        (tmp_path / ".moleclip.lock").write_text(str(holder.pid))
        with pytest.raises(FolderInUseError, match=f"pid {holder.pid}"):
            with hold_run_folder(tmp_path):
                pass
    finally:
        holder.kill()
        holder.wait()
    with hold_run_folder(tmp_path):  # the holder died: its lock is taken over
        assert (tmp_path / ".moleclip.lock").read_text() == f"{os.getpid()} {socket.gethostname()}"
    assert not (tmp_path / ".moleclip.lock").exists()
    # a run on another machine sharing the file system: its pid means nothing here, so it is not taken for dead
    (tmp_path / ".moleclip.lock").write_text("999999999 node-7")
    with pytest.raises(FolderInUseError, match=r"pid 999999999 on node-7.*delete .*\.moleclip\.lock"):
        with hold_run_folder(tmp_path):
            pass


# ----------------------------------------------------------------------------------------------------------- splits
def test_the_same_molecule_in_train_and_test_is_reported(tmp_path):
    import json

    import pandas as pd

    from moleclip_cli.finetune import build_parser, run

    smiles = ["C" * k + s for k in range(1, 6) for s in ("", "O", "N")]
    # ethanol twice more, written differently and with another label: a duplicate that a split can put in two parts
    table = pd.DataFrame({"smiles": smiles + ["OCC", "C(O)C"], "y": [float(k) for k in range(15)] + [1.0, 9.0]})
    table.to_csv(tmp_path / "dups.csv", index=False)
    argv = ["--dataset", str(tmp_path / "dups.csv"), "--output-dir", str(tmp_path / "out"), "--baseline", "fingerprint",
            "--split", "random", "--seeds", "1", "2", "3", "--epochs", "1", "--head-lr", "1e-3", "--no-progress"]
    with pytest.warns(UserWarning, match="also in the training part"):
        run(build_parser().parse_args(argv))
    leakage = json.loads((tmp_path / "out" / "results.json").read_text())["protocol"]["leakage"]
    assert all(found["conflicting"] == 1 for found in leakage.values())


def test_leakage_is_said_once_whatever_the_number_of_seeds(tmp_path):
    # The conflicting labels are the table's and a scaffold split is every seed's: one line each, not one per seed
    # (ESOL's 6 conflicting structures were printed three times with the default three seeds).
    import warnings

    import pandas as pd

    from moleclip_cli.finetune import build_parser, run

    smiles = ["C" * k + s for k in range(1, 6) for s in ("", "O", "N")]
    table = pd.DataFrame({"smiles": smiles + ["OCC", "C(O)C"], "y": [float(k) for k in range(15)] + [1.0, 9.0],
                          "part": ["train"] * 11 + ["valid"] * 3 + ["test"] * 3})  # CCO trains, OCC is tested
    table.to_csv(tmp_path / "dups.csv", index=False)
    argv = ["--dataset", str(tmp_path / "dups.csv"), "--output-dir", str(tmp_path / "out"), "--baseline", "fingerprint",
            "--split-column", "part", "--target-columns", "y", "--seeds", "1", "2", "3", "--epochs", "1", "--head-lr",
            "1e-3", "--no-progress"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run(build_parser().parse_args(argv))
    messages = [str(w.message) for w in caught]
    assert sum("different labels" in m for m in messages) == 1, messages
    overlap = [m for m in messages if "also in the training part" in m]
    assert len(overlap) == 1 and "with every split seed" in overlap[0], messages


def test_inputs_with_several_fragments_are_counted_in_a_warning():
    from moleclip.processing.molecules import warn_about_fragments

    with pytest.warns(UserWarning, match="2 of 3 molecules hold several fragments"):
        assert warn_about_fragments(["CN1CCC[C@H]1c1cccnc1.OC(=O)C(=O)O", "[Na+].[Cl-]", "CCO"], "table.csv") == 2


# ----------------------------------------------------------------------------------------------------------- tables
def test_tables_in_other_dialects_are_read_or_refused_by_name(tmp_path):
    from moleclip.processing.tables import read_molecule_table

    (tmp_path / "semicolon.csv").write_text("smiles;y\nCCO;1\nCCN;2\n")
    assert read_molecule_table(tmp_path / "semicolon.csv").frame["y"].tolist() == ["1", "2"]
    (tmp_path / "sheet.xlsx").write_bytes(b"PK\x03\x04")
    with pytest.raises(ValueError, match="Unsupported file type for .*sheet.xlsx"):
        read_molecule_table(tmp_path / "sheet.xlsx")
    (tmp_path / "utf16.csv").write_bytes("smiles,y\nCCO,1\n".encode("utf-16"))
    with pytest.raises(ValueError, match="utf16.csv is not UTF-8"):
        read_molecule_table(tmp_path / "utf16.csv")


def test_a_table_that_would_lose_records_or_guess_its_smiles_column_is_refused_by_the_command(tmp_path, capsys):
    """Bad input, through `moleclip embed`: a stray quote that a quote 50 lines later closes (which wrote 50 of 100
    embeddings with exit status 0), and two SMILES columns differing in case (the second used silently). Each is
    one line and exit status 2, with nothing written; choosing the column reads the second table."""
    from moleclip_cli.main import main

    rows = ["id,smiles"] + [f"cpd{i},{'C' * (i % 5 + 1)}" for i in range(100)]
    rows[11], rows[61] = '"' + rows[11], rows[61].replace(",", '",')
    (tmp_path / "quote.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "two.csv").write_text("SMILES,smiles,y\nCCO,CCN,1\nCC,CCCC,2\n")
    out = tmp_path / "out.csv"
    for table, words in (("quote.csv", "quote.csv: line 12: a double quote opens a field in column 'id' that closes "
                                       "only on line 62"),
                         ("two.csv", "several SMILES columns in .*two.csv: 'SMILES', 'smiles'")):
        status = main(["embed", "--model", "tiny", "--input", str(tmp_path / table), "--output", str(out),
                       "--no-progress"])
        err = capsys.readouterr().err.strip()
        assert status == 2 and re.search(words, err) and "\n" not in err and not out.exists(), err
    assert main(["embed", "--model", "tiny", "--input", str(tmp_path / "two.csv"), "--smiles-column", "smiles",
                 "--output", str(out), "--no-progress"]) == 0
    assert pd.read_csv(out)["smiles"].tolist() == ["CCN", "CCCC"]

def test_pretraining_reports_left_out_molecules_by_their_file_line(tmp_path, capsys):
    from moleclip.training.pretraining.table import load_pretraining_table
    from moleclip.training.pretraining.config import PretrainConfig

    (tmp_path / "in.csv").write_text("smiles\nCCO\nCCN\nnot_a_smiles\nc1ccccc1\nCCCC\nCCCO\nCCCN\nCC(C)O\n")
    table = load_pretraining_table(PretrainConfig(input=str(tmp_path / "in.csv"), output_dir=str(tmp_path / "out"),
                                                  k=["2", "3"], progress=False))
    assert len(table.smiles) == 7 and "line 4 'not_a_smiles' (could not be parsed" in capsys.readouterr().out


@pytest.mark.parametrize("mean, std, words", [(float("nan"), 1.0, "must be finite"), (0.0, 0.0, "must be positive")])
def test_absurd_saved_target_statistics_are_refused_at_load(tmp_path, mean, std, words):
    import json

    from moleclip import MoleCLIPConfig, MoleCLIPForPropertyPrediction

    config = MoleCLIPConfig.from_preset("tiny", num_targets=1, target_mean=[0.5], target_std=[2.0])
    MoleCLIPForPropertyPrediction(config).save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    saved.update(target_mean=[mean], target_std=[std])
    (tmp_path / "config.json").write_text(json.dumps(saved))
    with pytest.raises(ValueError, match=words):
        MoleCLIPForPropertyPrediction.from_pretrained(tmp_path)


@pytest.mark.parametrize("damage, words", [("truncated", "weights file is damaged"), ("random", "weights file is damaged"),
                                           ("missing", "no weights file")])
def test_damaged_or_half_saved_checkpoints_are_reported_as_such(tmp_path, capsys, damage, words):
    import os

    from moleclip_cli.main import main

    folder = _property_model_dir(tmp_path / "model")
    weights = folder / "model.safetensors"
    if damage == "truncated":
        weights.write_bytes(weights.read_bytes()[:1000])
    elif damage == "random":
        weights.write_bytes(os.urandom(4096))
    else:
        weights.unlink()
    (tmp_path / "new.smi").write_text("CCO\n")
    capsys.readouterr()
    status = main(["predict", "--model", str(folder), "--input", str(tmp_path / "new.smi"),
                   "--output", str(tmp_path / "out.csv"), "--no-progress"])
    error = capsys.readouterr().err
    assert status == 2 and words in error and "Hub" not in error


def test_a_second_process_writing_the_same_output_is_refused(tmp_path, capsys):
    import subprocess
    import sys

    from moleclip_cli.main import main

    (tmp_path / "new.smi").write_text("CCO\n")
    out = tmp_path / "emb.csv"
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        (tmp_path / ".emb.csv.lock").write_text(str(holder.pid))  # as the first `moleclip embed` leaves it meanwhile
        status = main(["embed", "--model", "tiny", "--input", str(tmp_path / "new.smi"), "--output", str(out),
                       "--no-progress"])
        assert status == 2 and f"pid {holder.pid}" in capsys.readouterr().err and not out.exists()
    finally:
        holder.kill()
        holder.wait()
    assert main(["embed", "--model", "tiny", "--input", str(tmp_path / "new.smi"), "--output", str(out),
                 "--no-progress"]) == 0
    assert out.is_file() and not (tmp_path / ".emb.csv.lock").exists()


def test_batched_inference_reports_skipped_molecules_once_by_their_line(tmp_path, capsys, caplog):
    import logging

    from moleclip_cli.main import main

    (tmp_path / "b.smi").write_text("CCO\nxx\nCCN\nyy\n")
    with caplog.at_level(logging.WARNING), pytest.warns(UserWarning) as caught:
        assert main(["embed", "--model", "tiny", "--input", str(tmp_path / "b.smi"), "--output",
                     str(tmp_path / "b.csv"), "--batch-size", "2", "--no-progress"]) == 0
    skipped = [str(w.message) for w in caught if "could not be used" in str(w.message)]
    assert len(skipped) == 1 and "line 2 'xx'" in skipped[0] and "line 4 'yy'" in skipped[0]
    assert not [r for r in caplog.records if "#1" in r.getMessage()]  # no per-batch positions (#1 of each batch)


# A 293 kB .pth that names `resblocks.999999` (or a block far beyond the ones it holds) declares a model the converter
# would allocate before finding the weights missing; it is refused from the tensors present, before anything is built.
@pytest.mark.parametrize("damage, words", [
    ("a block named 999999", "names block 999999 but holds only 3 blocks .block 2 is missing"),
    ("a block named 40", "names block 40 but holds only 3 blocks .block 2 is missing"),
    ("a block without its MLP", "block 1 of the vision tower lacks mlp.c_fc.weight"),
    ("no projection", "lacks proj"),
])
def test_a_crafted_original_checkpoint_is_refused_before_building(tmp_path, damage, words, monkeypatch):
    import torch

    from moleclip import MoleCLIPModel
    from moleclip.convert_original import convert_original_checkpoint
    from tests.test_convert_original import PREFIX, synthetic_visual_state

    visual = synthetic_visual_state()
    if damage.startswith("a block named"):
        number = damage.split()[-1]
        visual[f"transformer.resblocks.{number}.ln_1.weight"] = torch.ones(128)
    elif damage == "a block without its MLP":
        del visual["transformer.resblocks.1.mlp.c_fc.weight"]
    else:
        del visual["proj"]
    path = tmp_path / "crafted.pth"
    torch.save({PREFIX + k: v for k, v in visual.items()}, path)
    built = []
    monkeypatch.setattr(MoleCLIPModel, "__init__", lambda self, *a, **k: built.append(1) or (_ for _ in ()).throw(
        AssertionError("a model was built")))
    with pytest.raises(ValueError, match=words):
        convert_original_checkpoint(path)
    assert not built


def test_refusing_a_molecule_leaves_rdkit_logging_as_the_user_set_it():
    # a user who switched RDKit's warnings off keeps them off (quiet_rdkit used to switch every RDKit log back on)
    from rdkit import rdBase

    from moleclip.processing.molecules import InvalidMoleculeError, quiet_rdkit, to_mol

    rdBase.DisableLog("rdApp.warning")
    try:
        before = rdBase.LogStatus()
        with pytest.raises(InvalidMoleculeError, match="unclosed ring"):
            to_mol("C1CC")
        with quiet_rdkit():
            to_mol("CCO")
        assert rdBase.LogStatus() == before
    finally:
        rdBase.EnableLog("rdApp.warning")

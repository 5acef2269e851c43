"""`--standardize parent`: salts and charged forms are prepared as their parent, everywhere molecules are read, and a
finetuned model prepares new molecules as its training molecules were."""

import json
import warnings

import numpy as np
import pandas as pd
import pytest

from moleclip import MoleCLIPImageProcessor
from moleclip.processing.fingerprints import maccs_keys, morgan_fingerprints
from moleclip.processing.molecules import InvalidMoleculeError
from moleclip.processing.standardize import STANDARDIZATIONS, standardize_mol, standardize_smiles
from moleclip_cli.main import main as cli

NICOTINE = "CN1CCC[C@H]1c1cccnc1"
NICOTINE_OXALATE = "CN1CCC[C@H]1c1cccnc1.OC(=O)C(=O)O"
# (given, parent): a salt, a carboxylate with its counter-ion, an ammonium chloride, a quaternary ammonium (charge
# cannot go), a molecule that needs nothing
PARENTS = [
    (NICOTINE_OXALATE, NICOTINE),
    ("CC(=O)[O-].[Na+]", "CC(=O)O"),
    ("CC[NH3+].[Cl-]", "CCN"),
    ("C[N+](C)(C)C.[Cl-]", "C[N+](C)(C)C"),
    ("c1ccccc1O", "Oc1ccccc1"),
]


@pytest.mark.parametrize("given, parent", PARENTS)
def test_parent_is_the_largest_fragment_neutralised(given, parent):
    result = standardize_smiles([given], "parent")
    assert result.smiles == [parent] and not result.skipped
    assert result.changed == ([] if given == "c1ccccc1O" else [0])  # a canonical rewrite is not a change


def test_none_keeps_the_strings_and_still_refuses_bad_ones():
    result = standardize_smiles([NICOTINE_OXALATE, "not a smiles", "CCO CCN"], "none")
    assert result.smiles[0] == NICOTINE_OXALATE and result.changed == []
    assert [s.index for s in result.skipped] == [1, 2]


def test_unknown_choice_and_failures_are_reported():
    with pytest.raises(ValueError, match="standardize must be one of"):
        standardize_smiles(["CCO"], "parent_tautomer")
    with pytest.raises(ValueError, match="standardize must be one of"):
        MoleCLIPImageProcessor(standardize="salt_strip")
    with pytest.raises(InvalidMoleculeError, match="position 1"):
        standardize_smiles(["CCO", "C1CC"], "parent", on_error="raise")
    assert STANDARDIZATIONS == ("none", "parent")


@pytest.mark.data
def test_parent_is_idempotent_on_real_tables(data_dir):
    from moleclip.processing.tables import read_molecule_table

    for path in (data_dir / "moleculenet" / "bbbp.csv", data_dir / "pretraining" / "chembl25_3k.smi"):
        smiles = read_molecule_table(path).smiles[:300]
        once = standardize_smiles(smiles, "parent")
        twice = standardize_smiles(once.smiles, "parent")
        assert twice.smiles == once.smiles and twice.changed == [], path.name
        assert once.changed  # the tables do hold salts: the check above is not vacuous


def test_processor_draws_the_parent_and_saves_the_setting(tmp_path):
    plain = MoleCLIPImageProcessor()
    standardizing = MoleCLIPImageProcessor(standardize="parent")
    salt = standardizing([NICOTINE_OXALATE], return_tensors="np")["pixel_values"]
    parent = plain([NICOTINE], return_tensors="np")["pixel_values"]
    as_written = plain([NICOTINE_OXALATE], return_tensors="np")["pixel_values"]
    np.testing.assert_array_equal(salt, parent)
    assert np.abs(as_written - parent).max() > 0.5
    # one call can override, and the saved processor keeps the setting
    np.testing.assert_array_equal(plain([NICOTINE_OXALATE], standardize="parent", return_tensors="np")["pixel_values"],
                                  parent)
    standardizing.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "preprocessor_config.json").read_text())["standardize"] == "parent"
    assert MoleCLIPImageProcessor.from_pretrained(tmp_path).standardize == "parent"


def test_layout_cache_keeps_the_two_preparations_apart():
    processor = MoleCLIPImageProcessor()
    first = processor([NICOTINE_OXALATE], return_tensors="np")["pixel_values"]
    processor([NICOTINE_OXALATE], standardize="parent", return_tensors="np")
    np.testing.assert_array_equal(processor([NICOTINE_OXALATE], return_tensors="np")["pixel_values"], first)


def test_fingerprints_of_a_salt_are_its_parents_and_say_which_molecule():
    morgan = morgan_fingerprints([NICOTINE_OXALATE, NICOTINE], n_jobs=1, progress=False, standardize="parent")
    np.testing.assert_array_equal(morgan.bits[0], morgan.bits[1])
    assert morgan.smiles == [NICOTINE, NICOTINE]
    maccs = maccs_keys([NICOTINE_OXALATE, NICOTINE], n_jobs=1, progress=False, standardize="parent")
    np.testing.assert_array_equal(maccs.bits[0], maccs.bits[1])
    assert morgan_fingerprints([NICOTINE_OXALATE], n_jobs=1, progress=False).smiles is None


def test_standardize_mol_names_the_molecule_it_cannot_use():
    from rdkit import Chem

    mol = Chem.MolFromSmiles("CCO")
    assert standardize_mol(mol, "none") is mol
    assert Chem.MolToSmiles(standardize_mol(Chem.MolFromSmiles("CCO.O"), "parent")) == "CCO"


# --------------------------------------------------------------------------------------------------- commands
from tests.tiny_models import SMILES, finetune_tiny_models  # noqa: E402


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory):
    """Both kinds of model finetuned with --standardize parent on a table of hydrochloride salts."""
    root = tmp_path_factory.mktemp("standardize")
    with warnings.catch_warnings(record=True) as seen:  # the salts are gone: no warning about fragments
        warnings.simplefilter("always")
        finetune_tiny_models(root, [f"{s}.Cl" for s in SMILES], "--standardize", "parent", names=("image", "fp"))
    assert not any("several fragments" in str(w.message) for w in seen)
    new = root / "new.csv"
    pd.DataFrame({"id": ["a", "b", "c"], "smiles": [NICOTINE_OXALATE, NICOTINE, "C1CC"]}).to_csv(new, index=False)
    return root, new


def test_finetune_records_the_choice(finetuned):
    root, _ = finetuned
    results = json.loads((root / "image" / "results.json").read_text())
    assert results["dataset"]["standardize"] == "parent" and results["dataset"]["n_standardized"] == len(SMILES)
    assert json.loads((root / "image" / "model" / "preprocessor_config.json").read_text())["standardize"] == "parent"
    assert json.loads((root / "fp" / "model" / "fingerprint_mlp.json").read_text())["standardize"] == "parent"


@pytest.mark.parametrize("kind", ["image", "fp"])
def test_predict_prepares_new_molecules_as_the_training_ones(finetuned, tmp_path, kind):
    root, new = finetuned
    out = tmp_path / "pred.csv"
    assert cli(["predict", "--model", str(root / kind / "model"), "--input", str(new), "--output", str(out),
                "--no-progress"]) == 0
    frame = pd.read_csv(out, keep_default_na=False)
    assert list(frame["id"]) == ["a", "b", "c"]
    # read as text (keep_default_na=False keeps the skipped row's empty cells empty): the column is strings
    first, second, skipped = frame["predicted_heavy"]
    assert float(first) == pytest.approx(float(second), rel=1e-5) and skipped == ""
    assert list(frame["moleclip_standardized_smiles"]) == [NICOTINE, NICOTINE, ""]
    assert frame.loc[2, "moleclip_skipped"] != ""


def test_embed_override_and_default(finetuned, tmp_path):
    root, new = finetuned
    out = tmp_path / "emb.csv"
    assert cli(["embed", "--model", "tiny", "--input", str(new), "--output", str(out), "--no-progress",
                "--standardize", "parent"]) == 0
    frame = pd.read_csv(out)
    columns = [c for c in frame.columns if c.startswith("emb_")]
    np.testing.assert_allclose(frame.loc[0, columns].to_numpy(float), frame.loc[1, columns].to_numpy(float), rtol=1e-5)
    assert cli(["embed", "--model", "tiny", "--input", str(new), "--output", str(out), "--no-progress"]) == 0
    frame = pd.read_csv(out)
    assert "moleclip_standardized_smiles" not in frame.columns
    assert np.abs(frame.loc[0, columns].to_numpy(float) - frame.loc[1, columns].to_numpy(float)).max() > 0


def test_pseudo_labels_label_the_parents_and_pretrain_checks_it(tmp_path):
    from moleclip.processing.pseudo_labels import recorded_standardization

    source = tmp_path / "mols.smi"
    source.write_text("\n".join([f"{s}.[Na+].[Cl-]" for s in SMILES] + [NICOTINE_OXALATE]) + "\n")
    labels = tmp_path / "labels.parquet"
    assert cli(["pseudo-labels", "--input", str(source), "--k", "3", "--output", str(labels), "--no-progress",
                "--standardize", "parent", "--n-jobs", "1"]) == 0
    table = pd.read_parquet(labels)
    assert table["smiles"].iloc[-1] == NICOTINE and table["input_smiles"].iloc[-1] == NICOTINE_OXALATE
    assert not any("." in s for s in table["smiles"])
    assert recorded_standardization(labels) == "parent"

    from moleclip.training.pretraining.table import _check_labelled_standardization
    from moleclip.training.pretraining.config import PretrainConfig

    config = PretrainConfig(input=str(labels), output_dir=str(tmp_path / "run"), backbone="tiny")
    with pytest.raises(ValueError, match="labelled with standardize=parent"):
        _check_labelled_standardization(config)
    _check_labelled_standardization(PretrainConfig(input=str(labels), output_dir=str(tmp_path / "run"),
                                                   backbone="tiny", standardize="parent"))

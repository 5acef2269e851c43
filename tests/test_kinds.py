"""Model kinds behind one interface: the registry finds each saved folder's kind, every kind runs through the one
engine, and a kind written here (atom counts) needs nothing but its class and a registration."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from moleclip import MoleCLIPConfig, MoleCLIPForPropertyPrediction, MoleCLIPImageProcessor
from moleclip.processing.fingerprints import morgan_fingerprints
from moleclip.training.baselines import FingerprintPredictor, ForestPredictor
from moleclip.training.kinds import (KINDS, FingerprintKind, ForestKind, ImageKind, ModelKind, kind_of_folder,
                                     load_kind)

SMILES = ["CCO", "c1ccccc1O", "CCN", "CC(=O)O", "CCCC"]


def _bits(smiles):
    return morgan_fingerprints(smiles, progress=False).bits


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("kinds")
    torch.manual_seed(0)
    config = MoleCLIPConfig.from_preset("tiny", pseudo_label_classes=[], num_targets=2, target_names=["a", "b"])
    ImageKind(MoleCLIPForPropertyPrediction(config).eval(), MoleCLIPImageProcessor()).save(root / "image")
    FingerprintKind(FingerprintPredictor(2048, 1, "regression", hidden_size=16, target_names=["y"])).save(root / "fp")
    forest = ForestPredictor.fit("classification", _bits(SMILES), np.array([[0], [1], [0], [1], [0]]), seed=0,
                                 n_estimators=5, n_jobs=1)
    ForestKind(forest).save(root / "forest")
    return root


@pytest.mark.parametrize("name, kind", [("image", ImageKind), ("fp", FingerprintKind), ("forest", ForestKind)])
def test_the_registry_recognises_each_kinds_folder(folders, name, kind):
    assert kind_of_folder(str(folders / name)) is kind
    loaded = load_kind(str(folders / name), trust_pickle=True)
    assert type(loaded) is kind and loaded.describe()


def test_a_folder_of_no_kind_is_refused_and_a_preset_is_not_a_finetuned_model(tmp_path):
    (tmp_path / "notes.txt").write_text("nothing")
    assert kind_of_folder(str(tmp_path)) is None
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_kind(str(tmp_path))
    with pytest.raises(ValueError, match="randomly initialised preset"):
        load_kind("tiny")


def test_a_forest_loads_only_when_pickle_is_trusted(folders):
    with pytest.raises(ValueError, match="--trust-pickle"):
        load_kind(str(folders / "forest"))


def test_kinds_give_their_facts_from_what_they_saved(folders):
    image = load_kind(str(folders / "image"))
    assert (image.task, image.target_names, image.embedding_width) == ("regression", ["a", "b"], 32)
    fp = load_kind(str(folders / "fp"))
    assert (fp.task, fp.target_names, fp.embedding_width, fp.standardize) == ("regression", ["y"], None, "none")
    forest = load_kind(str(folders / "forest"), trust_pickle=True)
    assert (forest.task, forest.target_names) == ("classification", ["target_0"])
    # the two Morgan-bit kinds with the same settings prepare alike (an ensemble draws its bits once)
    assert fp.preparation() == forest.preparation() != image.preparation()


def test_a_second_kind_under_a_registered_name_is_refused():
    from moleclip.training.kinds import register_kind

    with pytest.raises(ValueError, match="registered already"):
        register_kind("image")(type("Other", (ImageKind,), {}))

"""MoleCLIPConfig as transformers' loaders use it: a setting given is used, or refused, never dropped."""

import copy

import pytest
from transformers import AutoModelForImageClassification

from moleclip import MoleCLIPConfig, MoleCLIPModel


def test_num_labels_sizes_the_head_instead_of_leaving_a_one_output_head(tmp_path):
    MoleCLIPModel(MoleCLIPConfig.from_preset("tiny", pseudo_label_classes=[])).save_pretrained(tmp_path)
    # transformers' idiom for a 3-output head; MoleCLIP's head has one output per target (num_targets)
    model = AutoModelForImageClassification.from_pretrained(tmp_path, num_labels=3)
    assert model.config.num_targets == 3 and model.head.layers[-1].out_features == 3
    assert MoleCLIPConfig.from_preset("tiny", id2label={0: "toxic", 1: "active"}).num_targets == 2
    with pytest.raises(ValueError, match="disagree"):
        MoleCLIPConfig.from_preset("tiny", num_targets=2, num_labels=3)
    model = AutoModelForImageClassification.from_pretrained(tmp_path, num_targets=3)
    assert model.config.num_targets == 3 and model.head.layers[-1].out_features == 3


def test_a_configs_own_dict_and_copies_still_build_it():
    config = MoleCLIPConfig.from_preset("tiny", num_targets=2, task="classification")
    again = MoleCLIPConfig(**config.to_dict())  # to_dict() carries transformers' default id2label
    assert again.num_targets == 2 and copy.deepcopy(config).num_targets == 2
    assert MoleCLIPConfig(**{**config.to_dict(), "num_targets": 3}).num_targets == 3


def test_from_pretrained_checks_its_keyword_settings_as_the_constructor_does(tmp_path):
    MoleCLIPConfig.from_preset("tiny", num_targets=2, target_names=["logS", "logP"]).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="2 target_names given for num_targets=3"):
        MoleCLIPConfig.from_pretrained(tmp_path, num_targets=3)
    with pytest.raises(ValueError, match="nonsense"):
        MoleCLIPConfig.from_pretrained(tmp_path, task="nonsense")
    config = MoleCLIPConfig.from_pretrained(tmp_path, num_targets=3, target_names=["a", "b", "c"])
    assert config.num_targets == 3
    config, unused = MoleCLIPConfig.from_pretrained(tmp_path, return_unused_kwargs=True, foo=1)
    assert config.target_names == ["logS", "logP"] and unused == {"foo": 1}

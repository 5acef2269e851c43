"""Model kinds behind one interface: the registry finds each saved folder's kind, every kind runs through the one
engine, and a kind written here (atom counts) needs nothing but its class and a registration."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from moleclip import MoleCLIPConfig, MoleCLIPForPropertyPrediction, MoleCLIPImageProcessor
from moleclip.processing.fingerprints import morgan_fingerprints
from moleclip.training.kinds.baselines import FingerprintPredictor, ForestPredictor
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


# ---------------------------------------------------------------------------------------------- a kind of our own
class HeavyAtoms:
    """The toy kind's preparation: each molecule's heavy-atom count."""

    parallel = False

    def __call__(self, smiles):
        from moleclip.processing.molecules import InvalidMoleculeError, SkippedMolecule, to_mol
        from moleclip.training.kinds import Prepared

        counts, kept, skipped = [], [], []
        for i, text in enumerate(smiles):
            try:
                counts.append([float(to_mol(text).GetNumHeavyAtoms())])
                kept.append(i)
            except InvalidMoleculeError as err:
                skipped.append(SkippedMolecule(i, text, err.reason))
        return Prepared(np.asarray(counts, dtype=np.float32).reshape(-1, 1), np.asarray(kept), skipped)


class AtomCountKind(ModelKind):
    """A model that reads atom counts: prediction = weight x count; embedding = the count."""

    FILE = "atom_counts.json"

    @classmethod
    def recognises(cls, spec):
        return (Path(spec) / cls.FILE).is_file()

    @classmethod
    def load(cls, spec, trust_pickle=False):
        return cls(json.loads((Path(spec) / cls.FILE).read_text()))

    def save(self, folder):
        Path(folder).mkdir(parents=True, exist_ok=True)
        (Path(folder) / self.FILE).write_text(json.dumps(self.model))
        return Path(folder)

    def preparer(self, **options):
        return HeavyAtoms()

    def forward(self, inputs, logits=False, shared=None):
        from moleclip.training.kinds import Outputs

        return Outputs(inputs * self.model["weight"], inputs)

    @property
    def settings(self):
        return {"task": "regression", "num_targets": 1, "target_names": ["atoms"]}

    @property
    def embedding_width(self):
        return 1

    def describe(self):
        return "atom counts"


@pytest.fixture
def atom_counts(tmp_path):
    from moleclip.training.kinds import register_kind

    register_kind("atom_counts")(AtomCountKind)
    try:
        yield AtomCountKind({"weight": 2.0}).save(tmp_path / "counts")
    finally:
        KINDS.pop("atom_counts")


def test_a_new_kind_is_one_class_and_a_registration_and_runs_through_the_engine(atom_counts):
    from moleclip.training.inference import engine

    kind = load_kind(str(atom_counts))
    assert isinstance(kind, AtomCountKind)
    values, kept, skipped = engine.predict(kind, ["CCO", "not a molecule", "c1ccccc1"], batch_size=2, progress=False)
    assert values.tolist() == [[6.0], [12.0]] and kept.tolist() == [0, 2] and [s.index for s in skipped] == [1]
    embeddings, kept, _ = engine.embed(kind, ["CCCC", "CC"], batch_size=1, progress=False)
    assert embeddings.tolist() == [[4.0], [2.0]] and kept.tolist() == [0, 1]


def test_a_new_kind_predicts_through_the_command_line_unchanged(atom_counts, tmp_path):
    import pandas as pd

    from moleclip_cli.main import main

    table = tmp_path / "new.csv"
    pd.DataFrame({"id": ["a", "b", "c"], "smiles": ["CCO", "xx", "CCCCCC"]}).to_csv(table, index=False)
    out = tmp_path / "pred.csv"
    assert main(["predict", "--model", str(atom_counts), "--input", str(table), "--output", str(out),
                 "--no-progress"]) == 0
    frame = pd.read_csv(out)
    assert frame["predicted_atoms"].tolist()[::2] == [6.0, 12.0] and frame["predicted_atoms"].isna().tolist()[1]


def test_models_that_prepare_alike_share_each_batchs_preparation(monkeypatch):
    from moleclip.training.inference import engine

    calls = []
    original = HeavyAtoms.__call__
    monkeypatch.setattr(HeavyAtoms, "__call__", lambda self, smiles: calls.append(len(smiles)) or original(self, smiles))
    monkeypatch.setattr(AtomCountKind, "preparation", lambda self: "atom counts")
    one, two = AtomCountKind({"weight": 1.0}), AtomCountKind({"weight": 3.0})
    first, second = engine.run([one, two], ["C", "CC", "CCC"], batch_size=2, progress=False, logits=[False, True])
    assert calls == [2, 1]  # one preparation of each batch for both models
    assert first.values[:, 0].tolist() == [1.0, 2.0, 3.0] and second.values[:, 0].tolist() == [3.0, 6.0, 9.0]

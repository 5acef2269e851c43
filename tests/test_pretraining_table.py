"""The molecules and pseudo-labels of a pretraining run (`training/pretraining/table.py`), without training a model."""

import numpy as np
import pandas as pd
import pytest

from moleclip.processing.pseudo_labels import recorded_standardization
from moleclip.training.pretraining.table import load_pretraining_table
from moleclip.training.pretraining.config import PSEUDO_LABEL_FILE, PretrainConfig

# a salt, a charged acid and plain molecules: standardising to the parent changes some of them
SMILES = ["CCO", "c1ccccc1O", "CC(=O)[O-].[Na+]", "CCN(CC)CC.Cl", "O=C(O)c1ccccc1", "C1CCCCC1", "Clc1ccc(Br)cc1",
          "N#Cc1ccccc1", "CCOC(=O)C", "CC(C)Cc1ccc(C)cc1", "C1=CC=C2C=CC=CC2=C1", "CC(=O)Nc1ccc(O)cc1"]


def config(input_path, output_dir, **settings):
    return PretrainConfig(input=str(input_path), output_dir=str(output_dir), progress=False, pseudo_label_jobs=1,
                          **settings)


def test_computed_labels_record_the_standardisation_so_the_file_can_be_an_input(tmp_path):
    source = tmp_path / "mols.smi"
    source.write_text("\n".join(SMILES) + "\n")
    first = load_pretraining_table(config(source, tmp_path / "run", k=[2, 4], standardize="parent"))
    saved = tmp_path / "run" / PSEUDO_LABEL_FILE
    assert recorded_standardization(saved) == "parent"
    # Another run on that table with the same preparation takes its labels as they are ...
    again = load_pretraining_table(config(saved, tmp_path / "other", standardize="parent"))
    assert again.smiles == first.smiles and again.ks == [2, 4]
    np.testing.assert_array_equal(again.labels, first.labels)
    # ... and one asking for unprepared molecules is told how the table was made.
    with pytest.raises(ValueError, match="labelled with standardize=parent"):
        load_pretraining_table(config(saved, tmp_path / "third", standardize="none"))
    assert pd.read_parquet(saved)["row"].tolist() == list(range(len(SMILES)))


@pytest.mark.parametrize("kind", ["parquet", "csv"])
def test_a_label_column_with_a_missing_class_is_refused_with_its_row(tmp_path, kind):
    labels = pd.array([0, 1, None] + [1] * (len(SMILES) - 3), dtype="Int64")  # a nullable column, as pandas keeps one
    frame = pd.DataFrame({"smiles": SMILES, "label_k2": labels})
    path = tmp_path / f"labelled.{kind}"
    frame.to_parquet(path) if kind == "parquet" else frame.to_csv(path, index=False)  # CSV: an empty cell
    with pytest.raises(ValueError, match="label_k2 has no class for 1 molecule\\(s\\), first row 3"):
        load_pretraining_table(config(path, tmp_path / "run"))
    if kind == "csv":  # where a CSV row is in the file: the header is line 1
        with pytest.raises(ValueError, match="row 3 \\(line 4 of the file\\)"):
            load_pretraining_table(config(path, tmp_path / "run"))


def test_a_table_that_does_not_record_its_preparation_is_not_said_to_be_unprepared(tmp_path):
    labelled = tmp_path / "labelled.csv"  # a CSV has no place for the setting
    pd.DataFrame({"smiles": SMILES, "label_k2": [i % 2 for i in range(len(SMILES))]}).to_csv(labelled, index=False)
    assert load_pretraining_table(config(labelled, tmp_path / "a")).ks == [2]  # taken as molecules as written
    with pytest.raises(ValueError, match="does not record how its molecules were prepared") as refused:
        load_pretraining_table(config(labelled, tmp_path / "b", standardize="parent"))
    assert "labelled with standardize=none" not in str(refused.value)

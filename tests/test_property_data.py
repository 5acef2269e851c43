"""Loading labelled molecule tables: named sets, user files, missing labels, bad rows and clear errors."""

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from moleclip.processing import property_data
from moleclip.processing.property_data import (
    DATASETS,
    PropertyDataset,
    SkippedRow,
    load_property_dataset,
    resolve_data_dir,
)

DATA = Path(__file__).parent / "data"


def _load_quiet(*args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_property_dataset(*args, **kwargs)


def test_regression_file_missing_labels_and_skipped_rows():
    with pytest.warns(UserWarning, match=r"2 of 8 rows .* left out.*line 5 'not_a_smiles'"):
        ds = load_property_dataset(DATA / "tiny_regression.csv", target_columns=["logp", "charge"])
    assert ds.task == "regression" and ds.metric == "mae" and ds.default_split == "random"
    assert ds.target_names == ["logp", "charge"]
    assert ds.name == "tiny_regression"
    assert len(ds) == 6 and ds.smiles[0] == "CCO" and "not_a_smiles" not in ds.smiles
    assert ds.targets.dtype == np.float32 and ds.targets.shape == (6, 2)
    assert np.isnan(ds.targets[1, 1]) and ds.targets[1, 0] == pytest.approx(2.13)
    # rows 3 (bad SMILES) and 5 (empty SMILES) of the data sit on file lines 5 and 7 under the header
    assert [(s.index, s.line) for s in ds.skipped] == [(3, 5), (5, 7)]
    assert all(isinstance(s, SkippedRow) for s in ds.skipped)
    assert "empty" in ds.skipped[1].reason


def test_hf_dataset_mirrors_arrays_and_subset():
    ds = _load_quiet(DATA / "tiny_regression.csv", target_columns=["logp", "charge"])
    hf = ds.hf_dataset
    assert hf.column_names == ["smiles", "logp", "charge"]
    assert hf["smiles"] == ds.smiles
    charge = np.asarray(hf["charge"], dtype=np.float64)
    assert np.isnan(charge[1]) and charge[0] == pytest.approx(0.1)

    part = ds.subset([4, 0])
    assert isinstance(part, PropertyDataset) and len(part) == 2
    assert part.smiles == [ds.smiles[4], ds.smiles[0]]
    np.testing.assert_array_equal(part.targets, ds.targets[[4, 0]])
    assert part.hf_dataset["smiles"] == part.smiles
    with pytest.raises(IndexError):
        ds.subset([len(ds)])


def test_classification_inferred_and_selected_columns():
    ds = load_property_dataset(DATA / "tiny_classification.csv", target_columns=["active", "toxic"])
    assert ds.task == "classification" and ds.metric == "roc_auc"
    assert np.isnan(ds.targets[4, 0]) and np.isnan(ds.targets[1, 1])
    assert set(np.unique(ds.targets[~np.isnan(ds.targets)])) == {0.0, 1.0}
    one = load_property_dataset(DATA / "tiny_classification.csv", target_columns="toxic")
    assert one.targets.shape == (6, 1)


def test_non_numeric_target_names_column_and_value():
    with pytest.raises(ValueError, match=r"'id'.*not numeric.*'a'"):
        load_property_dataset(DATA / "tiny_classification.csv", target_columns=["id", "active"])
    # without target columns nothing is guessed from several candidates (an ID, a calculated value...)
    with pytest.raises(ValueError, match=r"several numeric columns \('active', 'toxic'\).*--target-columns"):
        load_property_dataset(DATA / "tiny_classification.csv")


def test_the_only_numeric_column_is_the_target_and_absurd_targets_are_refused(tmp_path):
    path = tmp_path / "one.csv"
    path.write_text("id,smiles,y,note\nmol-1,CCO,1.5,a\nmol-2,CCN,2.5,b\nmol-3,CCC,0.5,c\n")
    assert load_property_dataset(path).target_names == ["y"]
    path.write_text("smiles,y\nCCO,1e300\nCCN,2\nCCC,3\n")
    with pytest.raises(ValueError, match=r"1e\+300 at line 2, beyond what float32"):
        load_property_dataset(path)
    path.write_text("smiles,y\nCCO,4\nCCN,4\nCCC,\n")
    with pytest.raises(ValueError, match=r"'y'.*is constant \(every label is 4\)"):
        load_property_dataset(path)


def test_given_task_is_validated():
    with pytest.raises(ValueError, match=r"0 or 1.*'logp'"):
        _load_quiet(DATA / "tiny_regression.csv", task="classification", target_columns=["logp", "charge"])
    with pytest.raises(ValueError, match="task must be one of"):
        load_property_dataset(DATA / "tiny_regression.csv", task="ranking")
    ds = load_property_dataset(DATA / "tiny_classification.csv", target_columns=["active"], task="regression")
    assert ds.task == "regression" and ds.metric == "mae"


def test_missing_column_lists_available(tmp_path):
    with pytest.raises(KeyError, match=r"no target column 'pIC50'.*'smiles', 'logp', 'charge'"):
        load_property_dataset(DATA / "tiny_regression.csv", target_columns=["pIC50"])
    with pytest.raises(KeyError, match=r"column 'SMILES' not found .*'smiles', 'logp', 'charge'"):
        load_property_dataset(DATA / "tiny_regression.csv", smiles_column="SMILES")
    path = tmp_path / "nosmiles.csv"
    path.write_text("molecule,y\nCCO,1.0\n")
    with pytest.raises(KeyError, match="no SMILES column found.*'molecule'"):
        load_property_dataset(path)
    ds = load_property_dataset(path, smiles_column="molecule")
    assert ds.smiles == ["CCO"]


def test_a_target_named_twice_is_refused():
    with pytest.raises(ValueError, match=r"\['logp'\] given more than once"):
        _load_quiet(DATA / "tiny_regression.csv", target_columns=["logp", "charge", "logp"])


def test_missing_file_and_unknown_name(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a named dataset"):
        load_property_dataset(tmp_path / "absent.csv")
    with pytest.raises(FileNotFoundError, match="bace"):
        load_property_dataset("no_such_set")


def test_no_valid_rows_and_no_labels(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("smiles,y\nxx,1\nyy,2\n")
    with pytest.raises(ValueError, match="No valid molecules.*all 2"):
        load_property_dataset(bad)
    empty = tmp_path / "empty_target.csv"
    empty.write_text("smiles,y,z\nCCO,1,\nCC,2,\n")
    with pytest.raises(ValueError, match="'z'.*no labels"):
        load_property_dataset(empty, target_columns=["y", "z"])
    header = tmp_path / "header.csv"
    header.write_text("smiles,y\n")
    with pytest.raises(ValueError, match="no data rows"):
        load_property_dataset(header)


def test_label_checks_look_at_the_rows_that_are_used(tmp_path):
    # a target labelled only on a row whose SMILES is left out has nothing to learn from
    path = tmp_path / "labels.csv"
    path.write_text("smiles,a,b\nCCO,1.0,\nCCN,2.0,\nnot_a_smiles,4.0,5.0\nCCC,3.0,\n")
    with pytest.raises(ValueError, match="'b'.*labels only on rows left out"):
        _load_quiet(path, target_columns=["a", "b"])
    # constant once the left-out row is gone
    path.write_text("smiles,y\nCCO,4\nCCN,4\nnot_a_smiles,7\n")
    with pytest.raises(ValueError, match=r"'y'.*is constant \(every label is 4\)"):
        _load_quiet(path)
    # a 0/1 column is classification even when a left-out row holds another number
    path.write_text("smiles,y\nCCO,0\nCCN,1\nCCC,1\nnot_a_smiles,2.5\n")
    assert _load_quiet(path).task == "classification"


def test_infinite_target_rejected(tmp_path):
    path = tmp_path / "inf.csv"
    path.write_text("smiles,y\nCCO,1\nCC,inf\n")
    with pytest.raises(ValueError, match="infinite.*line 3"):
        load_property_dataset(path)


def test_parquet_and_gzip(tmp_path):
    df = pd.DataFrame({"smiles": ["CCO", "c1ccccc1", "bad("], "y": [1.5, None, 2.0]})
    df.to_parquet(tmp_path / "t.parquet")
    with pytest.warns(UserWarning, match="line 3"):
        ds = load_property_dataset(tmp_path / "t.parquet")
    assert ds.smiles == ["CCO", "c1ccccc1"] and np.isnan(ds.targets[1, 0])
    assert ds.skipped[0].line == 3  # parquet: the 1-based row
    df.to_csv(tmp_path / "t.csv.gz", index=False)
    gz = _load_quiet(tmp_path / "t.csv.gz")
    np.testing.assert_array_equal(gz.targets, ds.targets)


def test_resolve_data_dir(monkeypatch, tmp_path):
    monkeypatch.delenv("MOLECLIP_DATA_DIR", raising=False)
    monkeypatch.setattr(property_data, "default_data_dir", lambda: tmp_path / "shared" / "data")
    with pytest.raises(FileNotFoundError, match="data_dir=.*MOLECLIP_DATA_DIR.*shared/data"):
        resolve_data_dir()
    (tmp_path / "shared" / "data").mkdir(parents=True)
    assert resolve_data_dir() == tmp_path / "shared" / "data"  # the default beside the checkout
    assert resolve_data_dir(tmp_path) == tmp_path
    monkeypatch.setenv("MOLECLIP_DATA_DIR", str(tmp_path))
    assert resolve_data_dir() == tmp_path
    with pytest.raises(FileNotFoundError, match="does not exist"):
        resolve_data_dir(tmp_path / "nope")


def test_named_set_from_data_dir(tmp_path):
    (tmp_path / "catalysis").mkdir()
    csv = "smiles,ddg_kcal_mol\nCCP(CC)CC,3.75\nCP(C)C,1\n"
    (tmp_path / "catalysis" / "phosphines_selectivity.csv").write_text(csv)
    ds = load_property_dataset("phosphines_selectivity", data_dir=tmp_path)
    assert ds.name == "phosphines_selectivity" and ds.metric == "mae" and ds.default_split == "random"
    assert ds.target_names == ["ddg_kcal_mol"] and len(ds) == 2


def test_named_set_offline_error_says_where(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match=r"moleculenet/esol\.csv.*delaney"):
        load_property_dataset("esol", data_dir=tmp_path)
    with pytest.raises(FileNotFoundError, match=r"catalysis/nhcs\.csv.*MoleCLIP"):
        load_property_dataset("nhcs", data_dir=tmp_path)


def test_named_set_download_renames_raw_columns(monkeypatch, tmp_path):
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(property_data, "_is_offline", lambda: False)
    seen = []

    def fake_download(url, name):
        seen.append((url, name))
        return DATA / "raw_delaney_like.csv"

    monkeypatch.setattr(property_data, "_download", fake_download)
    ds = load_property_dataset("esol", data_dir=tmp_path)
    assert seen == [(DATASETS["esol"].url, "esol")]
    assert ds.target_names == ["log_solubility"] and ds.metric == "rmse" and ds.default_split == "scaffold"
    assert ds.smiles == ["CCO", "c1ccccc1", "CC(=O)O"]
    np.testing.assert_allclose(ds.targets[:, 0], [1.10, -1.64, 1.22], rtol=1e-6)


def test_registry_is_consistent():
    for name, spec in DATASETS.items():
        assert spec.name == name
        assert spec.task in ("regression", "classification")
        moleculenet = spec.path.startswith("moleculenet/")
        expected_metric = "roc_auc" if spec.task == "classification" else ("rmse" if moleculenet else "mae")
        assert spec.metric == expected_metric
        assert spec.default_split == ("scaffold" if moleculenet else "random")
        if spec.url:
            assert len(spec.source_target_columns) == len(spec.target_columns)


@pytest.mark.data
@pytest.mark.parametrize("name", sorted(n for n, s in DATASETS.items() if not s.path.endswith(".gz")))
def test_real_named_sets_match_registry(name, data_dir):
    spec = DATASETS[name]
    header = pd.read_csv(data_dir / spec.path, nrows=0).columns.tolist()
    assert header == ["smiles", *spec.target_columns]
    ds = _load_quiet(name)
    assert ds.task == spec.task and ds.targets.shape == (len(ds), len(spec.target_columns))
    labelled = ds.targets[~np.isnan(ds.targets)]
    if spec.task == "classification":
        assert set(np.unique(labelled)) <= {0.0, 1.0}


@pytest.mark.data
def test_tox21_reports_unparsable_rows(data_dir):
    with pytest.warns(UserWarning, match="8 of 7831 rows"):
        ds = load_property_dataset("tox21")
    assert len(ds) == 7831 - 8 and len(ds.skipped) == 8
    raw = pd.read_csv(data_dir / "moleculenet/tox21.csv")
    for s in ds.skipped:
        assert raw.smiles.iloc[s.line - 2] == s.smiles
    assert np.isnan(ds.targets).any()


def test_default_data_dir_is_shared_data_beside_the_checkout():
    checkout = Path(property_data.__file__).resolve().parent.parent
    assert property_data.default_data_dir() == checkout.parent / "shared" / "data"


def test_text_cells_kept_as_written_and_lines_counted(tmp_path):
    """Through the one table reader: a UTF-8 BOM, blank lines and a quoted cell holding a comma; targets become
    floats, every other column stays text."""
    path = tmp_path / "t.csv"
    path.write_bytes('\ufeffid,smiles,y\n0001,CCO,1.5\n\n"00,02",not_a_smiles,2\n0003,CC,NA\n'.encode())
    with pytest.warns(UserWarning, match="line 4 'not_a_smiles'"):
        ds = load_property_dataset(path, target_columns=["y"])
    assert ds.smiles == ["CCO", "CC"] and [s.line for s in ds.skipped] == [4]
    np.testing.assert_array_equal(np.isnan(ds.targets[:, 0]), [False, True])  # "NA" is a missing label
    tsv = tmp_path / "t.tsv"
    tsv.write_text("SMILES\tlogp\nCCO\t-0.3\n")
    assert load_property_dataset(tsv).target_names == ["logp"]
    latin = tmp_path / "latin.csv"
    latin.write_bytes("smiles,y,note\nCCO,1,caf\xe9\n".encode("latin-1"))
    with pytest.raises(ValueError, match="latin.csv is not UTF-8"):
        load_property_dataset(latin, target_columns=["y"])


# ------------------------------------------------------------------------------ the one reader of molecule files
def test_molecule_table_formats_and_lines(tmp_path):
    import gzip

    from moleclip.processing.tables import read_molecule_table

    smi = tmp_path / "m.smi.gz"
    with gzip.open(smi, "wt") as handle:
        handle.write("SMILES ID\nCCO 0001\n\nc1ccccc1\tbenzene ring\nNA\n")
    table = read_molecule_table(smi)
    assert table.smiles_column == "SMILES" and list(table.frame.columns) == ["SMILES", "ID"]
    assert table.smiles == ["CCO", "c1ccccc1", "NA"] and table.frame["ID"].tolist() == ["0001", "benzene ring", ""]
    assert table.line_numbers.tolist() == [2, 4, 5]
    plain = tmp_path / "plain.txt"
    plain.write_text("CCO\nCC\n")
    assert list(read_molecule_table(plain).frame.columns) == ["smiles"]  # no names, no name column

    frame = pd.DataFrame({"id": ["0001", "0002"], "Canonical_SMILES": ["CCO", None], "n": [1, 2]})
    frame.to_parquet(tmp_path / "p.parquet", index=False)
    table = read_molecule_table(tmp_path / "p.parquet")
    assert table.smiles_column == "Canonical_SMILES" and table.smiles == ["CCO", ""]
    assert table.frame["n"].tolist() == [1, 2] and table.line_numbers.tolist() == [1, 2]  # Parquet keeps its types

    csv = tmp_path / "c.csv"
    csv.write_text("id,smiles,note\n0001,NA,\n0002,CCO\n")
    table = read_molecule_table(csv, limit=1)
    assert table.frame.to_dict("list") == {"id": ["0001"], "smiles": ["NA"], "note": [""]}


def test_molecule_table_errors_name_the_file(tmp_path):
    from moleclip.processing.tables import ColumnNotFoundError, read_molecule_table

    with pytest.raises(FileNotFoundError, match="not found: .*absent.smi"):
        read_molecule_table(tmp_path / "absent.smi")
    (tmp_path / "x.sdf").write_text("")
    with pytest.raises(ValueError, match="Unsupported file type for .*x.sdf"):
        read_molecule_table(tmp_path / "x.sdf")
    wide = tmp_path / "wide.csv"
    wide.write_text("smiles,y\nCCO,1,2\n")
    with pytest.raises(ValueError, match=r"wide.csv: line 2 has 3 fields"):
        read_molecule_table(wide)
    (tmp_path / "none.csv").write_text("id,structure\n1,CCO\n")
    with pytest.raises(ColumnNotFoundError, match=r"none.csv.*'id', 'structure'") as info:
        read_molecule_table(tmp_path / "none.csv")
    assert isinstance(info.value, KeyError) and isinstance(info.value, ValueError)
    (tmp_path / "fake.csv.gz").write_text("smiles\nCCO\n")
    with pytest.raises(ValueError, match="fake.csv.gz is not a complete gzip file"):
        read_molecule_table(tmp_path / "fake.csv.gz")

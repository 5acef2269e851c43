"""Pseudo-labels: SMILES files, seeded K-means, the knee of the K scan, Parquet through `datasets`, the CLI command."""

from __future__ import annotations

import argparse
import gzip
import os

import numpy as np
import pandas as pd
import pytest

from moleclip.processing.pseudo_labels import (
    K_SCAN,
    assign_clusters,
    cluster,
    compute_pseudo_labels,
    label_columns,
    pick_knee,
    plot_k_scan,
    scan_k,
    write_pseudo_labels,
)
from moleclip.processing.tables import read_molecule_table

SMILES = [
    "CCO", "CCCO", "CCCCO", "OCCO", "CC(C)O", "CCN", "CCCN", "NCCN", "CC(C)N", "CCCCN",
    "c1ccccc1", "Cc1ccccc1", "Oc1ccccc1", "Nc1ccccc1", "Clc1ccccc1", "c1ccncc1", "Cc1ccncc1", "c1ccc2ccccc2c1",
    "CC(=O)O", "CCC(=O)O", "OC(=O)CC(=O)O", "CC(=O)N", "CCC(=O)N", "C1CCCCC1", "C1CCNCC1", "C1CCOCC1",
]


def _blobs(n_per: int = 60, n_bits: int = 64, centers: int = 4, flip: float = 0.04, seed: int = 0):
    """Binary vectors around `centers` random prototypes, each bit flipped with probability `flip`."""
    rng = np.random.default_rng(seed)
    prototypes = rng.integers(0, 2, size=(centers, n_bits), dtype=np.uint8)
    truth = np.repeat(np.arange(centers), n_per)
    bits = prototypes[truth] ^ (rng.random((len(truth), n_bits)) < flip).astype(np.uint8)
    return bits, truth


# ---------------------------------------------------------------------------------------------- SMILES files
def test_read_smi_with_names_blank_lines_header_and_gzip(tmp_path):
    text = "smiles name\nCCO ethanol\n\nc1ccccc1\tbenzene\n  \nnot_a_smiles x\n"
    plain = tmp_path / "mols.smi"
    plain.write_text(text)
    packed = tmp_path / "mols.smi.gz"
    with gzip.open(packed, "wt") as handle:
        handle.write(text)
    for path in (plain, packed):
        table = read_molecule_table(path)
        smiles, lines = table.smiles, table.line_numbers.tolist()
        assert smiles == ["CCO", "c1ccccc1", "not_a_smiles"]  # bad entries kept: the parser reports them
        assert lines == [2, 4, 6]


def test_read_csv_and_parquet_columns(tmp_path):
    frame = pd.DataFrame({"id": [1, 2, 3], "SMILES": ["CCO", "", "NA"]})
    frame.to_csv(tmp_path / "a.csv", index=False)
    frame.to_csv(tmp_path / "a.csv.gz", index=False)
    frame.to_parquet(tmp_path / "a.parquet", index=False)
    for name in ("a.csv", "a.csv.gz", "a.parquet"):
        assert read_molecule_table(tmp_path / name).smiles == ["CCO", "", "NA"]  # "" and "NA" stay strings
    frame.rename(columns={"SMILES": "structure"}).to_csv(tmp_path / "b.csv", index=False)
    with pytest.raises(KeyError, match=r"looked for .*'id', 'structure'"):
        read_molecule_table(tmp_path / "b.csv")
    assert read_molecule_table(tmp_path / "b.csv", smiles_column="structure").smiles == ["CCO", "", "NA"]
    with pytest.raises(KeyError, match="'nope' not found"):
        read_molecule_table(tmp_path / "a.parquet", smiles_column="nope")


def test_read_smiles_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.smi"):
        read_molecule_table(tmp_path / "missing.smi")
    (tmp_path / "x.sdf").write_text("")
    with pytest.raises(ValueError, match="Unsupported"):
        read_molecule_table(tmp_path / "x.sdf")


@pytest.mark.data
def test_read_real_pretraining_file():
    data_dir = os.environ.get("MOLECLIP_DATA_DIR")
    if not data_dir:
        pytest.skip("MOLECLIP_DATA_DIR is not set")
    smiles = read_molecule_table(os.path.join(data_dir, "pretraining", "chembl25_3k.smi")).smiles
    assert len(smiles) == 3000 and all(smiles)


# ---------------------------------------------------------------------------------------------- K-means
def test_cluster_recovers_separated_groups_and_is_deterministic():
    bits, truth = _blobs()
    labels = cluster(bits, 4, seed=0, batch_size=50, n_threads=1)
    assert labels.dtype == np.int32 and labels.shape == truth.shape
    # Every true group lands in one cluster and no two groups share one.
    assert all(len(np.unique(labels[truth == t])) == 1 for t in range(4))
    assert len(np.unique(labels)) == 4
    again = cluster(bits, 4, seed=0, batch_size=50, n_threads=1)
    np.testing.assert_array_equal(labels, again)
    np.testing.assert_array_equal(cluster(bits.astype(np.float32), 4, seed=0, batch_size=50, n_threads=2), labels)


def test_assign_clusters_inertia_matches_a_direct_computation():
    bits, _ = _blobs(n_per=30)
    centers = np.random.default_rng(1).random((5, bits.shape[1])).astype(np.float32)
    labels, inertia = assign_clusters(bits, centers, chunk_size=17)
    distances = ((bits[:, None, :].astype(np.float64) - centers[None]) ** 2).sum(-1)
    np.testing.assert_array_equal(labels, distances.argmin(1))
    assert inertia == pytest.approx(distances.min(1).sum(), rel=1e-5)


def test_bad_k_is_refused():
    bits, _ = _blobs(n_per=5)
    with pytest.raises(ValueError, match="at least 2"):
        cluster(bits, 1)
    with pytest.raises(ValueError, match="K=50 clusters from 20"):
        cluster(bits, 50)
    with pytest.raises(ValueError, match="at least 3 distinct"):
        scan_k(bits, ks=(2, 3, 3), progress=False)
    # the default scan (K up to 3000) on a small set: the message names the scan and the way out, not one K value
    with pytest.raises(ValueError, match=r"K scan .* \(30, 50, .* > 20\).* up to 20 \(scan_ks, --scan-k\)"):
        scan_k(bits, progress=False)


def test_knee_on_a_synthetic_elbow_and_a_clear_error_without_one():
    elbow = pd.DataFrame({"k": [1, 2, 3, 4, 5, 6, 7, 8, 9], "inertia": [100, 70, 40, 10, 9, 8, 7, 6, 5]})
    assert pick_knee(elbow) == 4
    assert pick_knee(elbow.iloc[::-1]) == 4  # order of the rows does not matter
    straight = pd.DataFrame({"k": [1, 2, 3, 4, 5], "inertia": [50, 40, 30, 20, 10]})
    with pytest.raises(ValueError, match="No knee"):
        pick_knee(straight)


def test_scan_finds_the_number_of_planted_clusters(tmp_path):
    bits, _ = _blobs(n_per=50, centers=4, flip=0.02)
    curve = scan_k(bits, ks=(2, 3, 4, 5, 6, 8, 10, 12), seed=0, batch_size=100, n_threads=1, progress=False)
    assert list(curve.columns) == ["k", "inertia"] and curve["k"].tolist() == [2, 3, 4, 5, 6, 8, 10, 12]
    assert curve["inertia"].iloc[0] > curve["inertia"].iloc[-1]
    assert pick_knee(curve) == 4
    plot_k_scan(curve, 4, tmp_path / "plots" / "scan.png")
    assert (tmp_path / "plots" / "scan.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    sampled = scan_k(bits, ks=(2, 4, 8), sample_size=120, n_threads=1, progress=False)
    assert sampled["inertia"].iloc[0] < curve["inertia"].iloc[0]  # fewer molecules, less inertia


def test_label_columns_sorted_by_k():
    names = ["smiles", "label_k3000", "label_k300", "label_kx", "label_k30", "other"]
    found = label_columns(names)
    assert list(found) == [30, 300, 3000]
    assert list(found.values()) == ["label_k30", "label_k300", "label_k3000"]
    assert label_columns(["smiles"]) == {}
    assert K_SCAN[0] == 3 and K_SCAN[-1] == 3000 and len(K_SCAN) == 17


# ---------------------------------------------------------------------------------------------- end to end
def test_compute_pseudo_labels_reports_skipped_and_round_trips_through_datasets(tmp_path):
    import datasets

    smiles = SMILES[:10] + ["not_a_smiles"] + SMILES[10:] + [""]
    frame, info = compute_pseudo_labels(smiles, [5, 3], seed=0, n_jobs=1, progress=False)
    assert list(frame.columns) == ["smiles", "label_k3", "label_k5"]
    assert len(frame) == len(SMILES) == info["n_valid"] and info["n_input"] == len(smiles)
    assert [s.index for s in info["skipped"]] == [10, len(smiles) - 1]
    assert frame["smiles"].tolist() == [smiles[i] for i in info["kept"]]
    for k in (3, 5):
        column = frame[f"label_k{k}"]
        assert column.dtype == np.int32 and column.min() >= 0 and column.max() < k
    assert info["ks"] == [3, 5] and info["knee"] is None

    path = tmp_path / "out" / "labels.parquet"
    write_pseudo_labels(frame, path)
    loaded = datasets.load_dataset("parquet", data_files=str(path), cache_dir=str(tmp_path / "cache"))["train"]
    assert loaded.column_names == ["smiles", "label_k3", "label_k5"]
    assert loaded["smiles"] == frame["smiles"].tolist()
    assert loaded["label_k5"] == frame["label_k5"].tolist()
    assert loaded.features["label_k5"].dtype == "int32"

    same, _ = compute_pseudo_labels(smiles, [5, 3], seed=0, n_jobs=2, progress=False)
    pd.testing.assert_frame_equal(frame, same)


def test_compute_pseudo_labels_auto_uses_the_knee():
    frame, info = compute_pseudo_labels(SMILES, "auto", scan_ks=[2, 3, 4, 6, 8, 12, 16], n_jobs=1, progress=False)
    assert info["knee"] in info["curve"]["k"].tolist()
    assert list(frame.columns) == ["smiles", f"label_k{info['knee']}"]
    with pytest.raises(ValueError, match="'auto'"):
        compute_pseudo_labels(SMILES, "knee", progress=False)
    with pytest.raises(ValueError, match="Only 0 of 2"):
        compute_pseudo_labels(["bad", "worse("], [2], progress=False)


def _cli(argv):
    from moleclip_cli import pseudo_labels as command

    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    return command.run(parser.parse_args(argv))


def test_cli_on_a_small_smi_file(tmp_path, capsys):
    source = tmp_path / "mols.smi"
    source.write_text("\n".join(f"{s} mol{i}" for i, s in enumerate(SMILES[:5])) + "\nC1CC broken\n"
                      + "\n".join(SMILES[5:]) + "\n")
    output = tmp_path / "labels.parquet"
    assert _cli(["--input", str(source), "--k", "2", "3", "--output", str(output), "--n-jobs", "1",
                 "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert f"{len(SMILES)} labelled of {len(SMILES) + 1}" in printed
    assert "line 6 'C1CC' (" in printed  # the bad line is named by its line number
    table = pd.read_parquet(output)
    assert list(table.columns) == ["smiles", "label_k2", "label_k3"] and len(table) == len(SMILES)

    auto = tmp_path / "auto" / "labels.parquet"
    assert _cli(["--input", str(source), "--k", "auto", "--scan-k", "2", "3", "4", "6", "8", "12",
                 "--output", str(auto), "--seed", "1", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    curve = pd.read_csv(tmp_path / "auto" / "labels.kscan.csv")
    assert curve["k"].tolist() == [2, 3, 4, 6, 8, 12]
    assert (tmp_path / "auto" / "labels.kscan.png").is_file()
    knee = [k for k in curve["k"] if f"knee at K = {k}" in printed]
    assert len(knee) == 1 and list(label_columns(pd.read_parquet(auto).columns)) == knee

    with pytest.raises(ValueError, match="cannot be combined"):
        _cli(["--input", str(source), "--k", "auto", "5", "--output", str(output)])
    with pytest.raises(ValueError, match="only used with --k auto"):
        _cli(["--input", str(source), "--k", "5", "--scan-k", "2", "3", "4", "--output", str(output)])
    with pytest.raises(FileNotFoundError):
        _cli(["--input", str(tmp_path / "none.smi"), "--k", "2", "--output", str(output)])
    with pytest.raises(SystemExit):  # argparse rejects K = 1
        _cli(["--input", str(source), "--k", "1", "--output", str(output)])


def test_cli_refuses_an_output_it_cannot_write_before_any_work(tmp_path, monkeypatch):
    from moleclip.processing import pseudo_labels

    def no_work(*args, **kwargs):
        raise AssertionError("pseudo-labels were computed for an output that cannot be written")

    monkeypatch.setattr(pseudo_labels, "compute_pseudo_labels", no_work)
    source = tmp_path / "mols.smi"
    source.write_text("\n".join(SMILES) + "\n")
    (tmp_path / "labels.parquet").mkdir()  # a folder where the file should go
    with pytest.raises(ValueError, match="a folder is in the way"):
        _cli(["--input", str(source), "--k", "2", "--output", str(tmp_path / "labels.parquet"), "--no-progress"])


def test_settings_k_means_cannot_take_are_refused_before_the_fingerprints(monkeypatch):
    from moleclip.processing import pseudo_labels

    def no_work(*args, **kwargs):
        raise AssertionError("fingerprints were computed for settings K-means refuses")

    monkeypatch.setattr(pseudo_labels, "maccs_keys", no_work)
    for seed in (-1, 2**32):
        with pytest.raises(ValueError, match="seed must be an integer in 0..4294967295"):
            compute_pseudo_labels(SMILES, [2], seed=seed, progress=False)
    with pytest.raises(ValueError, match="K must be at least 2, got 1"):
        compute_pseudo_labels(SMILES, [1, 4], progress=False)
    with pytest.raises(ValueError, match="K must be at least 2, got 1"):
        compute_pseudo_labels(SMILES, "auto", scan_ks=[1, 2, 3, 4], progress=False)
    with pytest.raises(ValueError, match="at least 3 distinct K values"):
        compute_pseudo_labels(SMILES, "auto", scan_ks=[2, 3, 3], progress=False)


def test_cli_is_registered_with_the_moleclip_command(tmp_path):
    from moleclip_cli import pseudo_labels as command
    from moleclip_cli.main import build_parser

    args = build_parser().parse_args(["pseudo-labels", "--input", "x.smi", "--k", "300", "3000", "--output", "y.parquet"])
    assert args.k == [300, 3000] and args._run is command.run

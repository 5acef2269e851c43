"""Nearest training neighbours, the applicability-domain threshold and its report (moleclip.training.trust.applicability)."""

import json

import numpy as np
import pytest

from moleclip.processing.fingerprints import morgan_fingerprints
from moleclip.training.trust import applicability
from moleclip.training.trust.applicability import (ApplicabilityDomain, applicability_markdown, applicability_report,
                                             cosine_matrix, cosine_neighbours, tanimoto_matrix, tanimoto_neighbours)


def _morgan(smiles):
    return morgan_fingerprints(smiles, n_jobs=1, progress=False).bits


def test_tanimoto_on_tiny_molecules_by_hand():
    # Morgan radius 2 environments (no collisions at 2048 bits): ethane {CH3, CH3-CH3} = 2 bits; propane {CH3, CH2,
    # CH3-CH2, CH2(CH3)2} = 4 bits; ethanol {CH3, CH2, OH, CH3-CH2, CH2(CH3)(OH), OH-CH2} = 6 bits.
    bits = _morgan(["CC", "CCC", "CCO", "C"])
    assert bits.sum(1).tolist() == [2, 4, 6, 1]
    sim = tanimoto_matrix(bits[:1], bits)
    np.testing.assert_allclose(sim, [[1.0, 1 / (2 + 4 - 1), 1 / (2 + 6 - 1), 0.0]])  # only CH3 is shared
    assert tanimoto_matrix(bits[1:2], bits[2:3])[0, 0] == pytest.approx(3 / (4 + 6 - 3))  # CH3, CH2, CH3-CH2
    near = tanimoto_neighbours(bits[2:3], bits[[0, 1, 3]], k=2)  # ethanol among ethane, propane, methane
    assert near.indices.tolist() == [[1, 0]]
    np.testing.assert_allclose(near.similarities, [[3 / 7, 1 / 7]])


def test_tanimoto_matches_rdkit_and_empty_fingerprints_score_zero():
    from rdkit import DataStructs

    rng = np.random.default_rng(0)
    a, b = (rng.random((7, 64)) < 0.2).astype(np.uint8), (rng.random((5, 64)) < 0.2).astype(np.uint8)
    a[0] = 0
    b[0] = 0

    def vector(row):
        bv = DataStructs.ExplicitBitVect(64)
        bv.SetBitsFromList(np.flatnonzero(row).tolist())
        return bv

    expected = [DataStructs.BulkTanimotoSimilarity(vector(r), [vector(t) for t in b]) for r in a]
    np.testing.assert_allclose(tanimoto_matrix(a, b), expected, rtol=1e-12)
    assert tanimoto_matrix(a, b)[0, 0] == 0.0  # both empty: 0, as RDKit says


@pytest.mark.parametrize("k", [1, 7, 300])
def test_neighbours_equal_a_stable_full_sort_with_many_ties(k, monkeypatch):
    rng = np.random.default_rng(1)
    train = (rng.random((300, 12)) < 0.3).astype(np.uint8)  # 12 bits: many identical similarities
    query = (rng.random((50, 12)) < 0.3).astype(np.uint8)
    full = tanimoto_matrix(query, train)
    order = np.argsort(-full, axis=1, kind="stable")[:, :k]  # ties: lower training row first
    monkeypatch.setattr(applicability, "_BLOCK", 3000)  # 10 queries a block: exercises the blocking too
    near = tanimoto_neighbours(query, train, k=k)
    np.testing.assert_array_equal(near.indices, order)
    np.testing.assert_array_equal(near.similarities, np.take_along_axis(full, order, 1))
    assert near.indices.dtype == np.int64


def test_cosine_neighbours_by_hand():
    train = np.array([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0], [0.0, 0.0]])
    query = np.array([[3.0, 0.0], [0.0, -1.0]])
    np.testing.assert_allclose(cosine_matrix(query, train), [[1, 0, 2 ** -0.5, 0], [0, -1, -(2 ** -0.5), 0]])
    near = cosine_neighbours(query, train, k=2)
    assert near.indices.tolist() == [[0, 2], [0, 3]]  # second query: the two zeros, lower row first
    np.testing.assert_allclose(near.similarities, [[1, 2 ** -0.5], [0, 0]])


def test_neighbour_refusals():
    bits = np.eye(4, dtype=np.uint8)
    with pytest.raises(ValueError, match="k must be between 1 and the 4"):
        tanimoto_neighbours(bits, bits, k=5)
    with pytest.raises(ValueError, match="0/1"):
        tanimoto_neighbours(bits * 2, bits)
    with pytest.raises(ValueError, match="columns"):
        tanimoto_neighbours(np.zeros((2, 5), dtype=np.uint8), bits)
    with pytest.raises(ValueError, match="empty"):
        cosine_neighbours(np.ones((2, 3)), np.ones((0, 3)))
    with pytest.raises(ValueError, match="non-finite"):
        cosine_neighbours(np.full((1, 3), np.nan), np.ones((2, 3)))
    assert tanimoto_neighbours(np.zeros((0, 4), dtype=np.uint8), bits, k=2).indices.shape == (0, 2)


def _at_cosines(values):
    """Unit vectors whose cosine with (1, 0) is each of ``values``."""
    values = np.asarray(values, dtype=np.float64)
    return np.column_stack([values, np.sqrt(1 - values ** 2)])


def test_threshold_is_the_low_quantile_of_validation_similarity():
    valid = np.linspace(0.0, 0.99, 100)
    domain = ApplicabilityDomain.fit(np.array([[1.0, 0.0]]), _at_cosines(valid), metric="cosine")
    # numpy's linear quantile: position 0.05 x 99 = 4.95, between 0.04 and 0.05
    assert domain.threshold == pytest.approx(0.0495)
    assert domain.validation == pytest.approx({"n": 100, "min": 0.0, "median": 0.495, "max": 0.99})
    assert domain.in_domain(_at_cosines([0.049, 0.0495, 0.9])).tolist() == [False, True, True]
    assert (~domain.in_domain(_at_cosines(valid))).sum() == 5  # the 5% it was set to flag


def test_tanimoto_domain_with_mean_of_k_neighbours():
    train = np.array([[1, 1, 1, 1, 0, 0, 0, 0], [1, 1, 0, 0, 0, 0, 0, 0]], dtype=np.uint8)
    valid = np.array([[1, 1, 1, 1, 0, 0, 0, 0], [0, 0, 0, 0, 1, 1, 1, 1]], dtype=np.uint8)
    domain = ApplicabilityDomain.fit(train, valid, k=2, quantile=0.5)
    np.testing.assert_allclose(domain.scores(valid), [(1 + 0.5) / 2, 0.0])
    assert domain.threshold == pytest.approx(0.375) and domain.fingerprint == {"radius": 2, "n_bits": 8}


@pytest.mark.parametrize("metric", ["tanimoto", "cosine"])
def test_save_load_round_trip(tmp_path, metric):
    rng = np.random.default_rng(2)
    if metric == "tanimoto":
        train, valid, query = (_morgan(s) for s in (["CCO", "CCN", "c1ccccc1O", "CC(=O)O"], ["CCCO", "c1ccccc1N"],
                                                     ["CCCCO", "C1CCNCC1", "CC"]))
    else:
        train, valid, query = rng.normal(size=(20, 6)), rng.normal(size=(5, 6)), rng.normal(size=(4, 6))
    domain = ApplicabilityDomain.fit(train, valid, metric=metric, reference_ids=[f"m{i}" for i in range(len(train))],
                                     reference_labels=np.arange(len(train), dtype=float))
    domain.save(tmp_path / "ad")
    loaded = ApplicabilityDomain.load(tmp_path / "ad")
    np.testing.assert_array_equal(loaded.reference, domain.reference)
    assert loaded.to_dict() == domain.to_dict()
    np.testing.assert_array_equal(loaded.scores(query), domain.scores(query))
    assert loaded.reference_ids[1] == "m1" and loaded.reference_labels[2] == 2.0
    if metric == "tanimoto":  # 2048 bits packed 8 to a byte
        assert np.load(tmp_path / "ad" / applicability.REFERENCE_FILE).shape == (4, 256)


def test_odd_width_packing_and_damaged_folders(tmp_path):
    train = np.array([[1, 0, 1, 1, 0, 1, 0, 0, 1, 1], [0] * 9 + [1]], dtype=np.uint8)  # 10 bits: not a byte multiple
    domain = ApplicabilityDomain.fit(train, train)
    np.testing.assert_array_equal(ApplicabilityDomain.load(domain.save(tmp_path)).reference, train)
    meta = tmp_path / applicability.METADATA_FILE
    data = json.loads(meta.read_text())
    meta.write_text(json.dumps({**data, "n_reference": 3}))
    with pytest.raises(ValueError, match="the metadata says"):
        ApplicabilityDomain.load(tmp_path)
    (tmp_path / applicability.REFERENCE_FILE).unlink()
    with pytest.raises(FileNotFoundError, match="applicability_reference.npy is missing"):
        ApplicabilityDomain.load(tmp_path)


def test_domain_refusals():
    bits = np.eye(4, dtype=np.uint8)
    for quantile in (0, 1, 1.2):
        with pytest.raises(ValueError, match="quantile must lie strictly between 0 and 1"):
            ApplicabilityDomain.fit(bits, bits, quantile=quantile)
    with pytest.raises(ValueError, match="no validation molecules"):
        ApplicabilityDomain.fit(bits, bits[:0])
    with pytest.raises(ValueError, match="metric"):
        ApplicabilityDomain.fit(bits, bits, metric="euclidean")
    with pytest.raises(ValueError, match="3 reference_ids for 4"):
        ApplicabilityDomain.fit(bits, bits, reference_ids=["a", "b", "c"])


def test_query_fingerprints_reports_unparsable_smiles():
    domain = ApplicabilityDomain.fit(_morgan(["CCO", "CCN"]), _morgan(["CCC"]))
    result = domain.query_fingerprints(["CCO", "not a molecule", "CC"])
    assert result.kept.tolist() == [0, 2] and len(result.skipped) == 1
    assert domain.neighbours(result.bits, k=1).similarities[0, 0] == 1.0


def test_report_by_hand_regression_and_classification():
    in_domain = np.array([True, True, True, False])
    labels = np.array([[1.0, 0.0], [2.0, np.nan], [3.0, 1.0], [4.0, 1.0]])
    pred = np.array([[1.5, 0.0], [2.0, 0.0], [2.0, 1.0], [0.0, 1.0]])
    report = applicability_report(in_domain, labels, pred, "regression", target_names=["a", "b"])
    assert report["n_out_of_domain"] == 1 and report["fraction_out_of_domain"] == 0.25
    assert report["in_domain"]["per_target"]["a"]["mae"] == pytest.approx(0.5)
    assert report["in_domain"]["per_target"]["a"]["rmse"] == pytest.approx(np.sqrt(1.25 / 3))
    assert report["in_domain"]["per_target"]["b"] == {"n": 2, "mae": 0.0, "rmse": 0.0}  # NaN label skipped
    assert report["in_domain"]["mae"] == pytest.approx(0.25) and report["out_of_domain"]["mae"] == pytest.approx(2.0)
    json.dumps(report)

    cls = applicability_report(in_domain, np.array([0, 1, 1, 1.0]), np.array([0.1, 0.8, 0.3, 0.9]), "classification")
    assert cls["in_domain"]["roc_auc"] == 1.0
    assert np.isnan(cls["out_of_domain"]["roc_auc"])  # one class (one molecule): undefined
    text = applicability_markdown(cls)
    assert "1 of 4 test molecules (25.0%)" in text and "| out of domain | 1 | - |" in text
    with pytest.raises(ValueError, match="mismatched shapes"):
        applicability_report(in_domain[:3], labels, pred, "regression")


def test_markdown_describes_the_threshold():
    domain = ApplicabilityDomain.fit(np.array([[1.0, 0.0]]), _at_cosines(np.linspace(0, 0.99, 100)), metric="cosine")
    query = _at_cosines([0.01, 0.5, 0.9])
    report = applicability_report(domain.in_domain(query), np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.5, 3.0]),
                                  "regression", domain=domain)
    text = applicability_markdown(report)
    assert "cosine similarity to the nearest training molecule below 0.0495" in text
    assert "(percentile 5 of the validation" in text and "| in domain | 2 | 0.25 |" in text

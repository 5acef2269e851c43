"""Scaffold, random and random-scaffold splits: disjoint scaffolds, full partitions, determinism, sizes."""

import os
import warnings

import numpy as np
import pytest

from moleclip.processing.molecules import InvalidMoleculeError
from moleclip.processing.splits import (
    SPLIT_KINDS,
    Split,
    canonical_smiles,
    make_split,
    murcko_scaffold,
    random_scaffold_split,
    random_split,
    scaffold_split,
    split_leakage,
)

# Scaffold families of different sizes, plus acyclic molecules (empty scaffold) and a chiral pair.
SMILES = (
    ["c1ccccc1" + s for s in ["C", "CC", "O", "N", "Cl", "F", "CO", "CN", "C(=O)O", "Br"]]  # benzene x10
    + ["c1ccc2ccccc2c1" + s for s in ["C", "O", "N", "F", "Cl", "CC"]]  # naphthalene x6
    + ["C1CCCCC1" + s for s in ["C", "O", "N", "F"]]  # cyclohexane x4
    + ["c1ccncc1" + s for s in ["C", "O", "N"]]  # pyridine x3
    + ["CCO", "CCCC", "CC(C)O"]  # acyclic x3
    + ["C1CC1", "C1CCC1", "c1ccsc1", "c1ccoc1"]  # singletons
    + ["c1ccccc1[C@H]1CCCO1", "c1ccccc1[C@@H]1CCCO1"]  # enantiomers: their scaffolds differ
)


def _scaffold_of(indices):
    return {murcko_scaffold(SMILES[i]) for i in indices}


def _check_partition(split: Split, n: int):
    joined = np.concatenate([split.train, split.valid, split.test])
    assert all(part.dtype == np.int64 for part in split)
    assert np.array_equal(np.sort(joined), np.arange(n)), "every index exactly once"


def test_scaffold_split_disjoint_partition_largest_first():
    split = scaffold_split(SMILES, (0.8, 0.1, 0.1))
    _check_partition(split, len(SMILES))
    tr, va, te = (_scaffold_of(p) for p in split)
    assert not (tr & va) and not (tr & te) and not (va & te)
    # 32 molecules, train cut 25.6. Families of 10, 6, 4 go to train; of the two trios the later one (acyclic, 23-25)
    # goes first (the paper's tie-break) and still fits; the pyridines (20-22) would overflow and fill validation.
    # Singletons come last, later-first: 31 and 30 still fit in train, the rest go to test.
    assert "c1ccccc1" in tr
    assert set(split.valid) == {20, 21, 22}
    assert set(split.test) == {26, 27, 28, 29}
    assert len(split.train) <= 0.8 * len(SMILES)


def test_scaffold_split_is_deterministic_and_ignores_seed():
    a = make_split("scaffold", SMILES, seed=1)
    b = make_split("scaffold", SMILES, seed=2)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


def test_chirality_kept_in_scaffolds():
    assert murcko_scaffold(SMILES[-1]) != murcko_scaffold(SMILES[-2])
    assert murcko_scaffold("CCO") == ""


def test_random_split_sizes_seeds_and_partition():
    n = 101
    a, b, c = random_split(n, (0.8, 0.1, 0.1), seed=1), random_split(n, (0.8, 0.1, 0.1), seed=1), random_split(
        n, (0.8, 0.1, 0.1), seed=2
    )
    _check_partition(a, n)
    assert a.sizes == (81, 10, 10)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a.test, c.test)


def test_random_split_matches_legacy_numpy_shuffle():
    # The paper shuffled the index list with np.random.seed(seed) and took test, then validation, from the front.
    n, seed = 50, 3
    order = list(range(n))
    np.random.seed(seed)
    np.random.shuffle(order)
    split = random_split(n, (0.8, 0.1, 0.1), seed=seed)
    assert set(split.test) == set(order[:5]) and set(split.valid) == set(order[5:10])


def test_random_scaffold_split_disjoint_and_seeded():
    a = random_scaffold_split(SMILES, seed=0)
    b = make_split("random_scaffold", SMILES, seed=0)
    _check_partition(a, len(SMILES))
    tr, va, te = (_scaffold_of(p) for p in a)
    assert not (tr & va) and not (tr & te) and not (va & te)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    others = [random_scaffold_split(SMILES, seed=s) for s in range(1, 6)]
    assert any(not np.array_equal(a.test, o.test) for o in others)
    assert len(a.valid) <= 3 and len(a.test) <= 3  # floor(0.1 * 32)


def test_fraction_and_kind_validation():
    with pytest.raises(ValueError, match="sum to 1"):
        make_split("random", SMILES, fractions=(0.8, 0.1, 0.2))
    with pytest.raises(ValueError, match="non-negative"):
        make_split("random", SMILES, fractions=(1.1, -0.1, 0.0))
    with pytest.raises(ValueError, match="three numbers"):
        make_split("random", SMILES, fractions=(0.9, 0.1))
    with pytest.raises(ValueError, match="scaffold, random, random_scaffold"):
        make_split("stratified", SMILES)
    with pytest.raises(ValueError, match="empty"):
        scaffold_split([])


def test_invalid_smiles_named():
    with pytest.raises(InvalidMoleculeError, match="position 1"):
        scaffold_split(["CCO", "C1CC", "c1ccccc1"])


def test_molecules_too_large_to_draw_still_split():
    # the fingerprint modes keep molecules over the drawing limit; a scaffold split of their table must not refuse them
    peptide = "CC(=O)N" * 70  # 280 heavy atoms, acyclic
    smiles = [*SMILES, peptide]
    for kind in SPLIT_KINDS:
        _check_partition(make_split(kind, smiles, seed=1), len(smiles))
    assert murcko_scaffold(peptide) == ""


def test_leakage_counts_disagreeing_labels_not_missing_ones():
    nan = float("nan")
    # ethanol twice (one copy lacks the second label: no disagreement), methylamine twice with another first label
    canonical = canonical_smiles(["CCO", "OCC", "CN", "NC", "CCC"])
    targets = [[1.0, nan], [1.0, 0.0], [2.0, 1.0], [3.0, 1.0], [4.0, 4.0]]
    found = split_leakage(canonical, targets, Split(np.array([0, 2]), np.array([4]), np.array([1, 3])))
    assert (found["train_test"], found["train_valid"], found["conflicting"]) == (2, 0, 1)


@pytest.mark.data
@pytest.mark.skipif(not os.environ.get("MOLECLIP_DATA_DIR"), reason="MOLECLIP_DATA_DIR not set")
def test_scaffold_split_sizes_on_esol():
    from moleclip.processing.property_data import load_property_dataset

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = load_property_dataset("esol")
    split = make_split("scaffold", ds.smiles)
    _check_partition(split, len(ds))
    fractions = np.array(split.sizes) / len(ds)
    np.testing.assert_allclose(fractions, (0.8, 0.1, 0.1), atol=0.02)
    tr, va, te = ({murcko_scaffold(ds.smiles[i]) for i in part} for part in split)
    assert not (tr & va) and not (tr & te) and not (va & te)

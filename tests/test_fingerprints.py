"""Fingerprints: bad SMILES reported by position, parallel equal to serial, agreement with RDKit's own functions."""

from __future__ import annotations

import numpy as np
import pytest
from rdkit import Chem, DataStructs
from rdkit.Chem import MACCSkeys

from moleclip.processing.fingerprints import MACCS_BITS, FingerprintResult, maccs_keys, morgan_fingerprints

SUBSTITUENTS = ["", "C", "O", "N", "F", "Cl", "Br", "C(=O)O", "CC", "OC", "S", "CO"]


def _molecules() -> list[str]:
    """About 70 distinct, valid, small molecules: disubstituted benzenes and pyridines."""
    smiles = []
    for i, a in enumerate(SUBSTITUENTS):
        for b in SUBSTITUENTS[i::2]:
            smiles.append(f"{a}c1ccc({b})cc1" if b else f"{a}c1ccccc1")
            smiles.append(f"{a}c1ccc({b})nc1" if b else f"{a}c1ccncc1")
    return [s for s in dict.fromkeys(smiles)]


def test_invalid_smiles_are_reported_with_their_positions():
    smiles = ["CCO", "not_a_smiles", "", "c1ccccc1", "C1CC", "CCN"]
    result = maccs_keys(smiles, n_jobs=1, progress=False)
    assert isinstance(result, FingerprintResult)
    assert result.kept.tolist() == [0, 3, 5]
    assert result.kept.dtype == np.int64
    assert [s.index for s in result.skipped] == [1, 2, 4]
    assert [s.smiles for s in result.skipped] == ["not_a_smiles", "", "C1CC"]
    assert "empty" in result.skipped[1].reason
    assert "ring" in result.skipped[2].reason  # RDKit's own reason travels with the entry
    assert result.bits.shape == (3, MACCS_BITS) and result.bits.dtype == np.uint8
    assert result.n_input == len(smiles)
    assert "3 molecule(s) skipped" in result.describe_skipped()


def test_maccs_matches_rdkit_and_column_i_is_key_i():
    smiles = _molecules()[:10]
    result = maccs_keys(smiles, n_jobs=1, progress=False)
    for row, s in zip(result.bits, smiles):
        expected = np.zeros(MACCS_BITS, dtype=np.uint8)
        DataStructs.ConvertToNumpyArray(MACCSkeys.GenMACCSKeys(Chem.MolFromSmiles(s)), expected)
        np.testing.assert_array_equal(row, expected)
    assert set(np.unique(result.bits)) <= {0, 1}
    assert result.bits[:, 0].sum() == 0  # key 0 does not exist
    benzene = maccs_keys(["c1ccccc1"], n_jobs=1, progress=False).bits[0]
    assert benzene[163] == 1 and benzene[165] == 1  # "6M ring" and "ring"


@pytest.mark.parametrize("function", [maccs_keys, morgan_fingerprints])
def test_parallel_equals_serial(function):
    smiles = _molecules()
    smiles[5] = "bad("  # one bad entry in the middle of a chunk
    serial = function(smiles, n_jobs=1, progress=False)
    parallel = function(smiles, n_jobs=2, chunk_size=7, progress=False)
    np.testing.assert_array_equal(serial.bits, parallel.bits)
    np.testing.assert_array_equal(serial.kept, parallel.kept)
    assert serial.skipped == parallel.skipped
    assert [s.index for s in parallel.skipped] == [5]
    assert len(parallel.kept) == len(smiles) - 1
    assert len({row.tobytes() for row in parallel.bits}) > len(smiles) // 2  # rows are really per molecule


def test_morgan_settings_are_used():
    smiles = ["CCOc1ccccc1C(=O)N", "CCO"]
    wide = morgan_fingerprints(smiles, radius=2, n_bits=2048, n_jobs=1, progress=False)
    narrow = morgan_fingerprints(smiles, radius=0, n_bits=2048, n_jobs=1, progress=False)
    short = morgan_fingerprints(smiles, radius=2, n_bits=64, n_jobs=1, progress=False)
    assert wide.bits.shape == (2, 2048) and short.bits.shape == (2, 64)
    assert wide.bits.dtype == np.uint8
    assert (narrow.bits.sum(axis=1) < wide.bits.sum(axis=1)).all()  # radius 0 sees atoms only
    assert wide.bits[1].sum() < wide.bits[0].sum()


def test_empty_input_and_bad_arguments():
    empty = maccs_keys([], progress=False)
    assert empty.bits.shape == (0, MACCS_BITS) and empty.kept.shape == (0,)
    with pytest.raises(TypeError, match="single string"):
        maccs_keys("CCO", progress=False)
    with pytest.raises(ValueError, match="n_jobs"):
        maccs_keys(["CCO"], n_jobs=0, progress=False)
    with pytest.raises(ValueError, match="n_bits"):
        morgan_fingerprints(["CCO"], n_bits=0, progress=False)


def test_heavy_atom_limit_can_be_lifted():
    big = "C" * 260
    assert [s.index for s in maccs_keys([big, "CCO"], n_jobs=1, progress=False).skipped] == [0]
    lifted = maccs_keys([big, "CCO"], n_jobs=1, progress=False, max_heavy_atoms=None)
    assert lifted.kept.tolist() == [0, 1] and not lifted.skipped

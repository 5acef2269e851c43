"""Optional standardisation of molecules before they are drawn or fingerprinted (RDKit's MolStandardize).

A table of measured molecules often holds salts, counter-ions, solvents and charged forms of the same parent: every
fragment is drawn, so nicotine oxalate and nicotine get different predictions. Whether that is right depends on the
property, so standardisation is a choice, off by default (the paper drew its SMILES as given), and a saved setting of
a model (`MoleCLIPImageProcessor.standardize`, a fingerprint model's `standardize`) so that prediction prepares new
molecules exactly as the training molecules were prepared.

The choices (`STANDARDIZATIONS`):

* ``"none"``: the molecule as written.
* ``"parent"``: RDKit's `Cleanup` (sanitisation, explicit hydrogens removed, metal-to-organic bonds broken, standard
  functional-group forms such as nitro and N-oxides, reionisation), then the largest organic fragment
  (`FragmentParent`: salts and solvents go), then neutralised where a neutral form exists (`Uncharger`; charges that
  cannot be removed, such as quaternary ammonium, stay). This is ChEMBL's "parent" idea, and what most property tables
  mean by the compound. It costs a few milliseconds a molecule (`benchmarks/standardize.py`), less than drawing it.

Canonical tautomers (`TautomerEnumerator.Canonicalize`) are deliberately not offered. Measured with
`benchmarks/standardize.py` (BENCHMARKS.md): they cost 7-90 times more than "parent" (over 200 ms a molecule on
ChEMBL, where peptides hit the enumeration limits), they changed the drawing of more than half of the ChEMBL molecules
(a C=O where the table had an OH), and they are not idempotent once the enumeration is cut short (6 of 200 ChEMBL
molecules gave another tautomer when standardised again), so a saved model could not promise to prepare a new
molecule exactly as its training molecules were prepared.

"parent" is idempotent (tests check it on real tables), so standardising a standardised molecule changes nothing.
This module uses only flat relative imports so that it travels with the processor as Hugging Face remote code.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

from rdkit import Chem

from .molecules import InvalidMoleculeError, SkippedMolecule, quiet_rdkit, to_mol

__all__ = ["STANDARDIZATIONS", "StandardizedSmiles", "check_standardization", "standardize_mol", "standardize_smiles"]

STANDARDIZATIONS = ("none", "parent")


def check_standardization(method: str) -> str:
    if method not in STANDARDIZATIONS:
        raise ValueError(f"standardize must be one of {list(STANDARDIZATIONS)}, got {method!r}")
    return method


_tools: dict = {}


def _tool(name: str):
    # RDKit's standardisers are built once per process, not once per molecule.
    if name not in _tools:
        from rdkit.Chem.MolStandardize import rdMolStandardize

        _tools["uncharger"] = rdMolStandardize.Uncharger(canonicalOrder=True)
        _tools["module"] = rdMolStandardize
    return _tools[name]


def standardize_mol(mol: Chem.Mol, method: str, index: int | None = None) -> Chem.Mol:
    """The standardised copy of `mol` (the same object for ``"none"``); :class:`InvalidMoleculeError` if RDKit
    cannot standardise it (the error names the molecule, its position `index` and RDKit's reason)."""
    check_standardization(method)
    if method == "none":
        return mol
    standardizer = _tool("module")
    try:
        with quiet_rdkit():
            parent = standardizer.FragmentParent(standardizer.Cleanup(mol))
            parent = _tool("uncharger").uncharge(parent)
            Chem.SanitizeMol(parent)  # the standardisers leave ring information unset; fingerprints need it
    except (RuntimeError, ValueError) as err:  # RDKit's C++ errors (sanitisation, valence) arrive as these
        raise InvalidMoleculeError(_smiles(mol), index, f"could not be standardised ({err})") from err
    if parent is None or parent.GetNumAtoms() == 0:
        raise InvalidMoleculeError(_smiles(mol), index, f"has no atoms left after standardisation ({method})")
    return parent


class StandardizedSmiles(NamedTuple):
    """What :func:`standardize_smiles` returns."""

    smiles: list  # in input order; a failed entry keeps its original value so positions line up
    skipped: list[SkippedMolecule]  # the failed entries, with position and reason
    changed: list[int]  # positions whose molecule standardisation changed (not merely re-written canonically)


def standardize_smiles(
    items: Iterable, method: str, on_error: str = "skip", max_heavy_atoms: int | None = None
) -> StandardizedSmiles:
    """Canonical SMILES of each entry's standardised molecule, the entries that failed, and those it changed.

    A failed entry (bad SMILES, or one RDKit cannot standardise) is listed in `skipped`; ``on_error="raise"`` stops at
    the first instead. With ``"none"`` the entries are returned as they are (still checked: a bad SMILES is reported,
    not passed on).
    """
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    check_standardization(method)
    out, skipped, changed = [], [], []
    for index, item in enumerate(items):
        try:
            mol = to_mol(item, index, max_heavy_atoms=max_heavy_atoms)
            if method == "none":
                out.append(item)
                continue
            standardized = Chem.MolToSmiles(standardize_mol(mol, method, index))
            if standardized != Chem.MolToSmiles(mol):
                changed.append(index)
            out.append(standardized)
        except InvalidMoleculeError as err:
            if on_error == "raise":
                raise
            skipped.append(SkippedMolecule(index, err.smiles, err.reason))
            out.append(item)
    return StandardizedSmiles(out, skipped, changed)


def _smiles(mol: Chem.Mol) -> str:
    try:
        return Chem.MolToSmiles(mol)
    except Exception:  # only for the error message
        return "<unprintable molecule>"

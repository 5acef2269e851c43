"""Train / validation / test splits of a molecule set: Bemis-Murcko scaffold, random, and seeded random-scaffold.

The scaffold split follows the convention used by the MoleCLIP paper and most MoleculeNet work: molecules are grouped
by their Bemis-Murcko scaffold (chirality kept), the groups are taken largest first, and each fills train until train
would overflow its share, then validation, then test. It is deterministic, so repeats differ only by model seed, and
the test set holds the rare scaffolds - an out-of-distribution test by construction.

The random split draws one permutation from ``numpy.random.RandomState(seed)`` and takes test, then validation, from
its front, which reproduces the paper's catalysis splits for the same seed.

Flat relative imports only (see processing/molecules.py for why).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from rdkit import Chem
from rdkit.Chem.Scaffolds import MurckoScaffold
from tqdm.auto import tqdm

from .molecules import to_mol

__all__ = [
    "canonical_smiles",
    "split_leakage",
    "SPLIT_KINDS",
    "Split",
    "make_split",
    "murcko_scaffold",
    "random_scaffold_split",
    "random_split",
    "scaffold_groups",
    "scaffold_split",
    "SPLIT_LABELS",
    "split_from_labels",
]

SPLIT_KINDS = ("scaffold", "random", "random_scaffold")
DEFAULT_FRACTIONS = (0.8, 0.1, 0.1)
# Below this many molecules scaffold computation is instant and a progress bar would only clutter logs.
_PROGRESS_MIN = 20_000


@dataclass(frozen=True)
class Split:
    """Positions (int64) of the training, validation and test molecules; together they cover every input once."""

    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray

    def __iter__(self):
        return iter((self.train, self.valid, self.test))

    @property
    def sizes(self) -> tuple[int, int, int]:
        return len(self.train), len(self.valid), len(self.test)


def _check_fractions(fractions: Sequence[float]) -> tuple[float, float, float]:
    try:
        values = tuple(float(f) for f in fractions)
    except (TypeError, ValueError) as err:
        raise ValueError(f"fractions must be three numbers (train, valid, test), got {fractions!r}") from err
    if len(values) != 3:
        raise ValueError(f"fractions must be three numbers (train, valid, test), got {len(values)}: {fractions!r}")
    if any(not np.isfinite(f) or f < 0 for f in values):
        raise ValueError(f"fractions must be non-negative, got {fractions!r}")
    if abs(sum(values) - 1.0) > 1e-6:
        raise ValueError(f"fractions must sum to 1, got {fractions!r} (sum {sum(values):.6g})")
    return values


def _as_split(train, valid, test) -> Split:
    return Split(*(np.asarray(part, dtype=np.int64) for part in (train, valid, test)))


def murcko_scaffold(item, index: int | None = None) -> str:
    """Canonical Bemis-Murcko scaffold SMILES with stereo kept; ``""`` for acyclic molecules."""
    # No size limit: splitting draws nothing, and the fingerprint modes keep molecules too large to draw.
    mol = to_mol(item, index=index, max_heavy_atoms=None)
    return MurckoScaffold.MurckoScaffoldSmiles(mol=Chem.Mol(mol), includeChirality=True)


def scaffold_groups(smiles: Sequence, progress: bool | None = None) -> dict[str, list[int]]:
    """Positions of the molecules sharing each scaffold, scaffolds in order of first appearance."""
    items = smiles
    if progress if progress is not None else len(smiles) >= _PROGRESS_MIN:
        items = tqdm(smiles, desc="Scaffolds", unit="mol")
    groups: dict[str, list[int]] = {}
    for i, item in enumerate(items):
        groups.setdefault(murcko_scaffold(item, index=i), []).append(i)
    return groups


def scaffold_split(smiles: Sequence, fractions: Sequence[float] = DEFAULT_FRACTIONS) -> Split:
    """Deterministic Bemis-Murcko scaffold split; no scaffold appears in two parts.

    Scaffold sets are ordered by size, largest first; among equal sizes the set whose first molecule comes later in
    the input goes first (the tie-break of the DeepChem/PaddleHelix code the paper used, kept so the splits match).
    """
    frac_train, frac_valid, _ = _check_fractions(fractions)
    n = len(smiles)
    if n == 0:
        raise ValueError("Cannot split an empty set of molecules")
    sets = sorted(scaffold_groups(smiles).values(), key=lambda s: (len(s), s[0]), reverse=True)
    train_cut, valid_cut = frac_train * n, (frac_train + frac_valid) * n
    train, valid, test = [], [], []
    for group in sets:
        if len(train) + len(group) <= train_cut:
            train.extend(group)
        elif len(train) + len(valid) + len(group) <= valid_cut:
            valid.extend(group)
        else:
            test.extend(group)
    return _as_split(sorted(train), sorted(valid), sorted(test))


def random_split(n: int, fractions: Sequence[float] = DEFAULT_FRACTIONS, seed: int = 0) -> Split:
    """Seeded random split of ``n`` items: test and validation get ``floor(fraction * n)`` each, train the rest."""
    _, frac_valid, frac_test = _check_fractions(fractions)
    n = int(n)
    if n <= 0:
        raise ValueError(f"Cannot split {n} items")
    order = np.random.RandomState(seed).permutation(n)
    n_test, n_valid = int(np.floor(frac_test * n)), int(np.floor(frac_valid * n))
    test, valid, train = order[:n_test], order[n_test : n_test + n_valid], order[n_test + n_valid :]
    return _as_split(np.sort(train), np.sort(valid), np.sort(test))


def random_scaffold_split(smiles: Sequence, fractions: Sequence[float] = DEFAULT_FRACTIONS, seed: int = 0) -> Split:
    """Scaffold split with the scaffold sets in a seeded random order.

    Sets fill validation, then test, up to ``floor(fraction * n)`` each, and the rest go to train, so different
    seeds give different scaffold-disjoint splits (for repeats that vary the split, not only the model).
    """
    _, frac_valid, frac_test = _check_fractions(fractions)
    n = len(smiles)
    if n == 0:
        raise ValueError("Cannot split an empty set of molecules")
    sets = list(scaffold_groups(smiles).values())
    order = np.random.RandomState(seed).permutation(len(sets))
    n_valid, n_test = int(np.floor(frac_valid * n)), int(np.floor(frac_test * n))
    train, valid, test = [], [], []
    for k in order:
        group = sets[k]
        if len(valid) + len(group) <= n_valid:
            valid.extend(group)
        elif len(test) + len(group) <= n_test:
            test.extend(group)
        else:
            train.extend(group)
    return _as_split(sorted(train), sorted(valid), sorted(test))


def make_split(
    kind: str, smiles: Sequence, seed: int = 0, fractions: Sequence[float] = DEFAULT_FRACTIONS
) -> Split:
    """Split ``smiles`` by ``kind`` (``"scaffold"``, ``"random"`` or ``"random_scaffold"``).

    ``seed`` is ignored by the deterministic ``"scaffold"`` split; ``"random"`` only uses ``len(smiles)``.
    """
    if kind == "scaffold":
        return scaffold_split(smiles, fractions)
    if kind == "random":
        return random_split(len(smiles), fractions, seed)
    if kind == "random_scaffold":
        return random_scaffold_split(smiles, fractions, seed)
    raise ValueError(f"Unknown split kind {kind!r}; valid kinds: {', '.join(SPLIT_KINDS)}")


def canonical_smiles(smiles: Sequence[str]) -> list[str]:
    """RDKit's canonical SMILES of each entry: two spellings of one structure become the same string."""
    return [Chem.MolToSmiles(to_mol(item, index=i, max_heavy_atoms=None)) for i, item in enumerate(smiles)]


def split_leakage(canonical: Sequence[str], targets, split: Split) -> dict:
    """The same molecule in two parts of a split, and copies whose labels disagree (`canonical`: from
    :func:`canonical_smiles`, computed once for all the splits of a data set).

    Returns ``{"train_test": n, "train_valid": n, "conflicting": n, "examples": [...]}``: ``train_test`` counts test
    molecules whose structure is also in the training part (their scores measure memory, not prediction), and
    ``conflicting`` the structures that appear more than once with different labels anywhere in the data (two
    measured values of one target that differ; a label missing in one copy is no disagreement).
    """
    targets = np.asarray(targets, dtype=np.float64).reshape(len(canonical), -1)
    train = {canonical[i] for i in split.train}
    examples = [canonical[i] for i in split.test if canonical[i] in train][:3]
    labels: dict[str, list[set]] = {}
    for key, row in zip(canonical, targets):
        per_target = labels.setdefault(key, [set() for _ in range(targets.shape[1])])
        for values, value in zip(per_target, np.round(row, 9)):
            if not np.isnan(value):
                values.add(float(value))
    return {
        "train_test": int(sum(canonical[i] in train for i in split.test)),
        "train_valid": int(sum(canonical[i] in train for i in split.valid)),
        "conflicting": int(sum(any(len(values) > 1 for values in per_target) for per_target in labels.values())),
        "examples": examples,
    }


# Spellings accepted in a split column (case and surrounding spaces ignored), and the part each names.
SPLIT_LABELS = {"train": "train", "training": "train", "valid": "valid", "val": "valid", "validation": "valid",
                "dev": "valid", "test": "test", "testing": "test"}


def split_from_labels(labels: Sequence, smiles: Sequence, kind: str = "random", seed: int = 0,
                      fractions: Sequence[float] = DEFAULT_FRACTIONS) -> tuple[Split, bool]:
    """A fixed split from a column of part names (train / valid / test, common spellings; see ``SPLIT_LABELS``).

    When no row is marked valid, validation is carved from the training rows with a ``kind`` split of those rows
    (``seed``; of ``fractions`` only the train : valid ratio counts), so the test part stays exactly as given.
    Returns ``(split, carved)``. A label outside ``SPLIT_LABELS`` is refused, naming every value found.
    """
    written = ["" if v is None else str(v).strip() for v in labels]
    labels = [v.lower() for v in written]
    if len(labels) != len(smiles):
        raise ValueError(f"{len(labels)} split labels for {len(smiles)} molecules")
    unknown = sorted({w for w, v in zip(written, labels) if v not in SPLIT_LABELS})
    if unknown:
        found = sorted(set(written))
        raise ValueError(f"split column values {unknown} are not train/training, valid/val/validation/dev or "
                         f"test/testing (values found: {found})")
    part = np.array([SPLIT_LABELS[v] for v in labels])
    train, valid, test = (np.flatnonzero(part == name) for name in ("train", "valid", "test"))
    if not len(train) or not len(test):
        raise ValueError(f"the split column must mark training and test rows (found {len(train)} train, "
                         f"{len(valid)} valid, {len(test)} test)")
    if len(valid):
        return _as_split(train, valid, test), False
    frac_train, frac_valid, _ = _check_fractions(fractions)
    if frac_valid <= 0:
        raise ValueError("no rows are marked valid and the valid fraction is 0: nothing to choose epochs on")
    share = frac_valid / (frac_train + frac_valid)
    inner = make_split(kind, [smiles[i] for i in train], seed=seed, fractions=(1 - share, share, 0.0))
    # the inner test part is empty by construction (test fraction 0) except for the scaffold split's leftovers
    carved_valid = np.concatenate([inner.valid, inner.test])
    return _as_split(np.sort(train[inner.train]), np.sort(train[carved_valid]), test), True

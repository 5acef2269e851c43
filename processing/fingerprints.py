"""Binary fingerprints (MACCS keys, Morgan) for many molecules at once, in parallel and with bad input reported.

MACCS keys feed the K-means pseudo-labels of pretraining; Morgan fingerprints (radius 2, 2048 bits) are the
fixed-representation baseline of finetuning. Both come back as one dense ``uint8`` matrix with one row per molecule
that parsed, the input positions of those rows, and the entries that were left out with RDKit's reason, so a caller
can always line the rows up with its own data and tell the user what was dropped.

Work is split into chunks of SMILES; each chunk is parsed and fingerprinted in a worker process and written straight
into a preallocated ``uint8`` matrix, so peak memory stays near the size of the result (1.58M x 167 MACCS bits is
about 265 MB).

Only flat relative imports are used, so the module can travel as Hugging Face remote code.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from rdkit import Chem, DataStructs
from rdkit.Chem import rdFingerprintGenerator, rdMolDescriptors
from tqdm.auto import tqdm

from .cores import available_cores
from .molecules import MAX_HEAVY_ATOMS, InvalidMoleculeError, SkippedMolecule, describe_skipped, quiet_rdkit, to_mol
from .standardize import check_standardization, standardize_mol

__all__ = [
    "MACCS_BITS",
    "FingerprintResult",
    "maccs_keys",
    "morgan_fingerprints",
    "default_n_jobs",
]

# RDKit's MACCS vector has 167 positions; bit 0 is always unset (the 166 public keys are numbered from 1). It is kept
# so that column i is MACCS key i.
MACCS_BITS = 167

# Molecules per task sent to a worker: large enough that pickling and scheduling cost nothing next to parsing (about
# 1 ms a molecule), small enough that the progress bar moves and the cores finish together.
DEFAULT_CHUNK_SIZE = 1000


@dataclass
class FingerprintResult:
    """Fingerprints of the molecules that parsed, and the entries that did not.

    Attributes:
        bits: ``uint8`` array ``[n_valid, n_bits]`` of 0/1 values, one row per valid molecule, in input order.
        kept: ``int64`` array ``[n_valid]``; ``kept[i]`` is the input position of row ``i``.
        skipped: the input entries left out, each with its position and the reason.
        smiles: with standardisation on, the canonical SMILES of each row's standardised molecule (the molecule the
            bits describe); None otherwise.
    """

    bits: np.ndarray
    kept: np.ndarray
    skipped: list[SkippedMolecule] = field(default_factory=list)
    smiles: list[str] | None = None

    @property
    def n_input(self) -> int:
        """Number of input entries, valid or not."""
        return len(self.kept) + len(self.skipped)

    def describe_skipped(self, limit: int = 5) -> str:
        """One readable line about the skipped entries."""
        return describe_skipped(self.skipped, limit=limit)


def default_n_jobs() -> int:
    """Cores this process may use (respects CPU affinity, e.g. under a job scheduler or ``taskset``)."""
    return available_cores()


# Per-process cache of fingerprint generators: building one per chunk is cheap but needless, and generators cannot
# be pickled to workers anyway, so each process builds its own on first use.
_GENERATORS: dict[tuple, object] = {}


def _morgan_generator(radius: int, n_bits: int):
    key = ("morgan", radius, n_bits)
    if key not in _GENERATORS:
        _GENERATORS[key] = rdFingerprintGenerator.GetMorganGenerator(radius=radius, fpSize=n_bits)
    return _GENERATORS[key]


def _fingerprint_chunk(task: tuple) -> tuple[np.ndarray, np.ndarray, list[SkippedMolecule], list[str]]:
    """Parse and fingerprint one chunk. Runs in a worker process (or in-process for ``n_jobs=1``)."""
    kind, params, start, smiles, max_heavy_atoms, standardize = task
    n_bits = MACCS_BITS if kind == "maccs" else params["n_bits"]
    bits = np.zeros((len(smiles), n_bits), dtype=np.uint8)
    kept: list[int] = []
    skipped: list[SkippedMolecule] = []
    standardized: list[str] = []
    if kind == "maccs":
        buffer = np.zeros(MACCS_BITS, dtype=np.uint8)
    else:
        generator = _morgan_generator(params["radius"], n_bits)
    row = 0
    with quiet_rdkit():
        for offset, item in enumerate(smiles):
            index = start + offset
            try:
                mol = standardize_mol(to_mol(item, index=index, max_heavy_atoms=max_heavy_atoms), standardize, index)
            except InvalidMoleculeError as err:
                skipped.append(SkippedMolecule(index, err.smiles, err.reason))
                continue
            if kind == "maccs":
                DataStructs.ConvertToNumpyArray(rdMolDescriptors.GetMACCSKeysFingerprint(mol), buffer)
                bits[row] = buffer
            else:
                bits[row] = generator.GetFingerprintAsNumPy(mol)
            if standardize != "none":
                standardized.append(Chem.MolToSmiles(mol))
            kept.append(index)
            row += 1
    return bits[:row], np.asarray(kept, dtype=np.int64), skipped, standardized


def _pool_context():
    # fork starts workers instantly and does not re-import the caller's script (spawn would, breaking unguarded
    # scripts); fall back to spawn where fork does not exist.
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else "spawn")


def _compute(
    kind: str,
    params: dict,
    smiles: Sequence[str],
    n_bits: int,
    n_jobs: int | None,
    progress: bool,
    chunk_size: int,
    max_heavy_atoms: int | None,
    desc: str,
    standardize: str = "none",
) -> FingerprintResult:
    if isinstance(smiles, str):
        raise TypeError("Expected a sequence of SMILES strings, got a single string; wrap it in a list")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1, got {chunk_size}")
    if n_jobs is not None and n_jobs < 1:
        raise ValueError(f"n_jobs must be a positive number of processes or None (all cores), got {n_jobs}")
    check_standardization(standardize)
    limit = max_heavy_atoms if max_heavy_atoms is not None else np.iinfo(np.int32).max
    n = len(smiles)
    tasks = [
        (kind, params, start, list(smiles[start : start + chunk_size]), limit, standardize) for start in range(0, n, chunk_size)
    ]
    n_jobs = min(n_jobs or default_n_jobs(), max(len(tasks), 1))

    # Rows are written into one preallocated matrix as chunks arrive, so the full result never exists twice.
    bits = np.empty((n, n_bits), dtype=np.uint8)
    kept = np.empty(n, dtype=np.int64)
    skipped: list[SkippedMolecule] = []
    standardized: list[str] = []
    filled = 0
    bar = tqdm(total=n, desc=desc, unit="mol", disable=not progress, smoothing=0.05)
    pool = None
    try:
        if n_jobs == 1:
            results = map(_fingerprint_chunk, tasks)
        else:
            pool = _pool_context().Pool(processes=n_jobs)
            # imap keeps chunk order, so rows stay in input order without a sort.
            results = pool.imap(_fingerprint_chunk, tasks, chunksize=1)
        for task, (chunk_bits, chunk_kept, chunk_skipped, chunk_smiles) in zip(tasks, results):
            rows = len(chunk_kept)
            bits[filled : filled + rows] = chunk_bits
            kept[filled : filled + rows] = chunk_kept
            filled += rows
            skipped.extend(chunk_skipped)
            standardized.extend(chunk_smiles)
            bar.update(len(task[3]))
        if pool is not None:
            pool.close()
            pool.join()
    finally:
        bar.close()
        if pool is not None:
            pool.terminate()
    if filled < n:
        # Shrink in place (realloc) rather than slicing, so the memory of the dropped rows is returned.
        bits.resize((filled, n_bits), refcheck=False)
        kept.resize(filled, refcheck=False)
    return FingerprintResult(bits=bits, kept=kept, skipped=skipped,
                             smiles=standardized if standardize != "none" else None)


def maccs_keys(
    smiles: Sequence[str],
    n_jobs: int | None = None,
    progress: bool = True,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    max_heavy_atoms: int | None = MAX_HEAVY_ATOMS,
    standardize: str = "none",
) -> FingerprintResult:
    """MACCS keys (167 columns, column ``i`` = key ``i``; column 0 is always 0) for every SMILES that parses.

    Args:
        smiles: SMILES strings (RDKit molecules are accepted too, but cannot be sent to worker processes cheaply).
        n_jobs: worker processes; ``None`` uses every core available to this process, ``1`` runs in-process.
        progress: show a tqdm progress bar.
        chunk_size: molecules per task sent to a worker.
        max_heavy_atoms: refuse larger molecules (the drawing limit of the package by default, so that the molecules
            labelled are the molecules that can be drawn); ``None`` for no limit.
        standardize: prepare each molecule first (`standardize.STANDARDIZATIONS`; "none" keeps it as written).

    Returns:
        A :class:`FingerprintResult`; entries that do not parse are listed in ``skipped`` with their positions.
    """
    return _compute("maccs", {}, smiles, MACCS_BITS, n_jobs, progress, chunk_size, max_heavy_atoms, "MACCS keys",
                    standardize)


def morgan_fingerprints(
    smiles: Sequence[str],
    radius: int = 2,
    n_bits: int = 2048,
    n_jobs: int | None = None,
    progress: bool = True,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    max_heavy_atoms: int | None = None,
    standardize: str = "none",
) -> FingerprintResult:
    """Folded Morgan (ECFP-like) bit fingerprints from RDKit's ``rdFingerprintGenerator``.

    Args:
        smiles: SMILES strings.
        radius: Morgan radius (2 gives ECFP4-like features).
        n_bits: fingerprint length.
        n_jobs, progress, chunk_size: as for :func:`maccs_keys`.
        max_heavy_atoms: refuse larger molecules; None (the default): no limit, as nothing is drawn (a peptide of
            300 heavy atoms gets its fingerprint).
        standardize: as for :func:`maccs_keys`.
    """
    if radius < 0:
        raise ValueError(f"radius must be non-negative, got {radius}")
    if n_bits < 1:
        raise ValueError(f"n_bits must be positive, got {n_bits}")
    params = {"radius": int(radius), "n_bits": int(n_bits)}
    return _compute("morgan", params, smiles, int(n_bits), n_jobs, progress, chunk_size, max_heavy_atoms, "Morgan",
                    standardize)

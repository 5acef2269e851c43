"""Structural pseudo-labels for pretraining: MACCS keys clustered with mini-batch K-means, one label set per K.

MoleCLIP's classification task asks the encoder to predict, from a molecule's picture, which cluster of MACCS-key
space the molecule falls in. The number of clusters is either given (the primary model uses K=300 and K=3000) or
chosen at the knee of the inertia curve over :data:`K_SCAN` (the knee was K=300 on ChEMBL-25).

Memory: the MACCS matrix is kept as ``uint8`` and converted once to ``float32`` (scikit-learn keeps float32 data in
float32), so 1.58M molecules need about 1.1 GB for the data; labels and inertia are computed chunk by chunk against
the fitted centres instead of through an ``n x K`` distance matrix.

Only flat relative imports are used, so the module can travel as Hugging Face remote code.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterable, Sequence
from contextlib import nullcontext

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from .fingerprints import maccs_keys

__all__ = [
    "K_SCAN",
    "LABEL_PREFIX",
    "label_column",
    "label_columns",
    "fit_kmeans",
    "assign_clusters",
    "cluster",
    "scan_k",
    "pick_knee",
    "plot_k_scan",
    "compute_pseudo_labels",
    "write_pseudo_labels",
]

# The K values scanned in the paper when looking for the knee of the inertia curve.
K_SCAN = (3, 5, 7, 10, 20, 30, 50, 100, 150, 200, 300, 500, 750, 1000, 1500, 2000, 3000)

# The paper's mini-batch size for K-means.
DEFAULT_BATCH_SIZE = 20000

LABEL_PREFIX = "label_k"
_LABEL_RE = re.compile(rf"^{LABEL_PREFIX}(\d+)$")

# Rows per chunk when assigning molecules to centres: 8192 x 3000 float32 distances is ~100 MB.
_ASSIGN_CHUNK = 8192


def label_column(k: int) -> str:
    """Name of the label column for ``k`` clusters, e.g. ``label_k300``."""
    return f"{LABEL_PREFIX}{int(k)}"


def label_columns(column_names: Iterable[str]) -> dict[int, str]:
    """The pseudo-label columns among ``column_names`` as ``{K: column}``, ordered by K (coarsest first).

    Iterating gives the K values in increasing order, so ``max(label_columns(names))`` is the fine label set used to
    group batches, and ``list(label_columns(names).values())`` the column names sorted by K.
    """
    found = sorted((int(m.group(1)), name) for name in column_names if (m := _LABEL_RE.match(str(name))))
    by_k: dict[int, str] = {}
    for k, name in found:
        if k in by_k:
            raise ValueError(f"Two pseudo-label columns for K={k}: {by_k[k]!r} and {name!r}")
        by_k[k] = name
    return by_k


def _thread_limit(n_threads: int | None):
    """Cap the BLAS/OpenMP threads scikit-learn uses; oversubscribed cores make mini-batch K-means many times slower."""
    if n_threads is None:
        return nullcontext()
    # not loaded by `import moleclip`; only pseudo-labelling needs it
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=int(n_threads))


def _as_float32(bits: np.ndarray) -> np.ndarray:
    """The fingerprint matrix as float32, copying only when it is not float32 already."""
    bits = np.asarray(bits)
    if bits.ndim != 2:
        raise ValueError(f"Expected a 2-D fingerprint matrix [n_molecules, n_bits], got shape {bits.shape}")
    return bits if bits.dtype == np.float32 else bits.astype(np.float32)


def _check_k(k: int, n: int) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise TypeError(f"K must be an integer, got {k!r}")
    if k < 2:
        raise ValueError(f"K must be at least 2, got {k}")
    if k > n:
        raise ValueError(f"Cannot make K={k} clusters from {n} molecules; use K <= {n}")
    return int(k)


def fit_kmeans(
    bits: np.ndarray,
    k: int,
    seed: int = 0,
    batch_size: int = DEFAULT_BATCH_SIZE,
    n_init: int = 1,
    max_iter: int = 100,
    n_threads: int | None = None,
):
    """Fit scikit-learn's ``MiniBatchKMeans`` with a fixed seed and return the fitted model.

    ``n_init=1`` is scikit-learn's own choice for k-means++ initialisation; each extra initialisation repeats the
    k-means++ pass over ``3 * batch_size`` molecules, which dominates the run time for K in the thousands.
    """
    # scikit-learn is not loaded by `import moleclip`; only pseudo-labelling needs it
    from sklearn.cluster import MiniBatchKMeans

    data = _as_float32(bits)
    k = _check_k(k, len(data))
    model = MiniBatchKMeans(
        n_clusters=k,
        batch_size=min(int(batch_size), len(data)),
        n_init=int(n_init),
        max_iter=int(max_iter),
        random_state=int(seed),
        # Labels are assigned afterwards in chunks (assign_clusters); skipping them here saves a full pass.
        compute_labels=False,
    )
    with _thread_limit(n_threads):
        model.fit(data)
    return model


def assign_clusters(
    bits: np.ndarray, centers: np.ndarray, chunk_size: int = _ASSIGN_CHUNK, n_threads: int | None = None
) -> tuple[np.ndarray, float]:
    """Nearest centre of every row (``int32``) and the inertia (sum of squared distances), computed in chunks."""
    centers = np.asarray(centers, dtype=np.float32)
    center_norms = np.einsum("ij,ij->i", centers, centers)
    labels = np.empty(len(bits), dtype=np.int32)
    inertia = 0.0
    with _thread_limit(n_threads):
        for start in range(0, len(bits), chunk_size):
            chunk = np.asarray(bits[start : start + chunk_size], dtype=np.float32)
            # |x - c|^2 = |x|^2 - 2 x.c + |c|^2; |x|^2 does not change the argmin, so it is added only for inertia.
            distances = center_norms[None, :] - 2.0 * (chunk @ centers.T)
            nearest = distances.argmin(axis=1)
            labels[start : start + len(chunk)] = nearest
            closest = distances[np.arange(len(chunk)), nearest] + np.einsum("ij,ij->i", chunk, chunk)
            inertia += float(np.maximum(closest, 0.0).sum(dtype=np.float64))
    return labels, inertia


def cluster(
    bits: np.ndarray,
    k: int,
    seed: int = 0,
    batch_size: int = DEFAULT_BATCH_SIZE,
    n_init: int = 1,
    n_threads: int | None = None,
    return_inertia: bool = False,
) -> np.ndarray | tuple[np.ndarray, float]:
    """Cluster fingerprints into ``k`` groups with mini-batch K-means; returns one ``int32`` label per row.

    Args:
        bits: ``[n_molecules, n_bits]`` fingerprints (``uint8`` or ``float32``; pass float32 to reuse one
            conversion across several K).
        k: number of clusters.
        seed: random state of K-means; the same seed on the same data gives the same labels.
        batch_size: molecules per mini-batch (20,000 in the paper).
        n_init: k-means++ initialisations to try.
        n_threads: cap on BLAS/OpenMP threads (``None``: library default, usually every core).
        return_inertia: also return the sum of squared distances to the assigned centres.
    """
    data = _as_float32(bits)
    model = fit_kmeans(data, k, seed=seed, batch_size=batch_size, n_init=n_init, n_threads=n_threads)
    labels, inertia = assign_clusters(data, model.cluster_centers_, n_threads=n_threads)
    return (labels, inertia) if return_inertia else labels


def scan_k(
    bits: np.ndarray,
    ks: Sequence[int] = K_SCAN,
    seed: int = 0,
    batch_size: int = DEFAULT_BATCH_SIZE,
    n_init: int = 1,
    sample_size: int | None = None,
    n_threads: int | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Inertia of mini-batch K-means for each K, as a DataFrame with columns ``k`` and ``inertia`` (sorted by K).

    ``sample_size`` scans on a random subset of that many molecules (drawn with ``seed``), which makes the scan on
    millions of molecules affordable; ``None`` uses them all. K values larger than the number of molecules are
    refused.
    """
    data = _as_float32(bits)
    sampled = sample_size is not None and sample_size < len(data)
    if sampled:
        rows = np.sort(np.random.default_rng(seed).choice(len(data), size=int(sample_size), replace=False))
        data = data[rows]
    ks = sorted({_check_k(k, np.iinfo(np.int64).max) for k in ks})  # integers >= 2; the size is checked below
    # Said for the scan as a whole: with the default K values (up to 3000), a small file would otherwise be refused
    # with "K=50" or so, a K the user never typed.
    too_many = [k for k in ks if k > len(data)]
    if too_many:
        where = f"the scan sample of {len(data)}" if sampled else f"{len(data)} molecules"
        raise ValueError(f"The K scan ({', '.join(map(str, ks))}) has K values above the number of molecules "
                         f"({', '.join(map(str, too_many))} > {len(data)}): K-means cannot make more clusters than "
                         f"{where}. Scan K values up to {len(data)} (scan_ks, --scan-k), or give K explicitly")
    if len(ks) < 3:
        raise ValueError(f"A K scan needs at least 3 distinct K values to show a knee, got {ks}")
    inertias = []
    for k in tqdm(ks, desc="K scan", unit="K", disable=not progress):
        _, inertia = cluster(data, k, seed=seed, batch_size=batch_size, n_init=n_init, n_threads=n_threads,
                             return_inertia=True)
        inertias.append(inertia)
    return pd.DataFrame({"k": np.asarray(ks, dtype=np.int64), "inertia": np.asarray(inertias, dtype=np.float64)})


def pick_knee(curve: pd.DataFrame) -> int:
    """The K at the knee of an inertia curve (``kneed.KneeLocator``, convex, decreasing), as in the paper.

    Raises:
        ValueError: when the curve has no knee (for example a straight line, or too few points).
    """
    # kneed is not loaded by `import moleclip`; only pseudo-labelling needs it
    from kneed import KneeLocator

    missing = {"k", "inertia"} - set(curve.columns)
    if missing:
        raise KeyError(f"The K-scan curve needs columns 'k' and 'inertia'; missing {sorted(missing)}")
    curve = curve.sort_values("k")
    if len(curve) < 3:
        raise ValueError(f"Need at least 3 points to find a knee, got {len(curve)}")
    locator = KneeLocator(
        curve["k"].to_numpy(dtype=float),
        curve["inertia"].to_numpy(dtype=float),
        curve="convex",
        direction="decreasing",
    )
    if locator.knee is None:
        points = ", ".join(f"K={k}: {i:.4g}" for k, i in zip(curve["k"], curve["inertia"]))
        raise ValueError(f"No knee found in the inertia curve ({points}); choose K explicitly or scan other K values")
    return int(round(locator.knee))


def plot_k_scan(curve: pd.DataFrame, knee: int | None, path: str | os.PathLike) -> None:
    """Save the inertia-versus-K curve as a PNG, with the knee marked."""
    # A bare Figure on the Agg canvas: no pyplot state, no global backend switch (safe inside notebooks and servers).
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    curve = curve.sort_values("k")
    fig = Figure(figsize=(6, 4), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.plot(curve["k"], curve["inertia"], marker="o", markersize=4, color="tab:blue", label="inertia")
    if knee is not None:
        ax.axvline(knee, color="tab:red", linestyle="--", linewidth=1, label=f"knee: K = {knee}")
        at_knee = curve.loc[curve["k"] == knee, "inertia"]
        if len(at_knee):
            ax.plot([knee], [at_knee.iloc[0]], marker="o", markersize=8, color="tab:red")
    ax.set_xlabel("K (number of clusters)")
    ax.set_ylabel("inertia (sum of squared distances)")
    ax.set_title("Mini-batch K-means on MACCS keys")
    ax.legend()
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, format="png")


def compute_pseudo_labels(
    smiles: Sequence[str],
    ks: Sequence[int] | str,
    seed: int = 0,
    n_jobs: int | None = None,
    scan_ks: Sequence[int] | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    n_init: int = 1,
    scan_sample_size: int | None = None,
    progress: bool = True,
    standardize: str = "none",
) -> tuple[pd.DataFrame, dict]:
    """MACCS keys, then K-means labels for each K, for a list of SMILES.

    Args:
        smiles: SMILES strings; entries that do not parse are left out and listed in ``info["skipped"]``.
        ks: the K values, or ``"auto"`` to scan ``scan_ks`` (default :data:`K_SCAN`) and use the knee.
        seed: K-means random state (and the subsample for ``scan_sample_size``).
        n_jobs: processes for the fingerprints and threads for K-means (``None``: all cores).
        scan_ks: K values for the ``"auto"`` scan.
        batch_size, n_init: mini-batch K-means settings.
        scan_sample_size: scan on a random subset of this many molecules (labels still use every molecule).
        progress: show progress bars.
        standardize: prepare each molecule first (`standardize.STANDARDIZATIONS`): the labels, and the table's
            ``smiles`` column, are then the standardised molecules', and ``input_smiles`` keeps the strings given.

    Returns:
        ``(frame, info)``. ``frame`` has a ``smiles`` column (the input strings of the valid molecules, in input
        order) and one ``int32`` column ``label_k{K}`` per K. ``info`` holds ``n_input``, ``n_valid``, ``skipped``
        (list of :class:`SkippedMolecule`), ``kept`` (input positions of the rows), ``ks``, ``inertia`` (per K),
        ``seconds`` (per step) and, for ``"auto"``, ``curve`` (DataFrame ``k``/``inertia``) and ``knee``.
    """
    auto = isinstance(ks, str)
    if auto and ks != "auto":
        raise ValueError(f"ks must be a list of integers or 'auto', got {ks!r}")
    if not auto:
        ks = list(ks)
        if not ks:
            raise ValueError("Give at least one K (or 'auto')")
    if scan_ks is not None and not auto:
        raise ValueError("scan_ks is only used with ks='auto'")
    # Settings K-means would refuse are refused now, not after every fingerprint is computed (minutes on ChEMBL):
    # scikit-learn's random_state range, K values below 2, a scan too short to show a knee.
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**32:
        raise ValueError(f"seed must be an integer in 0..{2**32 - 1}, got {seed!r}")
    wanted_ks = {_check_k(k, np.iinfo(np.int64).max) for k in ((scan_ks or K_SCAN) if auto else ks)}
    if auto and len(wanted_ks) < 3:
        raise ValueError(f"A K scan needs at least 3 distinct K values to show a knee, got {sorted(wanted_ks)}")

    seconds: dict[str, float] = {}
    start = time.perf_counter()
    fingerprints = maccs_keys(smiles, n_jobs=n_jobs, progress=progress, standardize=standardize)
    seconds["maccs"] = time.perf_counter() - start
    n_valid = len(fingerprints.kept)
    if n_valid < 2:
        raise ValueError(
            f"Only {n_valid} of {len(smiles)} molecules could be parsed; nothing to cluster. "
            f"{fingerprints.describe_skipped()}"
        )
    data = _as_float32(fingerprints.bits)
    # K-means works on the float32 copy; dropping the uint8 matrix keeps one copy of the data alive, not two.
    fingerprints.bits = np.empty((0, data.shape[1]), dtype=np.uint8)

    info: dict = {
        "n_input": len(smiles),
        "n_valid": n_valid,
        "skipped": fingerprints.skipped,
        "kept": fingerprints.kept,
        "curve": None,
        "knee": None,
        "standardize": standardize,
    }
    if auto:
        start = time.perf_counter()
        curve = scan_k(data, scan_ks if scan_ks is not None else K_SCAN, seed=seed, batch_size=batch_size,
                       n_init=n_init, sample_size=scan_sample_size, n_threads=n_jobs, progress=progress)
        seconds["k_scan"] = time.perf_counter() - start
        knee = pick_knee(curve)
        info["curve"], info["knee"] = curve, knee
        ks = [knee]
    ks = sorted({_check_k(k, n_valid) for k in ks})

    given = [smiles[i] for i in fingerprints.kept]
    columns: dict[str, object] = {"smiles": given}
    if fingerprints.smiles is not None:  # standardised: draw (and label) the parent, keep what was given beside it
        columns = {"smiles": fingerprints.smiles, "input_smiles": given}
    inertias: dict[int, float] = {}
    for k in tqdm(ks, desc="K-means", unit="K", disable=not progress or len(ks) == 1):
        start = time.perf_counter()
        labels, inertias[k] = cluster(data, k, seed=seed, batch_size=batch_size, n_init=n_init, n_threads=n_jobs,
                                      return_inertia=True)
        seconds[f"kmeans_k{k}"] = time.perf_counter() - start
        columns[label_column(k)] = labels
    info.update(ks=ks, inertia=inertias, seconds=seconds)
    return pd.DataFrame(columns), info


# Parquet metadata key recording how a pseudo-label table's molecules were standardised, so that pretraining can
# refuse to combine labels of one preparation with drawings of another.
STANDARDIZE_METADATA_KEY = b"moleclip.standardize"


def write_pseudo_labels(frame: pd.DataFrame, path: str | os.PathLike, standardize: str = "none") -> None:
    """Write a pseudo-label table as Parquet, readable with ``datasets.load_dataset("parquet", data_files=path)``;
    `standardize` (how its molecules were prepared) goes into the file's metadata."""
    if "smiles" not in frame.columns:
        raise KeyError(f"A pseudo-label table needs a 'smiles' column; got {list(frame.columns)}")
    if not label_columns(frame.columns):
        raise KeyError(f"No pseudo-label columns ({LABEL_PREFIX}<K>) in {list(frame.columns)}")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    table = pa.Table.from_pandas(frame, preserve_index=False)
    table = table.replace_schema_metadata({**(table.schema.metadata or {}),
                                           STANDARDIZE_METADATA_KEY: standardize.encode()})
    pq.write_table(table, path)


def recorded_standardization(path: str | os.PathLike) -> str | None:
    """How the molecules of a Parquet table written by :func:`write_pseudo_labels` were standardised; None when the
    file does not say (other files, or tables written before the setting existed)."""
    if not str(path).lower().endswith(".parquet"):
        return None
    metadata = pq.read_schema(path).metadata or {}
    value = metadata.get(STANDARDIZE_METADATA_KEY)
    return value.decode() if value is not None else None

"""Search an embedded library of molecules by structure or by picture: a faiss index over MoleCLIP embeddings.

* :func:`read_embeddings` reads what `moleclip embed` writes (.csv/.tsv/.parquet: the input's columns plus
  `emb_0..emb_<d-1>`); rows without embeddings (molecules embed could not draw) are left out and counted.
* :func:`build_library_index` builds the index: exact (a flat index, every vector compared) or approximate (HNSW, a
  graph walk). `kind="auto"` takes HNSW only for libraries larger than :data:`AUTO_HNSW_VALUES` numbers (library size
  x dimension); see that constant for the measurement behind it.
* :func:`save_index` / :func:`load_index`: an index folder holds `index.faiss`, `library.parquet` (every library
  column but the embeddings, plus `library_row`, the row's 0-based position in the embeddings file) and
  `manifest.json` (metric, kind, count, dimension, the embeddings file's SHA-256, and the model that made the
  embeddings when the file records it). The manifest is written last: a folder without one is an interrupted build.
* The queries (SMILES and pictures of molecules) become vectors in `training/retrieval/queries.py`
  (:func:`embed_queries`, :func:`read_picture`, :class:`Query`; importable from here too).

faiss is imported here only, and only when an index is built or read: it is an optional dependency
(``pip install "moleclip[index]"``).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from moleclip import __version__
from moleclip.processing.tables import iter_molecule_table, read_molecule_table, table_smiles_column
from moleclip.training.outputs import (
    SKIPPED_COLUMN,
    check_run_folder,
    hold_run_folder,
    write_atomically,
    write_text_atomically,
)
from moleclip.training.retrieval.queries import PICTURE_SUFFIXES, Query, embed_queries, is_picture, read_picture

__all__ = [
    "AUTO_HNSW_VALUES", "KINDS", "METRICS", "PICTURE_SUFFIXES", "EmbeddedLibrary", "LibraryIndex", "Query",
    "build_library_index", "check_index_folder", "choose_kind", "embed_queries", "is_picture", "load_index",
    "read_embeddings", "read_picture", "save_index",
]

INDEX_FILE = "index.faiss"
LIBRARY_FILE = "library.parquet"
MANIFEST_FILE = "manifest.json"
INDEX_OUTPUTS = (INDEX_FILE, LIBRARY_FILE, MANIFEST_FILE)
FORMAT = "moleclip-vector-index"
FORMAT_VERSION = 1

METRICS = ("cosine", "l2")
KINDS = ("auto", "exact", "hnsw")

# `kind="auto"` builds HNSW when library size x dimension exceeds this: above 100,000 molecules of the 512 numbers a
# ViT-B/16 MoleCLIP gives (1.6 million of tiny's 32; the cost of exact search follows the memory it scans, size x
# dimension). Measured by benchmarks/retrieval.py on 2 shared, loaded CPU cores (two runs): one exact query at 512
# dimensions took 0.8-0.9 ms at 10,000 molecules, 28-48 ms at 100,000 and 120-150 ms at 500,000, crossing a 50 ms
# interactive budget between 108,000 and 195,000 (the lower, rounded down, is taken); HNSW answered in ~0.6 ms with
# recall@10 0.9995 on structured vectors, for a build of ~47 s per 100,000. Below the cutoff exact search is fast
# enough and perfect and needs no build; above it, it grows linearly with the library.
AUTO_HNSW_VALUES = 100_000 * 512

# HNSW settings, chosen on 100,000 structured vectors of 512 dimensions while writing benchmarks/retrieval.py: 32 links
# a node; 100 candidates while building (200 took three times as long for the same recall); 128 while searching
# (recall@10 1.00 vs 0.99 at 64, ~0.5 ms a query).
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 100
HNSW_EF_SEARCH = 128

EMBEDDING_COLUMN = re.compile(r"emb_(\d+)")
# Rows of an embeddings file read (and their text turned into numbers) at a time.
READ_CHUNK_ROWS = 10_000
LIBRARY_ROW = "library_row"
# The key of the Parquet metadata in which an embeddings file may record the model and processor that made it.
EMBEDDED_WITH_KEY = b"moleclip"
HIT_COLUMNS = ("query_number", "query", "query_type", "rank", "score", LIBRARY_ROW)


def _faiss():
    try:
        # faiss is an optional extra (moleclip[index])
        import faiss
    except ImportError as err:
        raise ImportError('vector search needs faiss, which is not installed: pip install "moleclip[index]" '
                          f"(faiss-cpu) [{err}]") from err
    return faiss


# ------------------------------------------------------------------------------------------------ the library
@dataclass
class EmbeddedLibrary:
    """An embeddings file as the index takes it.

    Attributes:
        frame: the rows that have embeddings, every column but the embeddings and embed's reason column, plus
            `library_row` (the row's 0-based position among the file's data rows), with a fresh 0-based index.
        smiles_column: the name of the SMILES column in `frame`.
        vectors: float32 (len(frame), dimension), in the order of `frame`.
        skipped: how many rows of the file have no embedding and were left out.
        path: the file read; sha256: its SHA-256.
        embedded_with: what the file records about the model and processor that made it (Parquet metadata key
            `moleclip`, a JSON object), or None.
    """

    frame: pd.DataFrame
    smiles_column: str
    vectors: np.ndarray
    skipped: int
    path: Path
    sha256: str
    embedded_with: dict | None = None


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _embedding_columns(columns, path: Path) -> list[str]:
    found = {int(m.group(1)): c for c in columns if isinstance(c, str) and (m := EMBEDDING_COLUMN.fullmatch(c))}
    if not found:
        raise ValueError(f"{path} has no embedding columns (emb_0, emb_1, ...): make it with `moleclip embed` "
                         "(.parquet or .csv output)")
    expected = list(range(len(found)))
    if sorted(found) != expected:
        missing = sorted(set(range(max(found) + 1)) - set(found))
        raise ValueError(f"{path}: the embedding columns are not emb_0..emb_{max(found)} (emb_{missing[0]} is "
                         "missing): the file is damaged or was edited")
    return [found[i] for i in expected]


def _read_embedded_with(path: Path) -> dict | None:
    if not path.name.lower().endswith((".parquet", ".pq")):
        return None
    try:
        metadata = pq.read_schema(path).metadata or {}
    except Exception:  # pyarrow's own errors for a file that is not Parquet: the reader reports it, naming the file
        return None
    raw = metadata.get(EMBEDDED_WITH_KEY)
    if raw is None:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        return None  # unreadable provenance is no provenance; the user then names the model at search time
    return value if isinstance(value, dict) else None


def read_embeddings(path: str | os.PathLike, smiles_column: str | None = None) -> EmbeddedLibrary:
    """Read an embeddings file written by `moleclip embed` (.csv/.tsv, optionally .gz, or .parquet).

    Read :data:`READ_CHUNK_ROWS` rows at a time, each chunk's embeddings turned into float32 at once: a CSV's cells
    are text, and a million rows of 512 of them held whole as Python strings would take some thirty gigabytes.

    Raises FileNotFoundError, ValueError (no embedding columns, a damaged row, no row with an embedding, a .npy file,
    which holds no SMILES) and the table reader's errors (no SMILES column: name it with `smiles_column`).
    """
    path = Path(os.fspath(path)).expanduser()
    if path.name.lower().endswith(".npy"):
        raise ValueError(f"{path}: a .npy embeddings file holds no SMILES or IDs; embed to .parquet or .csv instead")
    if path.is_file():  # the column embed was told to read (a Parquet file records it), unless another is named
        smiles_column = table_smiles_column(path, smiles_column, (_read_embedded_with(path) or {}).get("smiles_column"))
    frames, blocks, skipped, offset, columns, smiles_name = [], [], 0, 0, None, None
    for chunk in iter_molecule_table(path, smiles_column, READ_CHUNK_ROWS):
        frame, smiles_name = chunk.frame, chunk.smiles_column
        if columns is None:
            columns = _embedding_columns(frame.columns, path)
            if LIBRARY_ROW in frame.columns:
                raise ValueError(f"{path} has a column named {LIBRARY_ROW!r}, which the index uses for each "
                                 "molecule's row in the embeddings file: rename it")
        vectors = _chunk_vectors(frame[columns], path)
        empty = np.isnan(vectors).all(axis=1)
        broken = ~empty & ~np.isfinite(vectors).all(axis=1)
        if broken.any():
            row = int(np.flatnonzero(broken)[0])
            raise ValueError(f"{path}: line {chunk.line(row)} has a partly empty or infinite embedding: the file is "
                             "damaged or was edited")
        kept = np.flatnonzero(~empty)
        library = frame.drop(columns=columns + ([SKIPPED_COLUMN] if SKIPPED_COLUMN in frame.columns else []))
        library = library.iloc[kept].reset_index(drop=True)
        library[LIBRARY_ROW] = (offset + kept).astype(np.int64)
        frames.append(library)
        blocks.append(vectors[kept])
        skipped, offset = skipped + int(empty.sum()), offset + len(frame)
    if columns is None:  # a header and no rows: the header must still be an embeddings file's
        _embedding_columns(read_molecule_table(path, smiles_column).frame.columns, path)
    if not sum(len(block) for block in blocks):
        raise ValueError(f"{path}: no row has an embedding")
    return EmbeddedLibrary(frame=pd.concat(frames, ignore_index=True), smiles_column=smiles_name,
                           vectors=np.ascontiguousarray(np.concatenate(blocks)), skipped=skipped, path=path,
                           sha256=file_sha256(path), embedded_with=_read_embedded_with(path))


def _chunk_vectors(values: pd.DataFrame, path: Path) -> np.ndarray:
    # CSV cells are text, "" where embed wrote nothing; Parquet's are already floats, NaN for nothing
    if not all(pd.api.types.is_numeric_dtype(values[c]) for c in values.columns):
        values = values.replace("", np.nan)
    try:
        return values.to_numpy(dtype=np.float32)
    except (ValueError, TypeError) as err:
        raise ValueError(f"{path}: an embedding cell is not a number ({err})") from None


# ---------------------------------------------------------------------------------------------------- the index
def choose_kind(kind: str, count: int, dimension: int) -> str:
    """The index kind to build: `kind` itself, or for "auto" "hnsw" above :data:`AUTO_HNSW_VALUES`, else "exact"."""
    if kind not in KINDS:
        raise ValueError(f"unknown index kind {kind!r}; choose one of {', '.join(KINDS)}")
    if kind != "auto":
        return kind
    return "hnsw" if count * dimension > AUTO_HNSW_VALUES else "exact"


def _prepared(vectors, metric: str, dimension: int | None = None) -> np.ndarray:
    """float32, C-contiguous (faiss takes nothing else), 2-D; unit length for cosine, so inner product = cosine."""
    array = np.array(vectors, dtype=np.float32, order="C", copy=True)
    if array.ndim != 2 or array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"expected a non-empty 2-D array of vectors, got shape {array.shape}")
    if dimension is not None and array.shape[1] != dimension:
        raise ValueError(f"the query vectors have {array.shape[1]} dimensions but the index has {dimension}: the "
                         "model that embeds the queries is not the one that embedded the library")
    if not np.isfinite(array).all():
        raise ValueError("the vectors hold NaN or infinite values")
    if metric == "cosine":
        _faiss().normalize_L2(array)
    return array


def build_faiss_index(vectors, metric: str = "cosine", kind: str = "exact"):
    """A faiss index of `vectors` (normalised first for cosine). `kind` is "exact" or "hnsw"."""
    faiss = _faiss()
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")
    array = _prepared(vectors, metric)
    dimension = array.shape[1]
    faiss_metric = faiss.METRIC_INNER_PRODUCT if metric == "cosine" else faiss.METRIC_L2
    if kind == "exact":
        index = faiss.IndexFlatIP(dimension) if metric == "cosine" else faiss.IndexFlatL2(dimension)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(dimension, HNSW_M, faiss_metric)
        index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        index.hnsw.efSearch = HNSW_EF_SEARCH
    else:
        raise ValueError(f"unknown index kind {kind!r}; choose exact or hnsw (or auto, resolved by choose_kind)")
    index.add(array)
    return index


@dataclass
class LibraryIndex:
    """A searchable library: the faiss index, the library's rows in the index's order, and the manifest."""

    index: object
    library: pd.DataFrame
    manifest: dict = field(default_factory=dict)

    @property
    def count(self) -> int:
        return int(self.index.ntotal)

    @property
    def dimension(self) -> int:
        return int(self.index.d)

    @property
    def metric(self) -> str:
        return self.manifest["metric"]

    @property
    def kind(self) -> str:
        return self.manifest["kind"]

    @property
    def smiles_column(self) -> str:
        return self.manifest["smiles_column"]

    def search(self, vectors, k: int, ef_search: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(scores, positions), each (n_queries, min(k, count)), nearest first.

        `positions` index `self.library` (its `library_row` column is the row in the embeddings file); a position of
        -1 (with a NaN score) means HNSW found fewer than k neighbours. Scores are cosine similarities (higher is
        nearer) for metric "cosine", Euclidean distances (lower is nearer) for "l2". `ef_search` (HNSW only) is how
        many candidates the graph walk keeps: more is slower and finds more of the true neighbours; at least k is
        used.
        """
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k must be a whole number >= 1, got {k!r}")
        if ef_search is not None and self.kind != "hnsw":
            raise ValueError(f"ef_search only applies to an HNSW index; this one is {self.kind}")
        if ef_search is not None and (isinstance(ef_search, bool) or not isinstance(ef_search, (int, np.integer))
                                      or ef_search < 1):
            raise ValueError(f"ef_search must be a whole number >= 1, got {ef_search!r}")
        k = min(int(k), self.count)
        queries = _prepared(vectors, self.metric, self.dimension)
        # Equal scores (one molecule several times in a library) at the k-th place: faiss keeps whichever of them its
        # heap happened to keep (k=2 gave rows 3, 2 where k=3 gave 3, 0, 2). So one more hit than asked is fetched,
        # and more while the last fetched still ties the k-th, and ties go by library position: the hits for k are
        # always the first hits for k+1.
        fetch = min(k + 1, self.count)
        while True:
            raw, positions = self._search(queries, fetch, ef_search)
            tied = (raw[:, k - 1] == raw[:, fetch - 1]) & (positions[:, fetch - 1] >= 0)
            if fetch == self.count or not tied.any():
                break
            fetch = min(2 * fetch, self.count)
        scores, positions = raw.astype(np.float64), positions.astype(np.int64)
        if self.metric == "l2":
            scores = np.sqrt(np.maximum(scores, 0.0))  # faiss gives squared distances
        missing = positions < 0
        scores[missing] = np.nan
        nearer = np.where(missing, np.inf, scores if self.metric == "l2" else -scores)  # missing hits last
        order = np.lexsort((np.where(missing, np.iinfo(np.int64).max, positions), nearer), axis=-1)[:, :k]
        return np.take_along_axis(scores, order, axis=-1), np.take_along_axis(positions, order, axis=-1)

    def _search(self, queries: np.ndarray, fetch: int, ef_search: int | None):
        params = None
        if self.kind == "hnsw":
            faiss = _faiss()
            # Never fewer candidates than hits wanted: the walk returns at most ef_search of them.
            wanted = max(ef_search or self.manifest.get("hnsw", {}).get("ef_search", HNSW_EF_SEARCH), fetch)
            params = faiss.SearchParametersHNSW(efSearch=int(wanted))
        return self.index.search(queries, fetch, params=params)

    def hits(self, vectors, k: int, queries: Sequence[Query] | None = None,
             ef_search: int | None = None) -> pd.DataFrame:
        """The k nearest library molecules of each query vector as a table, one row per hit: query_number (1-based),
        query, query_type, rank (1 = nearest), score (float32, what the embeddings carry), library_row, then every
        library column in the library's order. A library column named like one of the hit columns is prefixed with
        "library_"."""
        scores, positions = self.search(vectors, k, ef_search)
        n_queries, width = positions.shape
        if queries is None:
            queries = [Query(text="", kind="vector")] * n_queries
        if len(queries) != n_queries:
            raise ValueError(f"{len(queries)} queries described for {n_queries} query vectors")
        found = positions >= 0
        query_of, rank_of = np.nonzero(found)
        library = self.library.iloc[positions[found]].reset_index(drop=True)
        ordered = [LIBRARY_ROW] + [c for c in library.columns if c != LIBRARY_ROW]
        library = library[ordered].rename(columns={c: f"library_{c}" for c in ordered
                                                   if c in HIT_COLUMNS and c != LIBRARY_ROW})
        head = pd.DataFrame({
            "query_number": query_of + 1,
            "query": [queries[i].text for i in query_of],
            "query_type": [queries[i].kind for i in query_of],
            "rank": rank_of + 1,
            "score": scores[found].astype(np.float32),
        })
        return pd.concat([head, library], axis=1)


def build_library_index(library: EmbeddedLibrary, metric: str = "cosine", kind: str = "auto") -> LibraryIndex:
    """Index an embedded library (see :func:`read_embeddings`); the manifest says how and from what."""
    count, dimension = library.vectors.shape
    chosen = choose_kind(kind, count, dimension)
    index = build_faiss_index(library.vectors, metric, chosen)
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "moleclip_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "metric": metric,
        "kind": chosen,
        "kind_requested": kind,
        "count": count,
        "dimension": dimension,
        "smiles_column": library.smiles_column,
        "embeddings": {"path": str(library.path.resolve()), "sha256": library.sha256,
                       "rows": count + library.skipped, "rows_without_embedding": library.skipped},
        # the model and processor settings the embeddings came from, when the file records them; otherwise the
        # model must be named at search time, and only the dimension can be checked
        "embedded_with": library.embedded_with,
    }
    if chosen == "hnsw":
        manifest["hnsw"] = {"m": HNSW_M, "ef_construction": HNSW_EF_CONSTRUCTION, "ef_search": HNSW_EF_SEARCH}
    return LibraryIndex(index=index, library=library.frame, manifest=manifest)


# ------------------------------------------------------------------------------------------------ on disk
def check_index_folder(folder: str | os.PathLike, overwrite: bool = False, embeddings=None) -> None:
    """Refuse, before any work, a folder that holds an index (unless `overwrite`) or cannot be written, and an
    `embeddings` file that the overwrite would remove (a library.parquet inside the old index)."""
    folder = Path(folder).expanduser()
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"--output {folder}: a file is in the way; an index is a folder")
    found = [name for name in INDEX_OUTPUTS if (folder / name).exists()]
    if found and not overwrite:
        raise FileExistsError(f"{folder} already holds an index ({', '.join(found)}): pass --overwrite to replace it, "
                              "or choose another folder")
    check_run_folder(folder, INDEX_OUTPUTS, overwrite=overwrite,  # and can it be written?
                     inputs={"--embeddings": embeddings})


def save_index(index: LibraryIndex, folder: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write the index folder: each file atomically, the manifest last, while holding the folder's lock. With
    `overwrite`, a previous index there is removed first, so no old file is ever read with a new manifest."""
    faiss = _faiss()
    folder = Path(folder).expanduser()
    check_index_folder(folder, overwrite)
    with hold_run_folder(folder, clear=INDEX_OUTPUTS if overwrite else ()):
        write_atomically(folder / INDEX_FILE, lambda tmp: faiss.write_index(index.index, str(tmp)))
        write_atomically(folder / LIBRARY_FILE, lambda tmp: index.library.to_parquet(tmp, index=False))
        write_text_atomically(folder / MANIFEST_FILE, json.dumps(index.manifest, indent=2) + "\n")
    return folder


def load_index(folder: str | os.PathLike) -> LibraryIndex:
    """Read an index folder written by :func:`save_index`, checking that its parts agree."""
    folder = Path(folder).expanduser()
    if not folder.exists():
        raise FileNotFoundError(f"index not found: {folder}")
    if not folder.is_dir():
        raise ValueError(f"{folder} is a file; an index is a folder made by `moleclip index`")
    manifest_file = folder / MANIFEST_FILE
    if not manifest_file.is_file():
        raise ValueError(f"{folder} is not a MoleCLIP index: it has no {MANIFEST_FILE} (a build that was interrupted "
                         "leaves none): build it again with `moleclip index`")
    try:
        manifest = json.loads(manifest_file.read_text())
    except ValueError as err:
        raise ValueError(f"{manifest_file} is damaged ({err}): build the index again") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ValueError(f"{manifest_file} is not a MoleCLIP index manifest")
    if manifest.get("format_version", 0) > FORMAT_VERSION:
        raise ValueError(f"{folder} was written by a newer MoleCLIP (index format {manifest['format_version']}; this "
                         f"version reads {FORMAT_VERSION}): upgrade moleclip or build the index again")
    faiss = _faiss()
    for name in (INDEX_FILE, LIBRARY_FILE):
        if not (folder / name).is_file():
            raise ValueError(f"{folder} lacks {name}: build the index again")
    try:
        index = faiss.read_index(str(folder / INDEX_FILE))
    except RuntimeError as err:  # faiss reports a bad file as a RuntimeError carrying its C++ message
        first = str(err).strip().splitlines()[0] if str(err).strip() else "unreadable"
        raise ValueError(f"{folder / INDEX_FILE} is damaged ({first}): build the index again") from None
    try:
        library = pd.read_parquet(folder / LIBRARY_FILE)
    except Exception as err:  # pyarrow raises its own types for a file that is not Parquet
        raise ValueError(f"{folder / LIBRARY_FILE} is damaged ({err}): build the index again") from None
    count, dimension = manifest.get("count"), manifest.get("dimension")
    if not (index.ntotal == len(library) == count and index.d == dimension):
        raise ValueError(f"{folder}: its parts disagree (index {index.ntotal} x {index.d}, library {len(library)} "
                         f"rows, manifest {count} x {dimension}): build the index again")
    missing = [c for c in (manifest.get("smiles_column"), LIBRARY_ROW) if c not in library.columns]
    if missing:
        raise ValueError(f"{folder / LIBRARY_FILE} lacks the column {missing[0]!r}: build the index again")
    if manifest.get("metric") not in METRICS or manifest.get("kind") not in ("exact", "hnsw"):
        raise ValueError(f"{manifest_file}: unknown metric or kind ({manifest.get('metric')!r}, "
                         f"{manifest.get('kind')!r})")
    return LibraryIndex(index=index, library=library, manifest=manifest)

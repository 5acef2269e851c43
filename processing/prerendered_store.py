"""The pre-rendered store: every molecule drawn once ahead of pretraining, as a Hugging Face ``datasets`` dataset.

Layout of a store folder (format ``moleclip-prerendered-parquet-v2``)::

    manifest.json                            format, size, variants, seed, shard table (written last: the store is done)
    README.md                                a dataset card whose ``configs`` point the Hub / ``load_dataset`` at data/
    data/train-00000-of-00004.parquet ...    the shards

One row per molecule: ``row`` (its position in the pretraining table), ``smiles``, ``plain`` (the plain drawing) and
``styled_0`` .. ``styled_{V-1}`` (random styles), each picture a ``datasets.Image()`` (PNG bytes; null where the
molecule could not be drawn). Why per molecule rather than per picture: a training sample reads the plain drawing
*and* one variant of the same molecule, and here both sit in one row of one row group (one read instead of two); the
SMILES is stored once instead of 1 + V times; and a node that streams its shards gets whole molecules, i.e. ready pairs.

Random access (the map-style pretraining dataset) is O(1) in the store's size: shards hold ``shard_size`` molecules and
row groups ``row_group_size`` molecules, so slot -> (shard, row group, offset) is arithmetic, and a read decodes one
small row group (16 molecules by default; pictures are stored uncompressed by Parquet since PNG already is). Each
process keeps a few shards open (footers parsed once); nothing open is pickled into DataLoader workers.

Writing: :func:`prerender` gives each worker process whole shards; a worker writes ``<shard>.parquet.partial`` and
renames it when closed, so a killed run leaves no shard that reads cleanly under its final name (and ``*.partial``
matches no ``*.parquet`` pattern). A rerun with the same settings keeps finished shards and draws only the rest.
"""

from __future__ import annotations

import hashlib
import io
import json
import multiprocessing
import os
import shutil
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from huggingface_hub import HfApi
from PIL import Image
from tqdm.auto import tqdm

from .cores import available_cores
from .image_processing_moleclip import MoleCLIPImageProcessor
from .molecules import quiet_rdkit
from .seeding import sample_rng

__all__ = ["PRERENDER_FORMAT", "PrerenderedImages", "prerender", "push_store_to_hub", "smiles_digest"]

PRERENDER_FORMAT = "moleclip-prerendered-parquet-v2"
OLD_FORMATS = ("moleclip-prerendered-png-v1",)
MANIFEST, PLAN, DATA = "manifest.json", "prerender_plan.json", "data"
PARTIAL = ".partial"
# Shards open at once per process: footers are parsed once, and a ChEMBL-sized store (~1k shards) stays under the
# usual 1024 file descriptors per process even with several DataLoader workers' own handles.
OPEN_SHARDS = 64


def smiles_digest(smiles: Sequence[str]) -> str:
    """A short fingerprint of an ordered list of SMILES (to check that a store matches a dataset)."""
    digest = hashlib.sha1()
    for s in smiles:
        digest.update(s.encode("utf-8"))
        digest.update(b"\n")
    return digest.hexdigest()


def image_columns(n_variants: int) -> list[str]:
    return ["plain"] + [f"styled_{v}" for v in range(n_variants)]


def store_features(n_variants: int):
    """The ``datasets.Features`` of a store's rows (their Arrow schema carries them to ``load_dataset``)."""
    # datasets is not loaded by `import moleclip`; only the store's Hub side needs it
    import datasets

    columns = {"row": datasets.Value("int64"), "smiles": datasets.Value("string")}
    columns.update({name: datasets.Image() for name in image_columns(n_variants)})
    return datasets.Features(columns)


def shard_file(shard: int, n_shards: int) -> str:
    # The Hub's split naming (train-XXXXX-of-NNNNN): the dataset viewer and load_dataset find the split by itself.
    return f"{DATA}/train-{shard:05d}-of-{n_shards:05d}.parquet"


def _write_json(path: Path, obj: dict) -> None:
    tmp = path.with_name(path.name + PARTIAL)
    tmp.write_text(json.dumps(obj, indent=2))
    os.replace(tmp, path)


class PrerenderedImages:
    """A store written by :func:`prerender`: per molecule the plain drawing and ``n_variants`` random-style ones.

    Args:
        path: the store folder.
        size: the picture side the reader needs (None: any); a store drawn at another size is refused.
    """

    def __init__(self, path: str | os.PathLike, size: int | None = None):
        self.path = Path(path)
        manifest = self.path / MANIFEST
        if not manifest.is_file():
            if (self.path / "meta.json").is_file():
                old = json.loads((self.path / "meta.json").read_text()).get("format")
                raise ValueError(f"{self.path} is a pre-rendered store in an old format ({old}); re-run `moleclip "
                                 f"prerender` to rewrite it as Parquet shards ({PRERENDER_FORMAT})")
            if (self.path / PLAN).is_file():
                raise ValueError(f"{self.path} is an unfinished pre-rendered store (interrupted?); re-run the same "
                                 "`moleclip prerender` command to finish it")
            raise FileNotFoundError(f"{self.path} is not a pre-rendered store (no {MANIFEST}); make one with "
                                    "`moleclip prerender`")
        self.meta = json.loads(manifest.read_text())
        if self.meta.get("format") != PRERENDER_FORMAT:
            raise ValueError(f"{self.path}: store format {self.meta.get('format')!r} is not {PRERENDER_FORMAT}; re-run "
                             "`moleclip prerender` to rewrite it")
        self.size = int(self.meta["size"])
        if size is not None and int(size) != self.size:
            raise ValueError(f"{self.path} holds {self.size} px drawings, {size} px are needed; re-run `moleclip "
                             f"prerender --size {size}`")
        self.n_variants = int(self.meta["n_variants"])
        # stores written before the record were drawn with the default drawing settings
        self.drawing = self.meta.get("drawing", MoleCLIPImageProcessor().drawing_settings())
        self.shard_size, self.row_group_size = int(self.meta["shard_size"]), int(self.meta["row_group_size"])
        self.files = [shard["file"] for shard in self.meta["shards"]]
        self._n = int(self.meta["n_molecules"])
        self._open: OrderedDict = OrderedDict()

    def __getstate__(self):
        # Workers open their own shards (cheap) rather than inheriting file handles through pickling.
        state = dict(self.__dict__)
        state["_open"] = OrderedDict()
        return state

    def __len__(self) -> int:
        return self._n

    def data_files(self) -> list[str]:
        """The shard paths, in store order (what ``load_dataset("parquet", data_files=...)`` takes)."""
        return [str(self.path / name) for name in self.files]

    def _column(self, name: str) -> list:
        return [value for path in self.data_files()
                for value in pq.read_table(path, columns=[name]).column(name).to_pylist()]

    def smiles(self) -> list[str]:
        return self._column("smiles")

    def rows(self) -> np.ndarray:
        """Each molecule's position in the table it was pre-rendered from."""
        return np.array(self._column("row"), dtype=np.int64)

    def slots_for(self, smiles: Sequence[str]) -> np.ndarray:
        """The store slot of each of ``smiles`` (-1 where the store lacks a molecule)."""
        if len(smiles) == self._n and self.meta.get("smiles_sha1") == smiles_digest(smiles):
            return np.arange(len(smiles), dtype=np.int64)
        where = {s: i for i, s in enumerate(self.smiles())}
        return np.array([where.get(s, -1) for s in smiles], dtype=np.int64)

    def _shard(self, shard: int):
        handle = self._open.pop(shard, None)
        if handle is None:
            # pre_buffer off: it coalesces reads for big scans; for one small row group it is pure overhead (1.7x)
            handle = pq.ParquetFile(self.path / self.files[shard], memory_map=True, pre_buffer=False)
            if len(self._open) >= OPEN_SHARDS:
                self._open.popitem(last=False)[1].close()
        self._open[shard] = handle
        return handle

    def _read_row(self, slot: int, columns: list[str]) -> list[bytes | None]:
        if not 0 <= slot < self._n:
            raise IndexError(f"slot {slot} out of range for a store of {self._n} molecules")
        local, shard = slot % self.shard_size, slot // self.shard_size
        try:
            # One small read: no thread pool to start, only the pictures' `bytes` leaves (not their `path`); a missing
            # picture (a null struct) reads back from Parquet with a null child too.
            group = self._shard(shard).read_row_group(
                local // self.row_group_size, columns=[f"{name}.bytes" for name in columns], use_threads=False)
        except Exception as err:  # pyarrow's errors for a file gone, cut short or overwritten
            raise OSError(f"the pre-rendered store {self.path} cannot be read at {self.files[shard]} "
                          f"({type(err).__name__}: {err}); the store is damaged or incomplete: copy or download it "
                          "again, or draw it again with `moleclip prerender --overwrite`") from err
        return [group.column(name).chunk(0).field("bytes")[local % self.row_group_size].as_py() for name in columns]

    @staticmethod
    def _decode(raw: bytes | None) -> np.ndarray | None:
        return None if raw is None else np.asarray(Image.open(io.BytesIO(raw)).convert("RGB"))

    def read(self, slot: int, variant: int | None = None) -> np.ndarray | None:
        """The plain drawing (``variant=None``) or random-style variant ``variant`` of a molecule; None if missing."""
        if variant is not None and not 0 <= variant < self.n_variants:
            raise IndexError(f"variant {variant} out of range: the store holds {self.n_variants} per molecule")
        return self._decode(self._read_row(slot, ["plain" if variant is None else f"styled_{variant}"])[0])

    def read_pair(self, slot: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray] | None:
        """The plain drawing and a random variant (chosen with ``rng``); None if the molecule could not be drawn.

        Both come from one row-group read. ``rng`` is left as if it had drawn nothing when the molecule is missing,
        so that the caller's fallback drawing sees the same stream as a store that never held the molecule.
        """
        state = rng.bit_generator.state
        variant = int(rng.integers(self.n_variants)) if self.n_variants else None
        columns = ["plain"] + ([] if variant is None else [f"styled_{variant}"])
        raws = self._read_row(slot, columns)
        if any(raw is None for raw in raws):
            rng.bit_generator.state = state
            return None
        plain = self._decode(raws[0])
        return plain, (plain if variant is None else self._decode(raws[1]))

    def streaming(self, rank: int | None = None, world_size: int | None = None):
        """The store as a streaming ``datasets.IterableDataset`` (pictures decoded to PIL), this node's part if
        ``rank``/``world_size`` are given (whole shards per node when their count divides evenly)."""
        # datasets is not loaded by `import moleclip`; only the streaming store needs it
        import datasets

        stream = datasets.load_dataset("parquet", data_files=self.data_files(), split="train", streaming=True)
        if world_size is not None:
            from datasets.distributed import split_dataset_by_node

            stream = split_dataset_by_node(stream, rank=int(rank or 0), world_size=int(world_size))
        return stream

    def push_to_hub(self, repo_id: str, **kwargs) -> str:
        """Upload the store as a Hub dataset repo (see :func:`push_store_to_hub`)."""
        return push_store_to_hub(self.path, repo_id, **kwargs)


def push_store_to_hub(path: str | os.PathLike, repo_id: str, private: bool | None = None, token: str | None = None,
                      commit_message: str = "Upload MoleCLIP pre-rendered store", api=None) -> str:
    """Upload a finished store folder as it is to a dataset repo; returns the commit URL.

    The folder already is a Hub dataset (Parquet shards with ``datasets`` features, a card with its ``configs``), so
    uploading it keeps its shards, unlike ``Dataset.push_to_hub``, which would decode and re-shard every picture;
    ``load_dataset(repo_id)`` and ``PrerenderedImages(snapshot_download(repo_id, repo_type="dataset"))`` both read it.
    ``api``: a ``huggingface_hub.HfApi`` (or a stand-in with its ``create_repo``/``upload_folder``).
    """
    store = PrerenderedImages(path)  # refuses unfinished or old stores before anything is uploaded
    if api is None:
        if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
            raise RuntimeError("HF_HUB_OFFLINE is set: unset it to push to the Hub")
        api = HfApi()
    repo_id = api.create_repo(repo_id, repo_type="dataset", private=private, token=token, exist_ok=True).repo_id
    commit = api.upload_folder(repo_id=repo_id, repo_type="dataset", folder_path=str(store.path), token=token,
                               commit_message=commit_message, ignore_patterns=[f"*{PARTIAL}", PLAN])
    return str(getattr(commit, "commit_url", commit))


# ---------------------------------------------------------------------------------------------------------- writing
def _png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    # Level 1: nearly the size of level 6 on line drawings, at half the encoding time.
    Image.fromarray(image).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def draw_molecule(smiles: str, index: int, n_variants: int, seed: int,
                  processor: MoleCLIPImageProcessor) -> list[bytes] | None:
    """PNG bytes of the plain drawing and ``n_variants`` random-style drawings of the molecule in slot ``index``
    (the styles are a pure function of ``(seed, index, variant)``), drawn by ``processor`` as given (the table is
    prepared before); None if it cannot be drawn."""
    try:
        images = [_png(processor.render_images(smiles, augmentation="none", standardize="none")[0][0])]
        for v in range(n_variants):
            images.append(_png(processor.render_images(smiles, randomize_drawing=True, augmentation="none",
                                                       standardize="none", seed=sample_rng(seed, index, v))[0][0]))
    except Exception:  # RDKit raises assorted C++ errors; a molecule that cannot be drawn is recorded as missing
        return None
    return images


def _write_shard(task: tuple) -> dict:
    """Draw one shard and write it atomically (in a worker process); returns its manifest entry."""
    folder, name, start, smiles, rows, processor, n_variants, seed, row_group_size = task
    final = Path(folder) / name
    partial = final.with_name(final.name + PARTIAL)
    names = image_columns(n_variants)
    schema = store_features(n_variants).arrow_schema
    # PNG does not compress further: Parquet stores pictures as they are (and reads skip a decompression pass).
    compression = {"row": "zstd", "smiles": "zstd"}
    compression.update({f"{c}.{field}": "none" for c in names for field in ("bytes", "path")})
    processor, failed = processor.with_cache_size(1), 0
    writer = pq.ParquetWriter(partial, schema, compression=compression, use_dictionary=False, write_statistics=False)
    with quiet_rdkit():
        for lo in range(0, len(smiles), row_group_size):
            columns = {"row": rows[lo : lo + row_group_size], "smiles": smiles[lo : lo + row_group_size]}
            drawn = [draw_molecule(s, start + lo + i, n_variants, seed, processor)
                     for i, s in enumerate(columns["smiles"])]
            failed += sum(images is None for images in drawn)
            for j, column in enumerate(names):
                columns[column] = [None if images is None else {"bytes": images[j], "path": None} for images in drawn]
            writer.write_table(pa.table(columns, schema=schema), row_group_size=row_group_size)
    entry = {"file": name, "first_slot": start, "molecules": len(smiles), "failed": failed}
    # The entry travels in the footer too, so a resumed run trusts a finished shard without reading its pictures.
    writer.add_key_value_metadata({"moleclip": json.dumps(entry)})
    writer.close()
    with open(partial, "rb+") as fh:
        os.fsync(fh.fileno())  # on disk before it gets its final name: a crash cannot leave a renamed empty file
    os.replace(partial, final)
    return dict(entry, bytes=final.stat().st_size)


def _finished_shard(path: Path, expected: dict) -> dict | None:
    """A finished shard's manifest entry, if ``path`` holds the shard ``expected`` describes."""
    try:
        metadata = pq.read_metadata(path)
        entry = json.loads(metadata.metadata[b"moleclip"])
    except Exception:  # missing, truncated or foreign: draw it again
        return None
    if metadata.num_rows != expected["molecules"] or any(entry.get(k) != v for k, v in expected.items()):
        return None
    return dict(entry, bytes=path.stat().st_size)


def _card(plan: dict) -> str:
    return (f"---\nconfigs:\n- config_name: default\n  data_files:\n  - split: train\n    path: {DATA}/train-*.parquet\n"
            f"tags:\n- chemistry\n- moleclip\n---\n\n# MoleCLIP pre-rendered drawings\n\n{plan['n_molecules']} molecules, "
            f"each drawn by RDKit at {plan['size']} px: column `plain` (the plain drawing) and {plan['n_variants']} "
            f"random-style drawings (`styled_0` ...; seed {plan['seed']}); `row` is the molecule's row in the table it "
            "was drawn from. Written by `moleclip prerender`; read by `moleclip pretrain --prerendered` after "
            "`snapshot_download(repo, repo_type='dataset')`, or with `datasets.load_dataset`.\n")


def prerender(
    smiles: Sequence[str],
    output_dir: str | os.PathLike,
    size: int = 224,
    n_variants: int = 2,
    seed: int = 0,
    n_jobs: int | None = None,
    shard_size: int = 2048,
    row_group_size: int = 16,
    rows: Sequence[int] | None = None,
    overwrite: bool = False,
    progress: bool = True,
    processor: MoleCLIPImageProcessor | None = None,
) -> PrerenderedImages:
    """Draw every molecule once (plain) and ``n_variants`` times with a random style, into a store at ``output_dir``.

    Shards of ``shard_size`` molecules are drawn and written by ``n_jobs`` processes (default: all cores). A run that
    was interrupted is resumed by calling again with the same arguments (finished shards are kept); ``overwrite``
    starts over. ``rows``: each molecule's row in its table (default 0..n-1). Molecules that cannot be drawn get
    null pictures (training draws them on the fly, and reports them). ``processor`` draws (the model's, whose drawing
    settings the store records and pretraining checks; default: a default processor of side ``size``).
    """
    output_dir = Path(output_dir)
    if n_variants < 1:
        # Pretraining's second view is a random-style drawing: without one it would pair the plain drawing with itself.
        raise ValueError(f"n_variants must be >= 1 (random-style drawings per molecule, the second view of "
                         f"pretraining), got {n_variants}")
    # Checked here: inside the drawing, a bad seed or size fails every molecule, which reads as "could not be drawn".
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise ValueError(f"size must be a positive number of pixels, got {size!r}")
    if shard_size < 1 or row_group_size < 1:
        raise ValueError(f"shard_size and row_group_size must be >= 1, got {shard_size} and {row_group_size}")
    processor = MoleCLIPImageProcessor(size=int(size)) if processor is None else processor
    if processor.size["height"] != size:
        raise ValueError(f"the processor draws {processor.size['height']} px pictures, the store is of {size} px")
    smiles = [str(s) for s in smiles]
    if not smiles:
        raise ValueError("no molecules to pre-render")
    rows = np.arange(len(smiles), dtype=np.int64) if rows is None else np.asarray(rows, dtype=np.int64)
    if len(rows) != len(smiles):
        raise ValueError(f"{len(rows)} rows for {len(smiles)} molecules")
    # Row groups never straddle shards, so slot -> (shard, row group) stays arithmetic.
    row_group_size = min(row_group_size, shard_size)
    shard_size -= shard_size % row_group_size
    plan = {"format": PRERENDER_FORMAT, "n_molecules": len(smiles), "size": int(size), "n_variants": int(n_variants),
            "seed": int(seed), "shard_size": shard_size, "row_group_size": row_group_size,
            "drawing": processor.drawing_settings(),
            "smiles_sha1": smiles_digest(smiles), "rows_sha1": hashlib.sha1(rows.tobytes()).hexdigest()}
    if output_dir.exists():
        if not output_dir.is_dir():
            raise FileExistsError(f"{output_dir} is a file; a store is a folder: choose another name")
        is_store = any((output_dir / name).is_file() for name in (MANIFEST, PLAN, "meta.json"))
        if not is_store and any(output_dir.iterdir()):
            # checked before `overwrite`: replacing a store must never delete a folder of other files named by mistake
            raise FileExistsError(f"{output_dir} exists and is not a pre-rendered store; choose another folder")
        if overwrite:
            shutil.rmtree(output_dir)
        elif (output_dir / MANIFEST).is_file() or (output_dir / "meta.json").is_file():
            raise FileExistsError(f"{output_dir} exists; pass overwrite=True (--overwrite) to replace it")
        elif (output_dir / PLAN).is_file():
            begun = json.loads((output_dir / PLAN).read_text())
            changed = sorted(k for k in plan if begun.get(k) != plan[k])
            if changed:
                raise ValueError(f"{output_dir} is an unfinished store begun with other settings ({', '.join(changed)});"
                                 " pass overwrite=True (--overwrite) to start over")
    (output_dir / DATA).mkdir(parents=True, exist_ok=True)
    _write_json(output_dir / PLAN, plan)
    for stale in (output_dir / DATA).glob(f"*{PARTIAL}"):  # left by a killed run
        stale.unlink()

    n_shards = -(-len(smiles) // shard_size)
    entries, todo = [None] * n_shards, []
    for shard in range(n_shards):
        lo = shard * shard_size
        name = shard_file(shard, n_shards)
        expected = {"file": name, "first_slot": lo, "molecules": min(shard_size, len(smiles) - lo)}
        entries[shard] = _finished_shard(output_dir / name, expected)
        if entries[shard] is None:
            todo.append((str(output_dir), name, lo, smiles[lo : lo + shard_size], rows[lo : lo + shard_size].tolist(),
                         processor, int(n_variants), int(seed), row_group_size))
    done = sum(e["molecules"] for e in entries if e is not None)
    bar = tqdm(total=len(smiles), initial=done, desc="pre-rendering", unit="mol", disable=not progress, dynamic_ncols=True)
    n_jobs = max(1, min(n_jobs or available_cores(), len(todo)))
    if n_jobs > 1:
        context = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
        pool = context.Pool(n_jobs)
        results = pool.imap_unordered(_write_shard, todo)  # each worker writes its own shards
    else:
        pool, results = None, map(_write_shard, todo)
    try:
        for entry in results:
            entries[entry["first_slot"] // shard_size] = entry
            bar.update(entry["molecules"])
    finally:
        if pool is not None:
            pool.terminate()
        bar.close()
    if sum(e["failed"] for e in entries) == len(smiles):
        # not bad molecules but a drawing that does not work here, or a file of something else than SMILES: a
        # finished store of null pictures would only make pretraining draw every molecule itself
        raise RuntimeError(f"none of the {len(smiles)} molecules could be drawn, so {output_dir} is left unfinished: "
                           "check the SMILES and that drawing works here (`moleclip render CCO --output x.png`), "
                           "then run again with --overwrite")
    (output_dir / "README.md").write_text(_card(plan), encoding="utf-8")
    manifest = dict(plan, shards=entries, failed=sum(e["failed"] for e in entries),
                    bytes=sum(e["bytes"] for e in entries), files=n_shards + 2)
    _write_json(output_dir / MANIFEST, manifest)  # last: from here on the store reads as finished
    (output_dir / PLAN).unlink()
    return PrerenderedImages(output_dir)

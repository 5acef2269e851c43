"""Screening at scale: embed or predict a file of any size in constant memory, resumably, over several processes.

`moleclip embed` and `moleclip predict` run here. The input is read in chunks (`processing.tables.
iter_molecule_table`); each chunk goes to the command's `compute`, which runs the model through the engine
(`training/inference/engine.py`: drawing in DataLoader worker processes, the forward on the device); each chunk's output (every input column
as written, the output columns, the skipped reason) is written at once, atomically, as one Parquet shard
`<output>.parts/part-000123.parquet`. A manifest beside the shards records the arguments, the input file (size,
modification time) and the chunk size, so a run started again with the same arguments keeps the finished shards and
computes only the rest; with other arguments or a changed input it is refused (`--overwrite` starts over). At the end
the main process assembles the single output file in input order (CSV/TSV/Parquet, or an embedding matrix .npy),
atomically, and removes the shards (unless asked to keep them).

Under `accelerate launch` (WORLD_SIZE > 1) process r of w computes the chunks k with k mod w == r; every process
reads the whole input (reading is cheap next to drawing) so chunk numbers agree without any exchange.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import itertools
import json
import os
import re
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from accelerate import PartialState
from accelerate.utils import parse_flag_from_env
from numpy.lib.format import open_memmap
from tqdm.auto import tqdm

from moleclip.processing.cores import available_cores
from moleclip.processing.molecules import SkippedMolecule, list_skipped
from moleclip.processing.splits import canonical_smiles
from moleclip.processing.tables import iter_molecule_table
from moleclip.training.inference.devices import process_rank
from moleclip.training.outputs import (
    SKIPPED_COLUMN,
    STANDARDIZED_COLUMN,
    check_writable,
    hold_output_file,
    mark_skipped,
    mark_standardized,
    refuse_column_clash,
    text_as_numbers,
    typed_text_columns,
    write_atomically,
    write_delimited,
    write_text_atomically,
)

__all__ = ["ScreenSummary", "default_workers", "hold_output", "parts_folder", "screen", "skipped_message"]

LINE_COLUMN = "__moleclip_line"  # each row's input line, kept in the shards only (the final report names lines)
MANIFEST = "manifest.json"
FORMAT = 1

# Called with the chunk number after each shard this process computed and wrote; tests use it to stop a run midway
# and to count the chunks computed.
_after_chunk: Callable[[int], None] | None = None


def default_workers() -> int:
    """Drawing processes: the free cores (one is left for the main process, which feeds the model)."""
    return max(available_cores() - 1, 0)


def parts_folder(output: str | os.PathLike) -> Path:
    return Path(f"{os.fspath(output)}.parts")


@contextlib.contextmanager
def hold_output(output: str | os.PathLike) -> Iterator[None]:
    """Hold the output file while it is computed: in the main process only (the other processes of a launch write
    only their own shards, and would otherwise be refused by the main process's lock)."""
    with hold_output_file(output) if process_rank()[0] == 0 else contextlib.nullcontext():
        yield


# ---------------------------------------------------------------------------------------------- the run
@dataclass
class ScreenSummary:
    """What a run did: rows and chunks, how many chunks this process computed, how many an earlier run had finished
    (kept; counted by the main process before the launch's processes start: the other processes' chunks are neither
    computed here nor kept), the skipped count and the first few skipped (their `index` is the file line), and output
    rows written, and how many of those repeat an earlier row's molecule."""

    rows: int = 0
    chunks: int = 0
    computed: int = 0
    kept: int = 0
    skipped: int = 0
    examples: list = field(default_factory=list)
    written: int = 0
    repeated: int = 0  # usable rows whose molecule (canonical SMILES) an earlier row already holds
    smiles_column: str = ""


def _input_record(path: Path) -> dict:
    stat = path.stat()
    return {"path": str(path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _prepare_parts(parts: Path, manifest: dict, overwrite: bool) -> None:
    """Start the shard folder, or check that the one there belongs to this run (same arguments, same input)."""
    if parts.exists() and overwrite:
        shutil.rmtree(parts)
    if parts.exists():
        try:
            old = json.loads((parts / MANIFEST).read_text())
        except (OSError, ValueError):
            raise ValueError(f"{parts} is in the way and holds no readable {MANIFEST}: remove it, or pass --overwrite "
                             "to start over") from None
        changed = [key for key in ("format", "arguments", "input", "chunk_rows") if old.get(key) != manifest[key]]
        if changed:
            what = ", ".join({"arguments": "the arguments", "input": "the input file", "chunk_rows": "the chunk size",
                              "format": "the shard format"}[k] for k in changed)
            raise ValueError(f"{parts} holds an unfinished run with other settings ({what} changed): run it again as "
                             "it was started to resume, or pass --overwrite to start over")
        return
    parts.mkdir(parents=True)
    write_text_atomically(parts / MANIFEST, json.dumps(manifest, indent=1, sort_keys=True))


def _part(parts: Path, k: int) -> Path:
    return parts / f"part-{k:06d}.parquet"


def _write_part(path: Path, frame: pd.DataFrame) -> None:
    table = pa.Table.from_pandas(frame, preserve_index=False)
    write_atomically(path, lambda tmp: pq.write_table(table, tmp))


def _chunk_frame(chunk, columns: dict, skipped: list, standardized: list | None) -> pd.DataFrame:
    """The shard of one chunk: the input columns as read, the outputs, the reason column, the standardised SMILES
    (when standardising) and the input lines."""
    frame = chunk.frame.reset_index(drop=True)
    written = [*columns, SKIPPED_COLUMN, LINE_COLUMN, *([STANDARDIZED_COLUMN] if standardized is not None else [])]
    # an input column would be overwritten (the reason column) or doubled (emb_0...): refused, not lost
    refuse_column_clash(frame.columns, written, "the output writes (the output of an earlier run holds them, say)")
    frame = pd.concat([frame, pd.DataFrame({k: list(v) if getattr(v, "dtype", None) == object else v
                                            for k, v in columns.items()})], axis=1)
    mark_skipped(frame, skipped)
    mark_standardized(frame, standardized)
    frame[LINE_COLUMN] = chunk.line_numbers
    return frame


def screen(input: str | os.PathLike, output: str | os.PathLike, compute, arguments: dict, *,
           smiles_column: str | None = None, chunk_rows: int = 5000, overwrite: bool = False, keep_parts: bool = False,
           metadata: dict[bytes, bytes] | None = None, progress: bool = True, rank: int | None = None,
           world: int | None = None, sync: Callable[[], None] | None = None, first_chunk=None) -> ScreenSummary:
    """Run `compute` over `input` chunk by chunk into shards, then (main process) assemble `output`.

    `compute(chunk)` takes a `MoleculeTable` chunk and returns (output columns: name -> one value per row, skipped
    entries with chunk positions, the standardised SMILES of its rows or None when molecules are taken as written). `arguments` are what decides the results (the manifest compares them on resume).
    `first_chunk(chunk)` is called once with the first chunk read (e.g. to warn about its molecules). `metadata`
    goes into a Parquet output's schema. `rank`/`world`/`sync` default to the launch's (`process_rank`, accelerate's
    wait_for_everyone).
    """
    if chunk_rows < 1:
        raise ValueError(f"--chunk-size must be >= 1, got {chunk_rows}")
    input, output = Path(input).expanduser(), Path(output)
    if not input.is_file():
        raise (IsADirectoryError(f"expected a file of molecules, got a folder: {input}") if input.is_dir()
               else FileNotFoundError(f"file not found: {input}"))
    if rank is None or world is None:
        rank, world = process_rank()
    if sync is None:
        sync = _sync(world)
    parts = parts_folder(output)
    manifest = {"format": FORMAT, "arguments": arguments, "input": _input_record(input), "chunk_rows": int(chunk_rows)}
    # The first chunk is read before anything is written, so a wrong column or a malformed header fails cleanly.
    chunks = iter_molecule_table(input, smiles_column, chunk_rows)
    first = next(chunks, None)
    if first is None:
        raise ValueError(f"{input} holds no molecules")
    if first_chunk is not None:
        first_chunk(first)
    summary = ScreenSummary()
    if rank == 0:
        check_writable(parts / MANIFEST, "the shard folder")
        _prepare_parts(parts, manifest, overwrite)
        summary.kept = sum(1 for _ in parts.glob("part-*.parquet"))  # the others wait at the barrier: none is new
    sync()
    try:
        with tqdm(unit="mol", desc="screening", disable=not progress or rank != 0) as bar:
            for k, chunk in enumerate(itertools.chain([first], chunks)):
                summary.chunks, summary.rows = k + 1, summary.rows + len(chunk)
                summary.smiles_column = chunk.smiles_column
                path = _part(parts, k)
                if k % world == rank and not path.exists():
                    _write_part(path, _chunk_frame(chunk, *compute(chunk)))
                    summary.computed += 1
                    if _after_chunk is not None:
                        _after_chunk(k)
                bar.update(len(chunk))
    except BaseException:
        # A run that fails before its first shard (an input column in the way, a model that does not run here) has
        # nothing to resume: its manifest alone would only refuse the corrected run ("the input file changed").
        if rank == 0 and parts.is_dir() and not any(parts.glob("part-*.parquet")):
            shutil.rmtree(parts, ignore_errors=True)
        raise
    sync()
    if rank != 0:
        return summary
    missing = [k for k in range(summary.chunks) if not _part(parts, k).exists()]
    if missing:
        raise OSError(f"{parts}: the shards of chunks {missing[:5]} are missing (a process of the launch failed?); "
                      "run the command again to compute them")
    try:
        _assemble([_part(parts, k) for k in range(summary.chunks)], output, summary, metadata, list(first.frame.columns))
    except _NothingUsable:
        shutil.rmtree(parts)  # nothing worth resuming: every run would end the same
        raise ValueError(f"none of the {summary.rows} molecules in {input} could be used; nothing written") from None
    if not keep_parts:
        shutil.rmtree(parts)
    return summary


def skipped_message(summary: ScreenSummary, what: str = "their output cells are left empty") -> str:
    """The warning about the molecules that could not be used, by their line in the input file (as
    cli/_common.report_skipped words it for a table read whole)."""
    more = summary.skipped - len(summary.examples)
    return (f"{summary.skipped} of {summary.rows} molecules could not be used: "
            f"{list_skipped(summary.examples, line_of=int)}{f' and {more} more' if more > 0 else ''}; {what} and the "
            f"reason is in the {SKIPPED_COLUMN} column")


def _sync(world: int) -> Callable[[], None]:
    """The launch's barrier. `PartialState()` alone reports a plain single process on a machine without CUDA (it
    reads ACCELERATE_USE_CPU only when told `cpu=True`), and its barrier then waits for nobody: the main process would
    assemble before the others had written their shards. So CPU launches ask for the CPU state explicitly, and a state
    that does not see the launch's processes is an error, never a barrier that does not wait."""
    if world == 1:
        return lambda: None
    state = PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU") or not torch.cuda.is_available())
    if state.num_processes != world:
        raise RuntimeError(f"the launch has {world} processes but accelerate sees {state.num_processes} "
                           f"({state.distributed_type}): the processes could not wait for each other")
    return state.wait_for_everyone


# ---------------------------------------------------------------------------------------------- assembly
class _NothingUsable(Exception):
    pass


def _assemble(paths: list[Path], output: Path, summary: ScreenSummary, metadata: dict | None,
              inputs: list) -> None:
    """Put the shards together, in input order, into `output` (atomically), one shard in memory at a time; count
    and sample the skipped rows for the report. `inputs`: the input's columns (a .npy holds the others' emb_i)."""
    structures = []
    for path in paths:
        table = pq.read_table(path, columns=[summary.smiles_column, SKIPPED_COLUMN, LINE_COLUMN]).to_pandas()
        usable = table[SKIPPED_COLUMN] == ""
        bad = table[~usable]
        summary.skipped += len(bad)
        summary.examples += [SkippedMolecule(int(line), smiles, reason) for smiles, reason, line
                             in bad.head(max(0, 5 - len(summary.examples))).itertuples(index=False)]
        summary.written += len(table) - len(bad)
        structures.append(_structure_keys(table.loc[usable, summary.smiles_column].tolist()))
    if not summary.written:
        raise _NothingUsable()
    keys = np.concatenate(structures)
    summary.repeated = int(len(keys) - len(np.unique(keys)))
    name = output.name.lower()
    if name.endswith(".npy"):
        _assemble_npy(paths, output, summary.written, inputs)
    elif name.endswith(".parquet"):
        numbers = _numeric_inputs(paths, [c for c in inputs if c != summary.smiles_column])
        write_atomically(output, lambda tmp: _write_parquet(paths, tmp, metadata, numbers))
    else:
        tab = name.endswith((".tsv", ".tsv.gz"))  # by the suffix: zinc.tsv_emb.csv is a CSV
        write_atomically(output, lambda tmp: _write_delimited(paths, tmp, "\t" if tab else ","))


def _structure_keys(smiles: list[str]) -> np.ndarray:
    """A 64-bit hash of each molecule's canonical SMILES: 8 bytes a row, so that repeats can be counted over a file
    of any size (two different molecules share a hash with odds of about n^2 / 2^65)."""
    return np.array([int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little")
                     for key in canonical_smiles(smiles)], dtype=np.uint64)


def _shard_frames(paths: list[Path]) -> Iterator[pd.DataFrame]:
    for path in paths:
        yield pq.read_table(path).to_pandas().drop(columns=[LINE_COLUMN])


def _output_schema(paths: list[Path]):
    """The output's columns, in order, with their types: every shard's, unified. `compute` should give every chunk
    the same columns (`Predictor.predict` does, also for a chunk with no usable molecule); should one give fewer, the
    order is that of the shard with the most columns and every shard is filled to it, never written as it came (a
    short shard's cells would go under other columns' headers). A column typed differently in two shards (all-missing in one:
    null; True/False in another) takes the type that holds both."""
    schemas = [pq.read_schema(path) for path in paths]
    widest = max(schemas, key=lambda schema: len(schema.names))
    schema = pa.unify_schemas([widest, *schemas], promote_options="permissive").remove_metadata()
    return schema.remove(schema.get_field_index(LINE_COLUMN)), schemas[0].metadata or {}


def _write_delimited(paths: list[Path], tmp: Path, sep: str) -> None:
    names = _output_schema(paths)[0].names
    # newline="": pandas writes "\n" itself, as to_csv to a path does, so the file is the one write_table writes
    opener = gzip.open if tmp.name.lower().endswith(".gz") else open
    with opener(tmp, "wt", encoding="utf-8", newline="") as handle:
        for i, frame in enumerate(_shard_frames(paths)):
            write_delimited(frame.reindex(columns=names), handle, sep=sep, header=i == 0)


def _numeric_inputs(paths: list[Path], inputs: list) -> dict[str, str]:
    """The input's text columns (a CSV's are all text) whose every cell, in every shard, is a number as written
    (`outputs.typed_text_columns`): a Parquet output stores them as numbers, the type they have."""
    schema = pq.read_schema(paths[0])
    text = [name for name in inputs if name in schema.names
            and (pa.types.is_string(schema.field(name).type) or pa.types.is_large_string(schema.field(name).type))]
    if not text:
        return {}
    return typed_text_columns(pq.read_table(path, columns=text).to_pydict() for path in paths)


def _write_parquet(paths: list[Path], tmp: Path, metadata: dict | None, numbers: dict[str, str]) -> None:
    """The shards as one Parquet file; `numbers` ({column: kind}, from :func:`_numeric_inputs`) are stored as
    numbers."""
    schema, first = _output_schema(paths)
    for name, kind in numbers.items():
        number = pa.float64() if kind == "float" else pa.int64()
        schema = schema.set(schema.get_field_index(name), pa.field(name, number))
    kept = {k: v for k, v in first.items() if k != b"pandas"}
    pandas_record = _pandas_record(paths, schema, numbers)
    if pandas_record is not None:
        kept[b"pandas"] = pandas_record
    schema = schema.with_metadata({**kept, **(metadata or {})})
    with pq.ParquetWriter(tmp, schema) as writer:
        for path in paths:
            table = pq.read_table(path).drop_columns([LINE_COLUMN])
            for name, kind in numbers.items():
                values = pa.array(text_as_numbers(table[name].to_pylist(), kind), from_pandas=True)
                table = table.set_column(table.schema.get_field_index(name), name, values)
            for column in schema:
                if column.name not in table.column_names:
                    table = table.append_column(column, pa.nulls(len(table), column.type))
            writer.write_table(table.select(schema.names).cast(schema))


def _pandas_record(paths: list[Path], schema, numbers: dict[str, str] | None = None) -> bytes | None:
    """pandas' record of the output's columns (what makes an input's nullable Int64 IDs read back as Int64, not as
    floats), put together from the shards' records: each column's from a shard in which it is not all missing (that
    shard knows its type), no index (the rows are numbered afresh), never the line column; a text column stored as
    numbers (`numbers`: {column: "float", "int64" or "Int64"}) recorded as such. None when no shard has one."""
    records, found = [], {}
    for path in paths:
        shard = pq.read_schema(path)
        raw = (shard.metadata or {}).get(b"pandas")
        if raw is None:
            continue
        record = json.loads(raw)
        records.append(record)
        for entry in record.get("columns", []):
            name = entry.get("name")
            if name not in schema.names:
                continue
            typed = shard.field(name).type != pa.null()
            if name not in found or (typed and not found[name][1]):
                found[name] = (entry, typed)
    if not records:
        return None
    for name, kind in (numbers or {}).items():
        if name in found:
            found[name] = (dict(found[name][0], pandas_type="float64" if kind == "float" else "int64",
                                numpy_type="float64" if kind == "float" else kind), True)
    record = dict(records[0], index_columns=[], columns=[found[n][0] for n in schema.names if n in found])
    return json.dumps(record).encode()


def _assemble_npy(paths: list[Path], output: Path, kept: int, inputs: list) -> None:
    """The embedding matrix of the molecules that could be drawn, and their input rows (`<name>.rows.npy`): the
    emb_i columns the run added, never an input column that happens to be named emb_something."""
    def matrix(tmp):
        out, rows, at, offset = None, np.zeros(kept, dtype=np.int64), 0, 0
        for frame in _shard_frames(paths):
            good = (frame[SKIPPED_COLUMN] == "").to_numpy()
            columns = [c for c in frame.columns if c not in inputs and re.fullmatch(r"emb_\d+", str(c))]
            if out is None:
                out = open_memmap(tmp, mode="w+", dtype=np.float32, shape=(kept, len(columns)))
            n = int(good.sum())
            out[at:at + n] = frame.loc[good, columns].to_numpy(np.float32)
            rows[at:at + n] = offset + np.flatnonzero(good)
            at, offset = at + n, offset + len(frame)
        out.flush()
        del out
        write_atomically(output.with_suffix(".rows.npy"), lambda t: np.save(t, rows))

    write_atomically(output, matrix)

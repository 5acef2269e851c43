"""Writing the files the package hands to a user: checked first, written whole or not at all.

* :func:`check_writable` runs before any work: a read-only or impossible output path fails at once, not after an hour,
  and an output that is the command's own input file is refused instead of replacing it.
* :func:`write_atomically` writes to a temporary name in the same folder and renames it into place only when the
  writer has finished: a crash or a full disk leaves the previous good file intact and never a truncated file that
  reads cleanly.
* :func:`check_run_folder` and :func:`hold_run_folder`: one run per folder. A folder holding another run's results is
  refused unless the user says `--overwrite` (its old results are then removed, so no stale file sits beside new
  ones) or resumes it; while a run writes, a lock file keeps a second process out.
* :func:`write_delimited` holds the one rule for the numbers of every CSV/TSV the package writes,
  :func:`typed_text_columns` the one for a user's text columns in a Parquet output, and :func:`json_text` the one for
  results and metrics files.
"""

from __future__ import annotations

import contextlib
import glob
import json
import math
import os
import re
import shutil
import socket
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from moleclip.processing.standardize import standardize_smiles

__all__ = ["check_writable", "refuse_output_onto_input", "write_atomically", "write_text_atomically", "check_run_folder", "hold_run_folder",
           "hold_output_file", "FolderInUseError", "SKIPPED_COLUMN", "STANDARDIZED_COLUMN", "mark_skipped",
           "mark_standardized", "standardized_column", "embedding_columns", "refuse_column_clash", "write_delimited",
           "table_cells", "typed_text_columns", "json_text"]

LOCK_FILE = ".moleclip.lock"

# Columns the package adds to a user's table (embed, predict, explain, the app keep every input row, in order): why a
# row's outputs are empty, and the molecule a row was standardised to (only when standardisation is on).
SKIPPED_COLUMN = "moleclip_skipped"
STANDARDIZED_COLUMN = "moleclip_standardized_smiles"


def mark_skipped(frame, skipped) -> None:
    """Add the reason column: empty for rows with outputs, the reason for the others (`skipped`: SkippedMolecule-like
    entries whose `index` is the row)."""
    reasons = [""] * len(frame)
    for s in skipped:
        reasons[s.index] = s.reason
    frame[SKIPPED_COLUMN] = reasons


def embedding_columns(embeddings) -> dict:
    """An embedding matrix [n, d] as the table columns `emb_0..emb_<d-1>` that embed writes and index reads."""
    return {f"emb_{i}": embeddings[:, i] for i in range(embeddings.shape[1])}


def standardized_column(smiles, method: str) -> list | None:
    """The standardised SMILES of each entry (empty where standardisation failed), or None for `method` "none"."""
    if method == "none":
        return None
    result = standardize_smiles(smiles, method)
    failed = {s.index for s in result.skipped}
    return ["" if i in failed else value for i, value in enumerate(result.smiles)]


def mark_standardized(frame, column: list | None) -> None:
    """Add the standardised SMILES column (from :func:`standardized_column`) so a user sees which molecule each output
    belongs to; nothing when molecules were not standardised (None)."""
    if column is not None:
        frame[STANDARDIZED_COLUMN] = column


def refuse_column_clash(columns, written, writes: str, where: str = "the input") -> None:
    """Refuse, before any work, input `columns` that an output keeping them beside its own (`written`) would overwrite
    or hold twice. `writes` completes "which ...", e.g. "the output writes"."""
    clash = sorted(set(map(str, columns)) & set(map(str, written)))
    if clash:
        raise ValueError(f"{where} has column(s) {', '.join(clash)}, which {writes}: rename them")


# ------------------------------------------------------------------------------------------ numbers in tables
def table_cells(frame):
    """`frame` as a CSV or TSV shows it, the rule every table the package writes follows. A float32 column holds what
    a model computed, and is written with the shortest text that reads back as the same float32 (-1.9776635, never the
    17 digits of its float64 widening, which float32 does not carry). A float64 column (a user's measured value, read
    from their text) is written as pandas writes it, the shortest text that reads back as the same float64 (-2.48 as
    written). Missing values are empty cells. So the dtype of a column says how many digits it carries: producers
    keep model outputs in float32 and users' values in float64 (or as the text they were written in)."""
    floats = [i for i, dtype in enumerate(frame.dtypes) if dtype == np.float32]
    if not floats:
        return frame
    frame = frame.copy(deep=False)
    for i in floats:
        values = frame.iloc[:, i].to_numpy()
        text = values.astype(str).astype(object)  # numpy's float32 repr: the shortest text that round-trips
        text[np.isnan(values)] = ""
        frame.isetitem(i, text)
    return frame


def write_delimited(frame, target, sep: str = ",", header: bool = True) -> None:
    """Write `frame` as CSV (TSV with `sep="\t"`) to a path or an open text handle, its numbers by
    :func:`table_cells`; no index column."""
    table_cells(frame).to_csv(target, index=False, sep=sep, header=header)


# A user's cell that is a number as written: an integer without leading zeros (an ID 0001 is text), or a decimal.
_INTEGER_TEXT = re.compile(r"[+-]?(?:0|[1-9][0-9]{0,17})")
_DECIMAL_TEXT = re.compile(r"[+-]?(?:(?:0|[1-9][0-9]*)(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


def _text_kind(values) -> tuple[str, bool]:
    """("integer", "float", "text" or "empty" when no cell is written, whether a cell is empty) for a column of text
    cells."""
    cells = pd.Series(values, dtype=object)
    if not cells.map(lambda v: isinstance(v, str) or pd.isna(v)).all():
        return "text", False
    written = cells[cells.notna() & (cells != "")].astype(str)
    empty = len(written) < len(cells)
    if written.empty:
        return "empty", empty
    if written.str.fullmatch(_INTEGER_TEXT.pattern).all():
        return "integer", empty
    return ("float" if written.str.fullmatch(_DECIMAL_TEXT.pattern).all() else "text"), empty


def typed_text_columns(chunks) -> dict[str, str]:
    """{column: "float", "int64" or "Int64" (integers with empty cells)} for the text columns whose every written
    cell, over all `chunks` (mappings of column -> cells, e.g. the shards of a chunked run), is a number as written: a
    Parquet output keeps a numeric input column a number (a CSV holds only text) while an ID `0001`, a column holding
    `abc` or one of empty cells stays text."""
    rank = {"empty": 0, "integer": 1, "float": 2, "text": 3}
    kinds: dict[str, str] = {}
    gaps: dict[str, bool] = {}
    for chunk in chunks:
        for name, values in chunk.items():
            kind, empty = _text_kind(values)
            kinds[name] = max(kind, kinds.get(name, "empty"), key=rank.get)
            gaps[name] = gaps.get(name, False) or empty
    return {name: "float" if kind == "float" else "Int64" if gaps[name] else "int64"
            for name, kind in kinds.items() if kind in ("integer", "float")}


def text_as_numbers(values, kind: str):
    """Cells of a column :func:`typed_text_columns` found numeric, as numbers of its `kind`: float64 (NaN where
    empty) or integers (pandas' nullable Int64)."""
    cells = pd.Series(values, dtype=object)
    cells = cells.where(cells.notna() & (cells != ""), None)
    if kind == "float":
        return pd.to_numeric(cells, errors="raise").astype(np.float64)
    return pd.array([None if v is None else int(v) for v in cells], dtype="Int64")


# ---------------------------------------------------------------------------------------------- JSON files
def _strict(obj):
    if isinstance(obj, Mapping):
        return {str(k): _strict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_strict(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _strict(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def json_text(obj, indent: int | None = 2) -> str:
    """`obj` as strict JSON, the way the package writes results and metrics: a number that is not finite (a metric
    undefined on a part, an unbounded interval's width) becomes null, since `NaN` and `Infinity` are not JSON and strict
    parsers refuse the file; numpy values become plain ones. A NaN that reaches json.dumps any other way fails loudly
    (allow_nan=False) instead of being written."""
    return json.dumps(_strict(obj), indent=indent, allow_nan=False)


class FolderInUseError(OSError):
    """Another live process is writing this folder."""


def refuse_output_onto_input(path: str | os.PathLike, option: str = "--output",
                             inputs: Mapping[str, str | os.PathLike | None] | None = None) -> None:
    """Refuse an output that is one of the files the command reads (`inputs`: {option: path}): by another spelling
    (relative, through a symlink) or a hard link, writing it would replace the user's input with the results."""
    output = Path(path).expanduser()
    for input_option, value in (inputs or {}).items():
        if value is None or not str(value):
            continue
        source = Path(value).expanduser()
        same = source.resolve() == output.resolve()
        if not same and source.exists() and output.exists():
            same = os.path.samefile(source, output)  # a hard link: two names, one file
        if same:
            raise ValueError(f"{option} {path} is the same file as {input_option} {value}: writing it would replace "
                             "the input; choose another output file")


def check_writable(path: str | os.PathLike, option: str = "--output",
                   inputs: Mapping[str, str | os.PathLike | None] | None = None) -> Path:
    """Refuse an output path that cannot be written: an existing folder in its place, a folder (the nearest one that
    exists) this process may not write in, or one of the command's `inputs` ({option: path}, see
    :func:`refuse_output_onto_input`)."""
    refuse_output_onto_input(path, option, inputs)
    path = Path(path).expanduser()
    if path.is_dir():
        raise ValueError(f"{option} {path}: a folder is in the way; give a file name")
    if path.exists() and not os.access(path, os.W_OK):
        raise PermissionError(f"{option} {path}: the file exists and cannot be overwritten (permission denied)")
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():  # e.g. --output-dir results.csv: a file where a folder is needed
        raise NotADirectoryError(f"{option} {path}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise PermissionError(f"{option} {path}: cannot write in {parent} (permission denied or read-only)")
    return path


def _flush_to_disk(path: Path) -> None:
    """The file's bytes on the disk before it is renamed into place: after a power cut, a rename can otherwise survive
    while the data does not, leaving an empty file where the previous one was whole."""
    if path.is_file():  # a writer may write a folder (a faiss index is one file; some writers make folders)
        with open(path, "rb") as handle:
            os.fsync(handle.fileno())


def write_atomically(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call `write(temporary_path)`, then rename the temporary file to `path`; on any failure remove it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_dead_writers_files(path)
    # ends in the target's suffix, so writers that choose a format by the name (pandas' .gz, numpy's .npy) still do
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}{path.suffix}")
    try:
        write(tmp)
        _flush_to_disk(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def _remove_dead_writers_files(path: Path) -> None:
    """Remove the temporary files of `path` that a killed process left (a kill skips write_atomically's clean-up):
    hidden, possibly as large as the output, and found by nothing else, they would stay beside it for good."""
    prefix = f".{path.name}.tmp-"
    for old in path.parent.glob(glob.escape(prefix) + "*"):
        pid = old.name[len(prefix):]
        pid = pid[:len(pid) - len(path.suffix)] if path.suffix and pid.endswith(path.suffix) else pid
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)) and old.is_file():
            try:
                old.unlink(missing_ok=True)
            except OSError:  # another user's, a read-only folder: a tidy-up, never a reason for the write to fail
                pass


def write_text_atomically(path: str | os.PathLike, text: str) -> Path:
    return write_atomically(path, lambda tmp: tmp.write_text(text))


def check_run_folder(folder: str | os.PathLike, outputs: Sequence[str], overwrite: bool = False,
                     resumable: bool = False, inputs: Mapping[str, str | os.PathLike | None] | None = None) -> None:
    """Refuse a folder that holds another run's `outputs` (names inside it) unless `overwrite` is set; say how to
    resume when the run can be resumed. Cheap: call it before any work.

    `inputs` ({option: path}) are what the run reads: with `overwrite`, one that is (or is inside) an output the
    overwrite removes is refused. The refusal above tells a user to pass --overwrite, and a user's molecules.csv in
    the folder an explain run writes its molecules.csv to would otherwise be read, then deleted and replaced."""
    folder = Path(folder)
    found = [name for name in outputs if (folder / name).exists()]
    if found and not overwrite:
        how = "pass --overwrite to replace it" + (", or --resume latest to continue it" if resumable else "")
        raise FileExistsError(f"{folder} holds another run ({', '.join(found)}): {how}, or choose another folder")
    if found and inputs:
        removed = [(folder / name).expanduser().resolve() for name in found]
        for option, value in inputs.items():
            if value is None or not str(value):
                continue
            path = Path(value).expanduser().resolve()
            if any(path == old or old in path.parents for old in removed):
                raise ValueError(f"{option} {value} is one of the earlier outputs in {folder}, so it is inside what "
                                 "--overwrite removes: copy it out of the folder first, or write to another folder")
    check_writable(folder / LOCK_FILE, "the output folder")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, under another user
        return True
    return True


def _me() -> tuple[int, str]:
    """What a lock file of this process holds: its pid and the machine's name (a run folder on a file system that
    several machines share can be held by a process elsewhere, whose pid means nothing here)."""
    return os.getpid(), socket.gethostname()


def _holder(lock: Path) -> tuple[int, str]:
    """(pid, host) written in a lock file; (0, "") when none is readable, host "" for a lock written before locks
    named their machine (taken as this one's)."""
    try:
        fields = lock.read_text().split()
        return (int(fields[0]), fields[1] if len(fields) > 1 else "") if fields else (0, "")
    except (OSError, ValueError):
        return 0, ""


def _held_by_someone_else(holder: tuple[int, str]) -> bool:
    pid, host = holder
    if not pid or holder == _me() or (pid == os.getpid() and not host):
        return False
    if host and host != socket.gethostname():
        return True  # a process on another machine: its liveness cannot be checked from here
    return _alive(pid)


@contextlib.contextmanager
def _guarded(folder: Path) -> Iterator[None]:
    """While inside, no other process of this package takes or lets go of a lock in `folder` (an advisory lock on
    the folder itself, which the system drops with a process that dies). Without it two processes that find the same
    dead process's lock could both take it over (the second deleting the lock the first had just written), and a
    lock read between its creation and its pid being written looked dead. Where the folder cannot be locked (no
    fcntl, some network file systems) the lock file alone decides, as before."""
    try:
        # POSIX only: Windows has no fcntl
        import fcntl

        handle = os.open(folder, os.O_RDONLY)
    except (ImportError, OSError):
        yield
        return
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX)
        except OSError:
            pass
        yield
    finally:
        os.close(handle)  # releases the flock


@contextlib.contextmanager
def _lock(lock: Path, what: str) -> Iterator[None]:
    """Hold `lock` (a file with this process's pid and machine; the lock of a process here that died is taken over)
    while inside."""
    with _guarded(lock.parent):
        for _ in range(2):
            try:
                handle = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = _holder(lock)
                if _held_by_someone_else(holder):
                    pid, host = holder
                    where = f"pid {pid}" + (f" on {host}" if host and host != socket.gethostname() else "")
                    # The pid may since belong to another program (a container restarts its pids from 1), or the run
                    # on another machine may be long gone: say how to get out, not only to wait.
                    raise FolderInUseError(f"{what} is being written by another process ({where}); wait for it, or "
                                           f"choose another output. If no moleclip run is writing it, delete {lock} "
                                           "and run again") from None
                if _holder(lock) == holder:  # still the dead process's (not one another process has just taken)
                    lock.unlink(missing_ok=True)
                continue
            with os.fdopen(handle, "w") as out:
                out.write("{} {}".format(*_me()))
            break
        else:
            raise FolderInUseError(f"{what}: could not take its lock file {lock}")
    try:
        yield
    finally:
        with _guarded(lock.parent):
            if _holder(lock) == _me():  # ours: never another process's that took over meanwhile
                lock.unlink(missing_ok=True)


@contextlib.contextmanager
def hold_output_file(path: str | os.PathLike) -> Iterator[Path]:
    """Hold an output file for this process while it is computed and written: a second process writing the same file
    is refused instead of both reporting success while one result is lost."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _lock(path.with_name(f".{path.name}.lock"), str(path)):
        yield path


@contextlib.contextmanager
def hold_run_folder(folder: str | os.PathLike, clear: Sequence[str] = ()) -> Iterator[Path]:
    """Hold `folder` for this process (see `_lock`), remove the old outputs named in `clear` (the user said
    --overwrite), and let go at the end. A folder this call created and that is still empty when the run fails is
    removed again."""
    folder = Path(folder)
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    try:
        with _lock(folder / LOCK_FILE, str(folder)):
            for name in clear:
                target = folder / name
                if target.is_dir() and not target.is_symlink():
                    shutil.rmtree(target)
                else:
                    target.unlink(missing_ok=True)
            yield folder
    except BaseException:
        if created and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
        raise

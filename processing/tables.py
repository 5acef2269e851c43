"""The one reader of molecule tables: a file of SMILES (and whatever else the rows carry) in, a table out.

Every part of the package that takes a file of molecules from a user (`moleclip embed`, `predict`, `render`,
`pseudo-labels`, `prerender`, the property tables of finetuning, the pretraining input) reads it here, so the formats,
the choice of the SMILES column and the error messages are the same everywhere.

Formats, chosen by the file name (case-insensitive), each optionally gzipped (``.gz``):

- ``.smi``, ``.smiles``, ``.txt``: one molecule a line, SMILES first, then optionally whitespace and a name (the rest
  of the line, the SMILES-file convention). Blank lines are not molecules. A first line whose first field is
  ``smiles`` (any case) is a header: it names the SMILES column and, with a second field, the name column. The table
  has the SMILES column (``smiles`` unless the header spells it otherwise) and, when any line has a name or the header
  names one, a name column (``name`` by default; ``""`` for a line without a name).
- ``.csv``, ``.tsv`` / ``.tab``: a header line naming the columns, then one record a line. A quoted field may hold
  the delimiter, but not a line break: a field running over several lines is refused, naming the line where its
  quote opened, as is a quote never closed or followed by more text after it closes. A molecule table needs no
  multi-line field, and a stray quote (an ID written ``"cpd10``) would otherwise swallow every record up to the next
  quote into one cell. The delimiter is the kind's (comma, tab) unless the header holds none of it but a semicolon, tab or ``|``. Every cell is read as text, exactly as written: no conversion of ``NA``, ``null`` or ``""`` to missing
  values, no numbers (an ID ``0001`` stays ``"0001"``, a SMILES ``NA`` stays ``"NA"``). Blank lines are skipped; a
  record with fewer fields than the header is padded with ``""``, one with more is an error.
- ``.parquet``, ``.pq``: the columns keep the types they were written with (Parquet is typed already), except the
  SMILES column, which becomes text with ``""`` for a missing value.

Text is UTF-8, with or without a byte-order mark. Anything else fails with an error that names the file.

The SMILES column is ``smiles_column`` when given (exactly as spelt in the header), else the one column named
``smiles``, ``canonical_smiles``, ``smi`` or ``mol``, ignoring case and surrounding spaces; a table with several such
columns (``SMILES`` and ``smiles``, or ``smiles`` and ``canonical_smiles``) is refused, naming them, for the user to
choose one.

Nothing is validated here: a SMILES that does not parse comes back as written, so that the parsing step reports it
with its line. Each row's line in the file is kept: the header is line 1, so a one-record-a-line CSV's first data row
is line 2; blank lines are counted as they are in the file. A Parquet file has no lines: its
rows are numbered from 1.

Flat imports only (pandas, numpy, the standard library), so the module can travel with Hugging Face remote code.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import io
import itertools
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

__all__ = [
    "SMILES_COLUMN_NAMES",
    "SUPPORTED_SUFFIXES",
    "ColumnNotFoundError",
    "MoleculeTable",
    "find_smiles_column",
    "iter_molecule_table",
    "read_molecule_table",
    "table_smiles_column",
]

# Column names taken for the SMILES column when none is given, in order of preference (compared ignoring case).
SMILES_COLUMN_NAMES = ("smiles", "canonical_smiles", "smi", "mol")

_SMI_SUFFIXES = (".smi", ".smiles", ".txt")
_CSV_SUFFIXES = (".csv",)
_TSV_SUFFIXES = (".tsv", ".tab")
_PARQUET_SUFFIXES = (".parquet", ".pq")
SUPPORTED_SUFFIXES = tuple(
    s + gz for s in _SMI_SUFFIXES + _CSV_SUFFIXES + _TSV_SUFFIXES for gz in ("", ".gz")
) + _PARQUET_SUFFIXES

_DEFAULT_NAME_COLUMN = "name"


class ColumnNotFoundError(KeyError, ValueError):
    """A named column is not in the table, or no SMILES column (or several) could be recognised.

    Both a KeyError (a missing key) and a ValueError (a bad input), so either ``except`` catches it; its message reads
    plainly (a bare KeyError would print its message in quotes).
    """

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


@dataclass
class MoleculeTable:
    """A table of molecules as read from a file.

    Attributes:
        frame: every row of the file with every column (text, except Parquet's typed non-SMILES columns), with a
            0-based RangeIndex.
        smiles_column: the name of the SMILES column in ``frame``.
        line_numbers: int64 ``[len(frame)]``, the file line of each row (header = line 1; Parquet: 1-based row).
        path: the file read.
    """

    frame: pd.DataFrame
    smiles_column: str
    line_numbers: np.ndarray
    path: Path

    def __len__(self) -> int:
        return len(self.frame)

    @property
    def smiles(self) -> list[str]:
        """The SMILES of every row, as written."""
        return self.frame[self.smiles_column].tolist()

    def line(self, row: int) -> int:
        """The file line of 0-based row ``row``."""
        return int(self.line_numbers[row])


def _columns_text(columns) -> str:
    """Column names for a message; a run of three or more embedding columns (`emb_0`, `emb_1`, ... as `moleclip embed`
    writes them) as one entry, "emb_0..emb_511 (512 columns)": 512 names would bury the others."""
    names, parts, i = [str(c) for c in columns], [], 0
    while i < len(names):
        end = i
        found = re.fullmatch(r"emb_(\d+)", names[i])
        if found:
            first = int(found.group(1))
            while end + 1 < len(names) and names[end + 1] == f"emb_{first + end + 1 - i}":
                end += 1
        if end - i >= 2:
            parts.append(f"{names[i]}..{names[end]} ({end - i + 1} columns)")
        else:
            parts += [repr(name) for name in names[i:end + 1]]
        i = end + 1
    return ", ".join(parts)


def find_smiles_column(columns, smiles_column: str | None = None, source: str = "the table") -> str:
    """The SMILES column among ``columns``: ``smiles_column`` if given (it must be present, spelt exactly), else the
    one column with a recognised name (:data:`SMILES_COLUMN_NAMES`, ignoring case and surrounding spaces). Raises
    :class:`ColumnNotFoundError` when none is found, or several: which of them holds the molecules meant is the user's
    choice, not the reader's."""
    columns = list(columns)
    if smiles_column is not None:
        if smiles_column in columns:
            return smiles_column
        raise ColumnNotFoundError(
            f"column {smiles_column!r} not found in {source}; its columns are {_columns_text(columns)}"
        )
    candidates = [column for column in columns if str(column).strip().lower() in SMILES_COLUMN_NAMES]
    if len(candidates) == 1:
        return candidates[0]
    if candidates:
        raise ColumnNotFoundError(
            f"several SMILES columns in {source}: {_columns_text(candidates)}; choose one with smiles_column=... "
            "(--smiles-column on the command line)"
        )
    raise ColumnNotFoundError(
        f"no SMILES column found in {source}: looked for {', '.join(SMILES_COLUMN_NAMES)} (any case) among the "
        f"columns {_columns_text(columns)}; name it with smiles_column=... (--smiles-column on the command line)"
    )


def table_smiles_column(path: str | os.PathLike, smiles_column: str | None = None, saved: str | None = None
                        ) -> str | None:
    """The SMILES column to read the table at `path` with: `smiles_column` when given (a choice the user made always
    wins); else `saved`, the column a model was finetuned on (saved with it), when the table has a column of that name;
    else None, for the reader to recognise one by name. Only the header is read; a file it cannot read, or a
    one-SMILES-a-line file, gives None and the reader reports it."""
    if smiles_column is not None or saved is None:
        return smiles_column
    path = Path(os.fspath(path)).expanduser()
    try:
        kind = _kind(path)
        if kind == "smi" or not path.is_file():
            return None
        if kind == "parquet":
            columns = pq.read_schema(path).names
        else:
            with _reading_errors(path), _open_text(path) as handle:
                first = handle.readline()
            columns = next(csv.reader([first.rstrip("\r\n")], delimiter=_delimiter(first, kind)), [])
    except Exception:  # not readable here: the reader says why, naming the file
        return None
    return saved if saved in columns else None


def _kind(path: Path) -> str:
    name = path.name.lower()
    plain = name[:-3] if name.endswith(".gz") else name
    if name.endswith(_PARQUET_SUFFIXES):
        return "parquet"
    if plain.endswith(_SMI_SUFFIXES):
        return "smi"
    if plain.endswith(_CSV_SUFFIXES):
        return "csv"
    if plain.endswith(_TSV_SUFFIXES):
        return "tsv"
    raise ValueError(f"Unsupported file type for {path}: expected one of {', '.join(SUPPORTED_SUFFIXES)}")


def _open_text(path: Path):
    # utf-8-sig drops a byte-order mark if there is one; newline="" lets the csv module see quoted line breaks.
    if path.name.lower().endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8-sig", newline="")
    return open(path, encoding="utf-8-sig", newline="")


class _ReadError(Exception):
    """Raised inside a reader with the line it happened on; turned into one message naming the file."""


def _read_smi(handle, limit: int | None):
    smiles: list[str] = []
    names: list[str] = []
    lines: list[int] = []
    smiles_name, name_name, named = "smiles", _DEFAULT_NAME_COLUMN, False
    for number, line in enumerate(handle, start=1):
        if limit is not None and len(smiles) >= limit:
            break
        fields = line.strip().split(None, 1)
        if not fields:
            continue
        if number == 1 and fields[0].lower() == "smiles":
            smiles_name = fields[0]
            if len(fields) > 1:
                name_name, named = fields[1].strip(), True
            continue
        smiles.append(fields[0])
        names.append(fields[1].strip() if len(fields) > 1 else "")
        lines.append(number)
    columns = {smiles_name: smiles}
    if named or any(names):
        if name_name == smiles_name:
            name_name = _DEFAULT_NAME_COLUMN if smiles_name != _DEFAULT_NAME_COLUMN else "name_"
        columns[name_name] = names
    return columns, smiles_name, lines


def _first_line(text: str) -> str:
    """The text's first line, ended by any of the line breaks the csv module knows: a spreadsheet's "CSV (Macintosh)"
    ends its lines with a bare carriage return."""
    return re.split(r"\r\n|\r|\n", text, maxsplit=1)[0]


def _delimiter(text: str, kind: str) -> str:
    """The delimiter of a .csv/.tsv file: its kind's, unless the header line holds none of it but ';', tab or '|'
    (a semicolon CSV, as spreadsheets in many locales write it), which then is the delimiter. Quoted column names
    do not count: a semicolon CSV's "IC50, nM" holds a comma that separates nothing."""
    expected = "\t" if kind == "tsv" else ","
    header = re.sub(r'"[^"]*"', "", _first_line(text.lstrip("\ufeff")))
    if expected in header:
        return expected
    for other in (";", "\t", "|"):
        if other in header:
            return other
    return expected


def _read_delimited(text: str, delimiter: str, limit: int | None) -> tuple[pd.DataFrame, np.ndarray]:
    """(frame, line numbers) of a CSV/TSV text. Fast path: pandas' C parser when no field is quoted (then every record
    is one line, so a row's line follows from its position); otherwise, or for a malformed record, the csv module,
    which counts the lines of quoted multi-line fields and says which record is wrong."""
    first_line = _first_line(text)
    if '"' not in text and first_line.strip():
        try:
            frame = pd.read_csv(io.StringIO(text), sep=delimiter, dtype=str, keep_default_na=False, na_filter=False,
                                skip_blank_lines=False, engine="c")
        except (pd.errors.ParserError, pd.errors.EmptyDataError):
            frame = None  # let the csv module below say what is wrong, and where
        # pandas makes the first column the index when records have one field more than the header: an error here
        if frame is not None and isinstance(frame.index, pd.RangeIndex):
            header = next(csv.reader([first_line.rstrip("\r")], delimiter=delimiter))
            _check_header(header)
            if len(header) == len(frame.columns):
                frame.columns = header  # as written: pandas names an empty header field "Unnamed: 2"
            frame = frame.fillna("")  # a record shorter than the header: its missing fields are empty text
            lines = np.arange(2, len(frame) + 2, dtype=np.int64)
            blank = (frame == "").all(axis=1).to_numpy() if len(frame.columns) else np.zeros(len(frame), bool)
            if blank.any():
                frame, lines = frame.loc[~blank].reset_index(drop=True), lines[~blank]
            if limit is not None:
                frame, lines = frame.iloc[:limit], lines[:limit]
            return frame, lines
    header: list[str] | None = None
    rows: list[list[str]] = []
    lines: list[int] = []
    for start, record in _records(io.StringIO(text, newline=""), delimiter):  # lines as the file has them
        if header is None:
            header = record
            continue
        if limit is not None and len(rows) >= limit:
            break
        rows.append(_fit_to_header(record, header, start))
        lines.append(start)
    if header is None:
        raise _ReadError("the file is empty: expected a header line naming the columns")
    _check_header(header)
    columns = {name: list(values) for name, values in zip(header, zip(*rows))} if rows else {n: [] for n in header}
    return pd.DataFrame(columns, dtype=str), np.asarray(lines, dtype=np.int64)


def _records(lines, delimiter: str):
    """(first line, fields) of each record that is not blank, the header first, read by the csv module from an
    iterable of the file's lines (newlines kept). Strictly: a field that runs over several lines, a quote never
    closed, or text after a closing quote is a _ReadError naming the line where the quote opened, since a stray quote
    would otherwise merge the records up to the next quote into one field, and the table would lose them silently."""
    reader = csv.reader(lines, delimiter=delimiter, strict=True)
    header, previous = None, 0
    try:
        for record in reader:
            start, previous = previous + 1, reader.line_num
            if previous > start:
                raise _ReadError(_spanning_record_message(record, header, start, previous))
            if not any(record):
                continue  # a blank line (or a record of empty fields only): nothing written there
            header = record if header is None else header
            yield start, record
    except csv.Error as err:
        opened = previous + 1  # the line the failing record began on, where its quote opened
        if str(err) == "unexpected end of data":
            raise _ReadError(f"line {opened}: a double quote opens a field and is never closed (a stray quote?), so "
                             "the rest of the file would be one field: remove the quote, or close it") from err
        if "expected after" in str(err):
            closed = f" on line {reader.line_num}" if reader.line_num != opened else ""
            raise _ReadError(f"line {opened}: a field that opens with a double quote goes on after its closing quote"
                             f"{closed} (a stray quote?): remove it, or quote the whole field and double the quotes "
                             'inside it ("")') from err
        raise _ReadError(f"line {reader.line_num}: {err}") from err


def _spanning_record_message(record: list[str], header: list[str] | None, start: int, end: int) -> str:
    field = next((i for i, value in enumerate(record) if "\n" in value or "\r" in value), 0)
    if header is None:
        where = f"field {field + 1} of the header"
    elif field < len(header):
        where = f"column {header[field]!r}"
    else:
        where = f"field {field + 1}"
    return (f"line {start}: a double quote opens a field in {where} that closes only on line {end}, making lines "
            f"{start}-{end} one record (a stray quote?); a molecule table's fields hold no line breaks, so this is "
            'refused: remove the quote (or double it, "", inside a quoted field), or put the field on one line')


def _fit_to_header(record: list[str], header: list[str], line: int) -> list[str]:
    """A record with as many fields as the header: a short one padded with "", a long one an error."""
    if len(record) > len(header):
        raise _ReadError(f"line {line} has {len(record)} fields, but the header names {len(header)} columns")
    return record + [""] * (len(header) - len(record))


def _check_header(header: list[str]) -> None:
    duplicates = sorted({c for c in header if header.count(c) > 1})
    if duplicates:
        raise _ReadError(f"duplicate column names in the header: {_columns_text(duplicates)}")


@contextlib.contextmanager
def _reading_errors(path):
    """Reading failures as one message naming the file: malformed records, other encodings, truncated gzip."""
    try:
        yield
    except _ReadError as err:
        raise ValueError(f"{path}: {err}") from None
    except UnicodeDecodeError as err:
        raise ValueError(f"{path} is not UTF-8 text ({err.reason} at byte {err.start} of a block): save it as "
                         "UTF-8") from None
    except (gzip.BadGzipFile, EOFError) as err:
        raise ValueError(f"{path} is not a complete gzip file ({err})") from None


def read_molecule_table(
    path: str | os.PathLike, smiles_column: str | None = None, limit: int | None = None
) -> MoleculeTable:
    """Read a file of molecules (see the module's docstring for the formats and rules).

    Args:
        path: the file.
        smiles_column: the SMILES column of a CSV/TSV/Parquet file (exact header spelling); recognised by name when
            not given. For a one-SMILES-a-line file it may only name that file's SMILES column.
        limit: read only the first ``limit`` rows.

    Returns:
        A :class:`MoleculeTable`: the frame, its SMILES column's name and each row's file line.

    Raises:
        FileNotFoundError / IsADirectoryError: no such file.
        ValueError: an unsupported file type, a file that is not UTF-8 text or not gzip, a malformed record.
        ColumnNotFoundError (a KeyError and a ValueError): ``smiles_column`` is absent, or no SMILES column or
            several are recognised.
    """
    path = Path(os.fspath(path)).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"file not found: {path}")
    if path.is_dir():
        raise IsADirectoryError(f"expected a file of molecules, got a folder: {path}")
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    kind = _kind(path)
    if kind == "parquet":
        return _read_parquet(path, smiles_column, limit)
    with _reading_errors(path), _open_text(path) as handle:
        if kind == "smi":
            columns, smiles_name, lines = _read_smi(handle, limit)
            frame = pd.DataFrame(columns, dtype=str)
        else:
            text = handle.read()
            frame, lines = _read_delimited(text, _delimiter(text, kind), limit)
    if kind == "smi":
        if smiles_column is not None and smiles_column.strip().lower() != smiles_name.lower():
            raise ValueError(
                f"smiles_column={smiles_column!r} was given, but {path} is a one-SMILES-a-line file (the SMILES "
                "is the first field of each line): leave the SMILES column unset"
            )
        column = smiles_name
    else:
        column = find_smiles_column(frame.columns, smiles_column, source=str(path))
    return MoleculeTable(frame=frame, smiles_column=column, line_numbers=np.asarray(lines, dtype=np.int64), path=path)


def _parquet_smiles_column(path: Path, smiles_column: str | None) -> str:
    try:
        schema = pq.read_schema(path)
    except Exception as err:  # pyarrow raises ArrowInvalid and friends for a file that is not Parquet
        raise ValueError(f"{path} is not a readable Parquet file ({err})") from None
    names = [n for n in schema.names if not n.startswith("__index_level_")]
    return find_smiles_column(names, smiles_column, source=str(path))


def _parquet_frame(table, column: str) -> pd.DataFrame:
    """A pyarrow table as the reader's frame: a RangeIndex, the SMILES column as text ("" where missing)."""
    frame = table.to_pandas()
    # A named index (a frame saved after set_index("id")) is a column of the file, often the IDs: it stays, as the
    # first columns. pandas' unnamed row labels are not data and go, a RangeIndex too: pandas records [10, 20, 30]
    # as one, which would not be the 0-based index the rows are addressed by.
    named = [name for name in frame.index.names if name is not None]
    frame = (frame.reset_index(level=named) if named else frame).reset_index(drop=True)
    values = frame[column].tolist()
    frame[column] = pd.Series(["" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v) for v in values],
                              dtype=str, index=frame.index)
    return frame


def _read_parquet(path: Path, smiles_column: str | None, limit: int | None) -> MoleculeTable:
    column = _parquet_smiles_column(path, smiles_column)
    table = pq.read_table(path)
    if limit is not None:
        table = table.slice(0, limit)
    frame = _parquet_frame(table, column)
    return MoleculeTable(frame=frame, smiles_column=column, line_numbers=np.arange(1, len(frame) + 1, dtype=np.int64),
                         path=path)


# ---------------------------------------------------------------------------------------------- chunked reading
def iter_molecule_table(path: str | os.PathLike, smiles_column: str | None = None, chunk_rows: int = 10_000):
    """Read a file of molecules ``chunk_rows`` rows at a time, in constant memory: yields :class:`MoleculeTable`
    chunks (each frame with its own 0-based RangeIndex; ``line_numbers`` are the rows' lines in the whole file).

    The chunks, put together, are what :func:`read_molecule_table` returns: the same columns, cells, SMILES column
    and line numbers, and the same errors (raised when the chunk holding the bad record is read). Every chunk holds
    ``chunk_rows`` rows except the last; a file without rows yields nothing (a CSV/TSV without a header still fails).
    """
    if isinstance(chunk_rows, bool) or not isinstance(chunk_rows, (int, np.integer)) or chunk_rows < 1:
        raise ValueError(f"chunk_rows must be a positive integer, got {chunk_rows!r}")
    path = Path(os.fspath(path)).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"file not found: {path}")
    if path.is_dir():
        raise IsADirectoryError(f"expected a file of molecules, got a folder: {path}")
    kind = _kind(path)
    if kind == "parquet":
        yield from _iter_parquet(path, smiles_column, int(chunk_rows))
        return
    if kind == "smi":
        chunks = _iter_smi(path, smiles_column, int(chunk_rows))
    else:
        chunks = _iter_delimited(path, kind, smiles_column, int(chunk_rows))
    with _reading_errors(path):
        yield from chunks


def _iter_smi(path: Path, smiles_column: str | None, chunk_rows: int):
    # Whether the table has a name column depends on every line (any name, or a header naming one); a first pass
    # over the text (no rows kept) decides it, so that every chunk has the columns the whole table has.
    with _open_text(path) as handle:
        first = handle.readline()
        header = first.strip().split(None, 1)
        has_header = bool(header) and header[0].lower() == "smiles"
        data = handle if has_header else itertools.chain([first], handle)
        named = (has_header and len(header) > 1) or any(len(line.strip().split(None, 1)) > 1 for line in data)
    smiles_name, name_name = (header[0], header[1].strip() if len(header) > 1 else _DEFAULT_NAME_COLUMN) \
        if has_header else ("smiles", _DEFAULT_NAME_COLUMN)
    if name_name == smiles_name:
        name_name = _DEFAULT_NAME_COLUMN if smiles_name != _DEFAULT_NAME_COLUMN else "name_"
    if smiles_column is not None and smiles_column.strip().lower() != smiles_name.lower():
        raise ValueError(f"smiles_column={smiles_column!r} was given, but {path} is a one-SMILES-a-line file (the "
                         "SMILES is the first field of each line): leave the SMILES column unset")

    def chunk(smiles, names, lines):
        columns = {smiles_name: smiles, **({name_name: names} if named else {})}
        return MoleculeTable(frame=pd.DataFrame(columns, dtype=str), smiles_column=smiles_name,
                             line_numbers=np.asarray(lines, dtype=np.int64), path=path)

    smiles, names, lines = [], [], []
    with _open_text(path) as handle:
        for number, line in enumerate(handle, start=1):
            fields = line.strip().split(None, 1)
            if not fields or (number == 1 and has_header):
                continue
            smiles.append(fields[0])
            names.append(fields[1].strip() if len(fields) > 1 else "")
            lines.append(number)
            if len(smiles) == chunk_rows:
                yield chunk(smiles, names, lines)
                smiles, names, lines = [], [], []
    if smiles:
        yield chunk(smiles, names, lines)


def _iter_delimited(path: Path, kind: str, smiles_column: str | None, chunk_rows: int):
    # The csv module, record by record, as the whole reader's slow path reads them (the same refusals), and the
    # delimiter sniffed from the first line exactly as there.
    with _open_text(path) as handle:
        first = handle.readline()
        header, column = None, None
        rows: list[list[str]] = []
        lines: list[int] = []

        def chunk():
            frame = pd.DataFrame(dict(zip(header, zip(*rows))) if rows else {n: [] for n in header}, dtype=str)
            return MoleculeTable(frame=frame, smiles_column=column, line_numbers=np.asarray(lines, dtype=np.int64),
                                 path=path)

        for start, record in _records(itertools.chain([first], handle), _delimiter(first, kind)):
            if header is None:
                header = record
                _check_header(header)
                column = find_smiles_column(header, smiles_column, source=str(path))
                continue
            rows.append(_fit_to_header(record, header, start))
            lines.append(start)
            if len(rows) == chunk_rows:
                yield chunk()
                rows, lines = [], []
        if header is None:
            raise _ReadError("the file is empty: expected a header line naming the columns")
        if rows:
            yield chunk()


def _iter_parquet(path: Path, smiles_column: str | None, chunk_rows: int):
    column = _parquet_smiles_column(path, smiles_column)
    parquet = pq.ParquetFile(path)
    pending, count, first_row = [], 0, 1
    floats = _integers_with_missing(path, parquet.schema_arrow)

    def chunk(table):
        for name in floats:  # as pandas reads the whole file: floats, in every chunk, not ints in some
            table = table.set_column(table.schema.get_field_index(name), name, table[name].cast(pa.float64()))
        frame = _parquet_frame(table, column).reset_index(drop=True)
        lines = np.arange(first_row, first_row + len(frame), dtype=np.int64)
        return MoleculeTable(frame=frame, smiles_column=column, line_numbers=lines, path=path)

    # Record batches follow the row groups; they are regrouped so that every chunk but the last has chunk_rows rows.
    for batch in parquet.iter_batches(batch_size=chunk_rows):
        pending.append(batch)
        count += batch.num_rows
        while count >= chunk_rows:
            table = pa.Table.from_batches(pending, schema=parquet.schema_arrow)
            yield chunk(table.slice(0, chunk_rows))
            first_row += chunk_rows
            rest = table.slice(chunk_rows)
            pending, count = rest.to_batches(), rest.num_rows
    if count:
        yield chunk(pa.Table.from_batches(pending, schema=parquet.schema_arrow))


def _integers_with_missing(path: Path, schema) -> list[str]:
    """The integer columns that pandas reads as float64 (NaN for a missing value) when it reads the whole file: those
    with a missing value anywhere and no pandas record making them nullable Int64. A chunk without missing values
    would otherwise come back as int64, and an ID column would be written 101 in one chunk and 104.0 in the next."""
    record = json.loads((schema.metadata or {}).get(b"pandas", b"{}"))
    typed = {entry.get("name"): entry.get("numpy_type") for entry in record.get("columns", [])}
    candidates = []
    for field in schema:
        if not pa.types.is_integer(field.type) or field.name.startswith("__index_level_"):
            continue
        try:
            extension = isinstance(pd.api.types.pandas_dtype(typed.get(field.name) or "int64"),
                                   pd.api.extensions.ExtensionDtype)
        except TypeError:
            extension = False
        if not extension:
            candidates.append(field.name)
    if not candidates:
        return []
    table = pq.read_table(path, columns=candidates)  # one column of integers each: small beside the file
    return [name for name in candidates if table[name].null_count]

"""Reading a molecule table whole and in chunks (processing/tables.py) keeps every column as written: what a
chunked `moleclip embed`/`predict` writes back must be the user's own table, IDs included."""

import gzip

import numpy as np
import pandas as pd
import pytest

from moleclip.processing.tables import ColumnNotFoundError, iter_molecule_table, read_molecule_table


def _whole_and_chunked(path, **kwargs):
    whole = read_molecule_table(path, **kwargs)
    chunks = list(iter_molecule_table(path, chunk_rows=2, **kwargs))
    pd.testing.assert_frame_equal(pd.concat([c.frame for c in chunks], ignore_index=True), whole.frame)
    assert np.concatenate([c.line_numbers for c in chunks]).tolist() == whole.line_numbers.tolist()
    return whole


def test_parquet_ids_saved_as_the_frames_index_are_kept(tmp_path):
    path = tmp_path / "lib.parquet"
    frame = pd.DataFrame({"id": ["0001", "0002", "0003"], "smiles": ["CCO", "CCN", "CCC"], "v": [1.5, 2.5, 3.5]})
    frame.set_index("id").to_parquet(path)
    table = _whole_and_chunked(path)
    assert table.frame.columns.tolist() == ["id", "smiles", "v"] and table.frame["id"].tolist() == ["0001", "0002",
                                                                                                    "0003"]
    # the SMILES themselves as the index: still found, still the SMILES column
    frame.set_index("smiles").to_parquet(path)
    table = _whole_and_chunked(path)
    assert table.smiles_column == "smiles" and table.smiles == ["CCO", "CCN", "CCC"]
    # pandas' own unnamed row labels are not data
    frame.set_index(pd.Index([10, 20, 30])).to_parquet(path)
    assert _whole_and_chunked(path).frame.columns.tolist() == ["id", "smiles", "v"]


def test_an_empty_header_field_keeps_its_name_in_both_readers(tmp_path):
    path = tmp_path / "trailing.csv"
    path.write_text("id,smiles,\n0001,CCO,\n0002,CCN,\n0003,CCC,\n")  # a spreadsheet's trailing comma
    assert _whole_and_chunked(path).frame.columns.tolist() == ["id", "smiles", ""]


def test_parquet_rows_are_numbered_from_zero_whatever_pandas_recorded(tmp_path):
    path = tmp_path / "lib.parquet"
    pd.DataFrame({"smiles": ["CCO", "CCN", "CCC"]}, index=[10, 20, 30]).to_parquet(path)  # stored as a RangeIndex
    table = read_molecule_table(path)
    assert table.frame.index.tolist() == [0, 1, 2] and table.frame.loc[0, "smiles"] == "CCO"


def test_lines_ended_by_bare_carriage_returns_are_read_by_both_readers(tmp_path):
    # a spreadsheet's "CSV (Macintosh)": every line ends in \r alone
    path = tmp_path / "mac.csv"
    path.write_bytes(b"id,smiles\r0001,CCO\r\r0002,CCN\r0003,CCC\r")
    table = _whole_and_chunked(path)
    assert table.frame["id"].tolist() == ["0001", "0002", "0003"] and table.line_numbers.tolist() == [2, 4, 5]
    path.write_bytes(b'id,smiles,note\r0001,CCO,"a,b"\r0002,CCN,x\r0003,CCC,\r')  # quoted: the csv module's path
    table = _whole_and_chunked(path)
    assert table.frame["note"].tolist() == ["a,b", "x", ""] and table.line_numbers.tolist() == [2, 3, 4]


def test_parquet_integers_with_a_missing_value_are_floats_in_every_chunk(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    # as polars or Spark write it: a nullable integer column, no pandas record
    path = tmp_path / "lib.parquet"
    pq.write_table(pa.table({"id": pa.array([101, 102, None, 104, 105], pa.int64()),
                             "smiles": ["CCO", "CN", "CC", "C", "O"], "n": pa.array([1, 2, 3, 4, 5], pa.int32())}), path)
    whole = _whole_and_chunked(path)
    for chunk in iter_molecule_table(path, chunk_rows=2):
        assert chunk.frame.dtypes.to_dict() == whole.frame.dtypes.to_dict()  # id: float64 in each, as whole
    assert str(whole.frame["n"].dtype) == "int32"


def test_a_semicolon_csv_with_a_comma_in_a_quoted_column_name(tmp_path):
    # as a spreadsheet in a decimal-comma locale saves it
    path = tmp_path / "eu.csv"
    path.write_text('ID;SMILES;"IC50, nM"\n0001;CCO;1,5\n0002;CCN;2,5\n0003;CCC;\n')
    table = _whole_and_chunked(path)
    assert table.frame.columns.tolist() == ["ID", "SMILES", "IC50, nM"] and table.smiles == ["CCO", "CCN", "CCC"]
    assert table.frame["IC50, nM"].tolist() == ["1,5", "2,5", ""] and table.frame["ID"].tolist()[0] == "0001"
    path.write_text('"id","smiles"\n"0001","CCO"\n')  # every field quoted: still commas
    assert _whole_and_chunked(path).frame.to_dict("list") == {"id": ["0001"], "smiles": ["CCO"]}


# ------------------------------------------------------------------------ stray quotes and ambiguous SMILES columns
def _write(path, text: str):
    if path.name.endswith(".gz"):
        with gzip.open(path, "wt", newline="") as handle:
            handle.write(text)
    else:
        path.write_bytes(text.encode())
    return path


def _library(delimiter: str = ",", n: int = 100) -> list[str]:
    return [f"id{delimiter}smiles{delimiter}y"] + [f"cpd{i}{delimiter}{'C' * (i % 5 + 1)}{delimiter}{i}"
                                                   for i in range(n)]


def _refused_by_both_readers(path, words: str):
    with pytest.raises(ValueError, match=words):
        read_molecule_table(path)
    for chunk_rows in (1, 7, 10_000):  # the bad record inside a chunk, or spanning several chunks' worth of lines
        with pytest.raises(ValueError, match=words):
            list(iter_molecule_table(path, chunk_rows=chunk_rows))


@pytest.mark.parametrize("name,delimiter", [("lib.csv", ","), ("lib.csv.gz", ","), ("lib.tsv", "\t"),
                                            ("lib.tsv.gz", "\t")])
@pytest.mark.parametrize("opened,closed,column", [(10, 60, "id"), (0, 50, "id"), (99, 40, "y")])
def test_a_stray_quote_that_a_later_quote_closes_is_refused_with_its_line(tmp_path, name, delimiter, opened, closed,
                                                                           column):
    """Bad input: a stray double quote that another quote lines later closes (in the first record, in the middle, in
    the last field), which made one cell of 50 records and another row's molecule, and the table silently 50
    records shorter. Refused with the line where the quote opened, in CSV and TSV, plain and gzipped."""
    rows = _library(delimiter)
    first, last = min(opened, closed) + 1, max(opened, closed) + 1  # the data rows' lines, counting from the header
    position = 0 if column == "id" else -1
    fields = rows[first].split(delimiter)
    fields[position] = '"' + fields[position]
    rows[first] = delimiter.join(fields)
    fields = rows[last].split(delimiter)
    fields[position] = fields[position] + '"'
    rows[last] = delimiter.join(fields)
    path = _write(tmp_path / name, "\n".join(rows) + "\n")
    _refused_by_both_readers(path, rf"{name}: line {first + 1}: a double quote opens a field in column '{column}' "
                                   rf"that closes only on line {last + 1}.*stray quote")


@pytest.mark.parametrize("name,delimiter", [("lib.csv", ","), ("lib.tsv.gz", "\t")])
@pytest.mark.parametrize("row", [3, 100])
def test_a_stray_quote_never_closed_is_refused_with_its_line(tmp_path, name, delimiter, row):
    """Bad input: a stray double quote that nothing closes, in the middle or in the file's last record (with or
    without a final line break): the rest of the file would be one field."""
    rows = _library(delimiter)
    rows[row] = '"' + rows[row]
    for ending in ("\n", ""):
        path = _write(tmp_path / name, "\n".join(rows) + ending)
        _refused_by_both_readers(path, rf"line {row + 1}: a double quote opens a field and is never closed")


def test_text_after_a_closing_quote_is_refused(tmp_path):
    """Bad input: a quoted field that goes on after its closing quote (`"cpd1" salt`), which the csv module would
    otherwise glue together silently."""
    path = _write(tmp_path / "lib.csv", 'id,smiles\ncpd0,CCO\n"cpd1" salt,CCN\n')
    _refused_by_both_readers(path, r"line 3: a field that opens with a double quote goes on after its closing quote")


def test_a_legitimately_quoted_multi_line_field_is_refused_with_advice(tmp_path):
    """Bad input, by decision: a quoted field holding a line break. No molecule table needs one, and it cannot be
    told from a stray quote's; refused, saying to put the field on one line."""
    path = _write(tmp_path / "lib.csv", 'id,smiles,note\ncpd0,CCO,"made\r\nin 2019"\ncpd1,CCN,x\n')
    _refused_by_both_readers(path, r"line 2: a double quote opens a field in column 'note' that closes only on line "
                                   r"3.*put the field on one line")


@pytest.mark.parametrize("name,delimiter", [("lib.csv", ","), ("lib.tsv.gz", "\t")])
def test_quoted_fields_holding_the_delimiter_or_quotes_still_read(tmp_path, name, delimiter):
    """Not a bad input: quoted fields with the delimiter and doubled quotes inside, on one line each, read as
    written, whole and in chunks, every record on its own line."""
    rows = _library(delimiter, n=9)
    rows[3] = f'"cpd{delimiter}2"{delimiter}CCC{delimiter}"say ""2"""'
    path = _write(tmp_path / name, "\n".join(rows) + "\n")
    table = _whole_and_chunked(path)
    assert len(table) == 9 and table.line_numbers.tolist() == list(range(2, 11))
    assert table.frame.loc[2, "id"] == f"cpd{delimiter}2" and table.frame.loc[2, "y"] == 'say "2"'


@pytest.mark.parametrize("header,candidates", [("SMILES,smiles,y", "'SMILES', 'smiles'"),
                                               ("id, Smiles ,canonical_smiles", "' Smiles ', 'canonical_smiles'")])
def test_several_smiles_columns_are_refused_unless_one_is_chosen(tmp_path, header, candidates):
    """Bad input: several columns the reader would recognise as the SMILES column (two spellings of `smiles`, or
    `smiles` beside `canonical_smiles`), of which one was used silently. Refused naming them; a chosen one is read."""
    path = _write(tmp_path / "two.csv", header + "\nCC,CCO,C\n")
    with pytest.raises(ColumnNotFoundError, match=f"several SMILES columns in .*two.csv: {candidates}; choose one"):
        read_molecule_table(path)
    with pytest.raises(ColumnNotFoundError, match="several SMILES columns"):
        list(iter_molecule_table(path))
    frame = pd.read_csv(path, dtype=str)
    frame.to_parquet(tmp_path / "two.parquet", index=False)
    with pytest.raises(ColumnNotFoundError, match="several SMILES columns"):
        read_molecule_table(tmp_path / "two.parquet")
    chosen = header.split(",")[1]
    assert read_molecule_table(path, smiles_column=chosen).smiles == ["CCO"]
    assert [c.smiles for c in iter_molecule_table(path, smiles_column=chosen)] == [["CCO"]]

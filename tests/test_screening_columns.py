"""The columns of a chunked run's output (training/inference/screening.py): the input's columns are kept as they are, and the
outputs never take their place or their name. A made-up `compute` stands in for the model, so these run in a blink."""

import numpy as np
import pandas as pd
import pytest

from moleclip.processing.molecules import SkippedMolecule
from moleclip.training.inference import screening


def _fake_embedder(chunk):
    """Two embedding numbers a row (the row's line and its SMILES length); empty SMILES are skipped."""
    skipped = [SkippedMolecule(i, s, "empty") for i, s in enumerate(chunk.smiles) if not s]
    values = np.array([[line, len(s)] for line, s in zip(chunk.line_numbers, chunk.smiles)], dtype=np.float32)
    values[[s.index for s in skipped]] = np.nan
    return {"emb_0": values[:, 0], "emb_1": values[:, 1]}, skipped, None


def _screen(source, output, **kwargs):
    return screening.screen(source, output, _fake_embedder, {"a": 1}, chunk_rows=2, progress=False, rank=0, world=1,
                            sync=lambda: None, **kwargs)


def test_npy_output_holds_the_embeddings_only_not_an_input_column_named_emb(tmp_path):
    source = tmp_path / "in.csv"
    source.write_text("id,smiles,emb_score,emb_7\n0001,CCO,5,x\n0002,,6,y\n0003,CCCC,7,z\n")
    _screen(source, tmp_path / "e.npy")
    matrix = np.load(tmp_path / "e.npy")
    assert matrix.shape == (2, 2)  # the input's emb_score and emb_7 are not embedding dimensions
    np.testing.assert_array_equal(matrix, [[2, 3], [4, 4]])
    assert np.load(tmp_path / "e.rows.npy").tolist() == [0, 2]


@pytest.mark.parametrize("column", ["emb_1", "moleclip_skipped"])
def test_an_input_column_named_like_an_output_is_refused_not_overwritten(tmp_path, column):
    source = tmp_path / "in.csv"
    source.write_text(f"id,smiles,{column}\n0001,CCO,kept\n0002,CCN,kept\n")
    out = tmp_path / "e.csv"
    with pytest.raises(ValueError, match=f"input has column.*{column}.*rename"):
        _screen(source, out)
    assert not out.exists()


def test_csv_output_keeps_input_columns_and_order(tmp_path):
    source = tmp_path / "in.csv"
    source.write_text('id,smiles,note\n0001,CCO,"a,b"\n\n0002,,NA\n0003,CCCC,\n')
    out = tmp_path / "e.csv"
    summary = _screen(source, out)
    frame = pd.read_csv(out, dtype=str, keep_default_na=False)
    assert frame.columns.tolist() == ["id", "smiles", "note", "emb_0", "emb_1", "moleclip_skipped"]
    assert frame["id"].tolist() == ["0001", "0002", "0003"] and frame["note"].tolist() == ["a,b", "NA", ""]
    assert frame["moleclip_skipped"].tolist() == ["", "empty", ""] and frame["emb_0"].tolist()[1] == ""
    assert summary.skipped == 1 and summary.written == 2


def _predictor_like(chunk):
    """Like Predictor.predict: the ensemble's column only when some molecule of the chunk could be used."""
    skipped = [SkippedMolecule(i, s, "empty") for i, s in enumerate(chunk.smiles) if not s]
    value = np.array([len(s) if s else np.nan for s in chunk.smiles])
    columns = {"predicted": value}
    if len(skipped) < len(chunk):
        columns["predicted_spread"] = value / 10
    return columns, skipped, None


@pytest.mark.parametrize("suffix", ["csv", "parquet"])
def test_a_chunk_without_usable_molecules_keeps_every_column_in_its_place(tmp_path, suffix):
    source = tmp_path / "in.csv"
    source.write_text("id,smiles\n0001,\n0002,\n0003,CCO\n0004,\n0005,CCCC\n")  # chunk 0: nothing usable
    out = tmp_path / f"p.{suffix}"
    screening.screen(source, out, _predictor_like, {"a": 1}, chunk_rows=2, progress=False, rank=0, world=1,
                     sync=lambda: None)
    frame = pd.read_csv(out, dtype=str, keep_default_na=False) if suffix == "csv" else pd.read_parquet(out)
    assert frame.columns.tolist() == ["id", "smiles", "predicted", "predicted_spread", "moleclip_skipped"]
    assert frame["id"].tolist() == ["0001", "0002", "0003", "0004", "0005"]
    assert frame["moleclip_skipped"].tolist() == ["empty", "empty", "", "empty", ""]
    spread = pd.to_numeric(frame["predicted_spread"]).tolist()
    assert np.isnan(spread[:2]).all() and spread[2] == pytest.approx(0.3) and spread[4] == pytest.approx(0.4)


def test_the_output_format_follows_the_suffix_not_a_tsv_inside_the_name(tmp_path):
    from moleclip_cli._common import write_table

    source = tmp_path / "zinc.tsv"
    source.write_text("id\tsmiles\n0001\tCCO\n0002\tCCCC\n0003\tCN\n")
    for name in ("zinc.tsv_emb.csv", "zinc.tsv_emb.csv.gz"):
        _screen(source, tmp_path / name)
        assert pd.read_csv(tmp_path / name, dtype=str).columns.tolist() == ["id", "smiles", "emb_0", "emb_1",
                                                                           "moleclip_skipped"]
    _screen(source, tmp_path / "e.tsv.gz")
    assert pd.read_csv(tmp_path / "e.tsv.gz", sep="\t").columns.tolist()[:2] == ["id", "smiles"]
    write_table(pd.DataFrame({"a": [1], "b": [2]}), str(tmp_path / "hits.tsv_top.csv"))
    assert (tmp_path / "hits.tsv_top.csv").read_text().splitlines() == ["a,b", "1,2"]


def test_a_run_that_fails_before_its_first_shard_leaves_nothing_to_refuse_the_corrected_run(tmp_path):
    source = tmp_path / "in.csv"
    source.write_text("id,smiles,moleclip_skipped\n0001,CCO,x\n0002,CCN,y\n")
    out = tmp_path / "e.csv"
    with pytest.raises(ValueError, match="rename"):
        _screen(source, out)
    assert not screening.parts_folder(out).exists()
    source.write_text("id,smiles,earlier_reason\n0001,CCO,x\n0002,CCN,y\n")  # renamed as the message asked
    assert _screen(source, out).written == 2 and pd.read_csv(out)["earlier_reason"].tolist() == ["x", "y"]


def test_a_launch_reports_a_resume_only_when_an_earlier_run_left_shards(tmp_path, capsys):
    from moleclip_cli._common import report_screen

    source = tmp_path / "in.csv"
    source.write_text("id,smiles\n" + "".join(f"{i:04d},{'C' * (i + 1)}\n" for i in range(11)))
    out = tmp_path / "e.parquet"
    run = dict(compute=_fake_embedder, arguments={"a": 1}, chunk_rows=2, progress=False, world=2)

    def barrier_of_rank_0():  # the first barrier lets process 1 do its whole share while process 0 waits
        if not barrier_of_rank_0.done:
            barrier_of_rank_0.done = True
            screening.screen(source, out, rank=1, sync=lambda: None, **run)

    barrier_of_rank_0.done = False
    summary = screening.screen(source, out, rank=0, sync=barrier_of_rank_0, **run)
    assert (summary.chunks, summary.computed, summary.kept) == (6, 3, 0)
    report_screen(summary)
    assert "resumed" not in capsys.readouterr().out  # half the chunks were process 1's, not an earlier run's
    assert pd.read_parquet(out)["id"].tolist() == [f"{i:04d}" for i in range(11)]
    # an earlier run's shards are reported as kept
    screening.screen(source, out, rank=0, world=1, keep_parts=True, **{k: v for k, v in run.items() if k != "world"},
                     sync=lambda: None)
    summary = screening.screen(source, out, rank=0, world=1, sync=lambda: None,
                               **{k: v for k, v in run.items() if k != "world"})
    report_screen(summary)
    assert (summary.computed, summary.kept) == (0, 6) and "resumed: 6 of 6 chunks" in capsys.readouterr().out


def test_parquet_output_keeps_the_inputs_pandas_types(tmp_path):
    source = tmp_path / "in.parquet"
    pd.DataFrame({"id": pd.array([None, None, 3, 2**60, None], dtype="Int64"), "smiles": ["CCO", "CN", "CCC", "C", "O"],
                  "flag": pd.array([None, None, True, False, None], dtype="boolean")}).to_parquet(source)
    out = tmp_path / "e.parquet"
    _screen(source, out)  # chunks of 2: the first has no id and no flag at all
    frame = pd.read_parquet(out)
    assert str(frame["id"].dtype) == "Int64" and frame["id"].tolist()[2:4] == [3, 2**60]  # no float, no rounding
    assert str(frame["flag"].dtype) == "boolean" and frame.index.tolist() == [0, 1, 2, 3, 4]
    assert frame["emb_1"].dtype == np.float32


def test_parquet_output_stores_a_numeric_text_column_as_numbers_and_ids_as_text(tmp_path):
    """A CSV holds only text; a Parquet output gives a pass-through column the type its cells have: numbers where every
    cell (over every chunk) is a number as written, text for an ID with leading zeros or a column holding a word."""
    source = tmp_path / "in.csv"
    source.write_text("id,smiles,logS,count,note\n0001,CCO,-2.48,3,1.5\n0002,CCN,0.1,,2\n0003,CCCC,1e-3,12,abc\n")
    out = tmp_path / "e.parquet"
    _screen(source, out)
    frame = pd.read_parquet(out)
    assert frame["id"].tolist() == ["0001", "0002", "0003"] and frame["note"].tolist() == ["1.5", "2", "abc"]
    assert frame["logS"].dtype == np.float64 and frame["logS"].tolist() == [-2.48, 0.1, 0.001]
    assert str(frame["count"].dtype) == "Int64" and frame["count"].tolist()[::2] == [3, 12]
    assert frame["count"].isna().tolist() == [False, True, False]
    assert frame["smiles"].tolist() == ["CCO", "CCN", "CCCC"]


def test_csv_output_writes_float32_outputs_with_the_digits_float32_carries(tmp_path):
    """The one rule for numbers in tables (outputs.table_cells): float32 outputs with the shortest text that reads back
    as the same float32, float64 values (a user's) as pandas writes them, missing values empty."""
    from moleclip.training.outputs import write_delimited

    frame = pd.DataFrame({"predicted": np.array([-1.9776635, 0.1, np.nan], dtype=np.float32),
                          "measured": [-2.48, 0.1, np.nan], "id": ["0001", "0002", "0003"]})
    out = tmp_path / "t.csv"
    write_delimited(frame, out)
    assert out.read_text().splitlines() == ["predicted,measured,id", "-1.9776635,-2.48,0001", "0.1,0.1,0002", ",,0003"]


def test_rows_that_repeat_a_molecule_are_counted_and_said_once_and_keep_their_output(tmp_path):
    # ethanol written three ways, across chunks of two rows; an unusable row is no repeat
    from moleclip_cli._common import report_screen

    source = tmp_path / "in.csv"
    source.write_text("id,smiles\n1,CCO\n2,CCN\n3,OCC\n4,\n5,C(O)C\n6,CCCC\n")
    out = tmp_path / "e.csv"
    summary = _screen(source, out)
    assert (summary.rows, summary.written, summary.repeated) == (6, 5, 2)
    assert pd.read_csv(out)["id"].tolist() == [1, 2, 3, 4, 5, 6]  # information, not a refusal: every row stays
    with pytest.warns(UserWarning) as caught:
        report_screen(summary)
    repeats = [str(w.message) for w in caught if "repeat" in str(w.message)]
    assert repeats == ["2 of 6 rows repeat the molecule of an earlier row (identical canonical SMILES); every row "
                       "keeps its own output"]

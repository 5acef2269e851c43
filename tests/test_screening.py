"""Screening at scale (training/inference/screening.py): chunked reading, drawing in workers, shards, resume, assembly, and the
chunked `moleclip embed` / `moleclip predict` against the in-memory results. Tiny preset, ~40 molecules."""

import gzip
import json
import unittest.mock

import numpy as np
import pandas as pd
import pytest

from moleclip.processing.tables import iter_molecule_table, read_molecule_table
from moleclip.training.inference import screening
from moleclip_cli.main import main as cli

SMILES = ["C" * k + s for k in range(1, 8) for s in ["", "O", "N", "Cl", "c1ccccc1"]]  # 35 molecules
BAD = {4: "not_a_smiles", 17: "C1CC", 30: ""}  # cannot be parsed / drawn: empty cells and a reason
LIBRARY = [BAD.get(i, s) for i, s in enumerate(SMILES + ["CCOC(=O)C", "c1ccncc1", "CC(C)O", "OCCO", "CSC"])]
IDS = [f"{i:04d}" for i in range(len(LIBRARY))]  # leading zeros: kept as written


# ------------------------------------------------------------------------------------------------- reading
def _same(path, **kwargs):
    whole = read_molecule_table(path, **kwargs)
    for rows in (1, 3, 7, 1000):
        chunks = list(iter_molecule_table(path, chunk_rows=rows, **kwargs))
        assert all(len(c) == rows for c in chunks[:-1]) and all(c.smiles_column == whole.smiles_column for c in chunks)
        pd.testing.assert_frame_equal(pd.concat([c.frame for c in chunks], ignore_index=True), whole.frame)
        assert np.concatenate([c.line_numbers for c in chunks]).tolist() == whole.line_numbers.tolist()
    return whole


def test_chunked_reading_equals_whole_reading(tmp_path):
    csv = tmp_path / "q.csv"
    notes = ["two;parts" if i % 5 == 0 else "NA" for i in range(len(LIBRARY))]
    body = "".join(f'{i};{s};"{n}"\n' for i, s, n in zip(IDS, LIBRARY, notes))
    csv.write_bytes(("id;SMILES;note\n\n" + body).encode("utf-8-sig"))  # BOM, semicolons, quoted delimiters
    whole = _same(csv)
    assert whole.frame.columns.tolist() == ["id", "SMILES", "note"] and whole.frame["id"].tolist() == IDS
    assert whole.line_numbers[:3].tolist() == [3, 4, 5]  # the blank line is counted
    assert whole.frame["note"].tolist()[:2] == ["two;parts", "NA"]
    tsv = tmp_path / "t.tsv.gz"
    with gzip.open(tsv, "wt") as out:
        out.write("smiles\tx\n" + "".join(f"{s}\t{i}\n" for i, s in enumerate(LIBRARY)))
    _same(tsv)
    smi = tmp_path / "n.smi"
    smi.write_text("".join(f"{s or 'X'}{' name ' + str(i) if i == 20 else ''}\n\n" for i, s in enumerate(LIBRARY)))
    assert "name" in _same(smi).frame.columns  # one named line late in the file: every chunk has the column
    (tmp_path / "h.smi").write_text("SMILES id\nCCO a\nCCN\n")
    assert _same(tmp_path / "h.smi").frame.columns.tolist() == ["SMILES", "id"]
    parquet = tmp_path / "p.parquet"
    pd.DataFrame({"smiles": [s or None for s in LIBRARY], "v": range(len(LIBRARY))}).to_parquet(parquet,
                                                                                                 row_group_size=4)
    assert _same(parquet).frame["smiles"].tolist()[30] == ""


def test_chunked_reading_reports_errors_as_the_whole_reader(tmp_path):
    bad = tmp_path / "b.csv"
    bad.write_text("smiles,id\n" + "CCO,1\n" * 10 + "CCO,1,2\n")
    with pytest.raises(ValueError) as whole:
        read_molecule_table(bad)
    with pytest.raises(ValueError) as chunked:
        list(iter_molecule_table(bad, chunk_rows=3))
    assert str(chunked.value) == str(whole.value) and "line 12 has 3 fields" in str(whole.value)
    with pytest.raises(ValueError, match="chunk_rows must be a positive integer"):
        next(iter_molecule_table(bad, chunk_rows=0))
    (tmp_path / "c.csv").write_text("id,x\n1,2\n")
    with pytest.raises(ValueError, match="no SMILES column found"):
        next(iter_molecule_table(tmp_path / "c.csv"))


# ------------------------------------------------------------------------------------------------- embed
@pytest.fixture(scope="module")
def library(tmp_path_factory):
    root = tmp_path_factory.mktemp("screening")
    assert cli(["init", "--backbone", "tiny", "--output-dir", str(root / "tiny")]) == 0
    (root / "lib.csv").write_text("id,smiles\n" + "".join(f"{i},{s}\n" for i, s in zip(IDS, LIBRARY)))
    return root


def _embed(root, out, *extra):
    return cli(["embed", "--model", str(root / "tiny"), "--input", str(root / "lib.csv"), "--output", str(out),
                "--no-progress", "--batch-size", "4", *extra])


def test_chunked_embed_equals_the_unchunked_result(library, tmp_path, capsys):
    from moleclip.training.serving.hub import load_backbone, load_processor
    from moleclip.training.inference.engine import embed
    from moleclip.training.kinds import ImageKind

    out = tmp_path / "e.csv"
    with pytest.warns(UserWarning, match="3 of 40 molecules could not be used: line 6 'not_a_smiles'"):
        assert _embed(library, out, "--chunk-size", "7", "--num-workers", "2") == 0
    assert not screening.parts_folder(out).exists()
    frame = pd.read_csv(out, dtype={"id": str}, keep_default_na=False)
    assert frame["id"].tolist() == IDS and frame["smiles"].tolist() == LIBRARY
    columns = [c for c in frame.columns if c.startswith("emb_")]
    assert len(columns) == 32 and (frame["moleclip_skipped"] != "").tolist() == [i in BAD for i in range(40)]
    expected, kept, skipped = embed(ImageKind(load_backbone(str(library / "tiny")),
                                              load_processor(str(library / "tiny"))), LIBRARY, progress=False)
    assert kept.tolist() == [i for i in range(40) if i not in BAD] and sorted(s.index for s in skipped) == sorted(BAD)
    got = frame.loc[kept, columns].to_numpy(float)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    assert (frame.loc[list(BAD), columns] == "").all().all()
    # one chunk, no workers: the same file; Parquet and .npy are assembled from the same shards
    single = tmp_path / "single.csv"
    assert _embed(library, single, "--chunk-size", "1000", "--num-workers", "0") == 0
    np.testing.assert_allclose(pd.read_csv(single)[columns].to_numpy(float), pd.read_csv(out)[columns].to_numpy(float),
                               rtol=1e-5, atol=1e-6)  # other batches: float rounding only
    assert _embed(library, tmp_path / "e.parquet", "--chunk-size", "7", "--num-workers", "1") == 0
    table = pd.read_parquet(tmp_path / "e.parquet")
    assert table["id"].tolist() == IDS and table[columns].to_numpy().dtype == np.float32
    np.testing.assert_allclose(table.loc[kept, columns].to_numpy(), expected, rtol=1e-4, atol=1e-5)
    from moleclip.training.retrieval.index import read_embeddings

    assert read_embeddings(tmp_path / "e.parquet").embedded_with["projection_dim"] == 32  # provenance kept
    assert _embed(library, tmp_path / "e.npy", "--chunk-size", "7", "--num-workers", "0") == 0
    assert np.load(tmp_path / "e.rows.npy").tolist() == kept.tolist()
    np.testing.assert_allclose(np.load(tmp_path / "e.npy"), expected, rtol=1e-4, atol=1e-5)


class Killed(Exception):
    pass


def test_a_killed_run_resumes_with_its_finished_shards(library, tmp_path, monkeypatch, capsys):
    reference = tmp_path / "ref.csv"
    assert _embed(library, reference, "--chunk-size", "7", "--num-workers", "0") == 0
    out = tmp_path / "e.csv"
    done = []

    def kill_after_three(k):
        done.append(k)
        if len(done) == 3:
            raise Killed("killed")

    monkeypatch.setattr(screening, "_after_chunk", kill_after_three)
    assert _embed(library, out, "--chunk-size", "7", "--num-workers", "0") != 0
    parts = screening.parts_folder(out)
    assert sorted(p.name for p in parts.glob("part-*.parquet")) == [f"part-00000{k}.parquet" for k in range(3)]
    assert not out.exists()
    manifest = json.loads((parts / "manifest.json").read_text())
    assert manifest["chunk_rows"] == 7 and manifest["arguments"]["command"] == "embed"
    capsys.readouterr()
    # other arguments, or another chunk size, are refused: the finished shards were computed differently
    assert _embed(library, out, "--chunk-size", "7", "--standardize", "parent") == 2
    assert "other settings (the arguments changed)" in capsys.readouterr().err
    assert _embed(library, out, "--chunk-size", "5") == 2
    assert "the chunk size changed" in capsys.readouterr().err
    done.clear()
    monkeypatch.setattr(screening, "_after_chunk", done.append)
    assert _embed(library, out, "--chunk-size", "7", "--num-workers", "2") == 0
    assert done == [3, 4, 5]  # 40 rows in chunks of 7: only the three not yet written
    assert out.read_bytes() == reference.read_bytes() and not parts.exists()
    # a changed input is refused too; --overwrite starts over
    monkeypatch.setattr(screening, "_after_chunk", kill_after_three)
    done.clear()
    assert _embed(library, out, "--chunk-size", "7", "--num-workers", "0") != 0
    (library / "lib.csv").write_text((library / "lib.csv").read_text())  # the same text, a new mtime... and size
    with open(library / "lib.csv", "a") as handle:
        handle.write("9999,CCCC\n")
    capsys.readouterr()
    try:
        assert _embed(library, out, "--chunk-size", "7") == 2
        assert "the input file changed" in capsys.readouterr().err
        monkeypatch.setattr(screening, "_after_chunk", None)
        assert _embed(library, out, "--chunk-size", "7", "--overwrite", "--keep-parts") == 0
        assert len(pd.read_csv(out)) == 41 and len(list(screening.parts_folder(out).glob("part-*"))) == 6
    finally:
        (library / "lib.csv").write_text("id,smiles\n" + "".join(f"{i},{s}\n" for i, s in zip(IDS, LIBRARY)))


def test_processes_of_a_launch_share_the_chunks(library, tmp_path):
    from moleclip.training.inference.engine import EmbeddingChunks
    from moleclip.training.serving.hub import load_backbone, load_processor
    from moleclip.training.kinds import ImageKind

    spec = str(library / "tiny")
    embedder = EmbeddingChunks(ImageKind(load_backbone(spec), load_processor(spec)), batch_size=4)
    run = dict(compute=embedder, arguments={"a": 1}, chunk_rows=7, progress=False, sync=lambda: None)
    out = tmp_path / "e.parquet"
    calls = []
    with unittest.mock.patch.object(screening, "_after_chunk", calls.append):
        with pytest.raises(OSError, match="missing"):  # rank 0 alone: the odd chunks are nobody's yet
            screening.screen(library / "lib.csv", out, rank=0, world=2, **run)
        assert calls == [0, 2, 4]
        summary = screening.screen(library / "lib.csv", out, rank=1, world=2, **run)
        assert calls == [0, 2, 4, 1, 3, 5] and summary.computed == 3 and not out.exists()
        summary = screening.screen(library / "lib.csv", out, rank=0, world=2, **run)
    assert summary.computed == 0 and summary.rows == 40 and summary.skipped == 3
    assert pd.read_parquet(out)["id"].tolist() == IDS


@pytest.mark.slow
def test_accelerate_launch_with_two_cpu_processes_writes_each_row_once(library, tmp_path):
    import os
    import socket
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, ACCELERATE_USE_CPU="true", OMP_NUM_THREADS="1")
    out = tmp_path / "launched.parquet"
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port",
               str(port), "-m", "moleclip_cli.main", "embed", "--model", str(library / "tiny"), "--input",
               str(library / "lib.csv"), "--output", str(out), "--no-progress", "--batch-size", "4", "--chunk-size",
               "7", "--num-workers", "0"]
    proc = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    single = tmp_path / "single.parquet"
    assert _embed(library, single, "--chunk-size", "7", "--num-workers", "0") == 0
    launched, alone = pd.read_parquet(out), pd.read_parquet(single)
    assert launched["id"].tolist() == IDS  # every row once, in input order
    columns = [c for c in alone.columns if c.startswith("emb_")]
    np.testing.assert_allclose(launched[columns].to_numpy(float), alone[columns].to_numpy(float), rtol=1e-5, atol=1e-6)
    assert not (tmp_path / "launched.parquet.parts").exists()


# ------------------------------------------------------------------------------------------------- predict
@pytest.fixture(scope="module")
def finetuned(tmp_path_factory):
    root = tmp_path_factory.mktemp("predict")
    data = root / "train.csv"
    heavy = [len(s.replace("Cl", "X")) for s in SMILES]
    pd.DataFrame({"smiles": SMILES, "heavy": heavy}).to_csv(data, index=False)
    assert cli(["finetune", "--dataset", str(data), "--model", "tiny", "--freeze-encoder", "--seeds", "1", "2",
                "--epochs", "1", "--split", "random", "--augmentation", "none", "--no-progress", "--no-plots",
                "--batch-size", "8", "--output-dir", str(root / "run")]) == 0
    return root / "run" / "model"


def test_chunked_predict_equals_predictor_predict(finetuned, library, tmp_path, capsys):
    from moleclip.training.inference.prediction import Predictor

    predictor = Predictor.load(str(finetuned))
    assert predictor.trust is not None and predictor.domain is not None  # the ensemble and domain columns, per chunk
    expected = predictor.predict(LIBRARY, progress=False)
    out = tmp_path / "p.parquet"
    with pytest.warns(UserWarning, match="3 of 40 molecules could not be used"):
        assert cli(["predict", "--model", str(finetuned), "--input", str(library / "lib.csv"), "--output", str(out),
                    "--no-progress", "--chunk-size", "7", "--num-workers", "2", "--batch-size", "3"]) == 0
    table = pd.read_parquet(out)
    assert table["id"].tolist() == IDS and table.columns.tolist()[:2] == ["id", "smiles"]
    assert set(expected.columns) < set(table.columns)
    for name, column in expected.columns.items():
        got = table[name].to_numpy()
        if column.dtype == object:
            assert [None if v is None else v for v in got] == list(column), name
        else:
            np.testing.assert_allclose(got.astype(float), column.astype(float), rtol=1e-4, atol=1e-5, err_msg=name)
    assert sorted(s.index for s in expected.skipped) == sorted(BAD)
    assert (table["moleclip_skipped"] != "").tolist() == [i in BAD for i in range(40)]

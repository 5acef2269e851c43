"""Searching a library by structure or by picture: `training/retrieval/index.py`, `moleclip index`, `moleclip search`.

The tiny model's random weights give nearly the same embedding to every molecule (cosine ~0.9997), so a query finds
its own molecule first only when it reaches the model as the very same pixels: that is what these tests check for
SMILES and picture queries (the machinery, not retrieval quality).
"""

import hashlib
import json
import os

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

pytest.importorskip("faiss")

from moleclip_cli.main import main as cli  # noqa: E402

from moleclip.training.retrieval import index as vi  # noqa: E402

LIBRARY = ["CCO", "c1ccccc1O", "not_a_smiles", "CC(=O)Nc1ccc(O)cc1", "CCN", "OC(=O)c1ccccc1", "C1CCNCC1",
           "CC(C)Cc1ccc(cc1)C(C)C(=O)O", "Clc1ccccc1"]
IDS = [f"{i:04d}" for i in range(1, len(LIBRARY) + 1)]  # text IDs with leading zeros must survive as written


def _one_line_error(capsys, command: str) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"moleclip {command}: error: ") and "\n" not in err and "Traceback" not in err, err
    return err


def _embeddings_file(path, vectors, ids=None, extra=None, metadata=None):
    """An embeddings table as `moleclip embed` writes it: input columns, then emb_0.. (NaN rows: not embedded)."""
    n, d = vectors.shape
    frame = pd.DataFrame({"id": ids if ids is not None else [f"m{i}" for i in range(n)],
                          "smiles": [f"C{'C' * i}O" for i in range(n)], **(extra or {})})
    frame = pd.concat([frame, pd.DataFrame(vectors.astype(np.float32), columns=[f"emb_{i}" for i in range(d)])],
                      axis=1)
    if str(path).endswith(".parquet"):
        table = pa.Table.from_pandas(frame, preserve_index=False)
        if metadata is not None:
            table = table.replace_schema_metadata({**(table.schema.metadata or {}),
                                                   vi.EMBEDDED_WITH_KEY: json.dumps(metadata).encode()})
        pq.write_table(table, path)
    else:
        frame.to_csv(path, index=False)
    return path


def _structured(n, d, rng, rank=8):
    """Vectors near a low-dimensional subspace, as embeddings are (isotropic noise has no neighbours to find)."""
    basis = rng.standard_normal((rank, d))
    return (rng.standard_normal((n, rank)) @ basis + 0.05 * rng.standard_normal((n, d))).astype(np.float32)


# ------------------------------------------------------------------------------------------------- library code
def test_round_trip_keeps_ids_order_and_results(tmp_path):
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((50, 16)).astype(np.float32)
    vectors[[3, 17]] = np.nan  # two molecules embed could not draw
    path = _embeddings_file(tmp_path / "emb.csv", vectors, ids=[f"{i:04d}" for i in range(50)])
    library = vi.read_embeddings(path)
    assert library.skipped == 2 and library.vectors.shape == (48, 16)
    assert library.frame["library_row"].tolist() == [i for i in range(50) if i not in (3, 17)]
    assert library.frame["id"].tolist()[:4] == ["0000", "0001", "0002", "0004"]  # as written, in order
    assert library.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()

    built = vi.build_library_index(library, kind="exact")
    vi.save_index(built, tmp_path / "index")
    assert sorted(p.name for p in (tmp_path / "index").iterdir()) == sorted(vi.INDEX_OUTPUTS)  # no lock left
    loaded = vi.load_index(tmp_path / "index")
    manifest = loaded.manifest
    assert (manifest["count"], manifest["dimension"], manifest["metric"], manifest["kind"]) == (48, 16, "cosine",
                                                                                                "exact")
    assert manifest["embeddings"]["sha256"] == library.sha256 and manifest["embeddings"]["rows"] == 50
    assert manifest["embedded_with"] is None
    pd.testing.assert_frame_equal(loaded.library, library.frame)

    queries = rng.standard_normal((5, 16)).astype(np.float32)
    np.testing.assert_array_equal(built.search(queries, 7)[1], loaded.search(queries, 7)[1])
    # exact cosine: each library vector finds itself first, with similarity 1
    scores, positions = loaded.search(library.vectors, 1)
    assert positions[:, 0].tolist() == list(range(48))
    np.testing.assert_allclose(scores[:, 0], 1.0, atol=1e-5)
    # and the ranking is numpy's
    unit = library.vectors / np.linalg.norm(library.vectors, axis=1, keepdims=True)
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    expected = np.argsort(-(q @ unit.T), axis=1)[:, :7]
    np.testing.assert_array_equal(loaded.search(queries, 7)[1], expected)


def test_l2_scores_are_euclidean_distances(tmp_path):
    rng = np.random.default_rng(1)
    vectors = rng.standard_normal((30, 8)).astype(np.float32)
    library = vi.read_embeddings(_embeddings_file(tmp_path / "emb.parquet", vectors))
    index = vi.build_library_index(library, metric="l2", kind="exact")
    query = rng.standard_normal((1, 8)).astype(np.float32)
    scores, positions = index.search(query, 5)
    distances = np.linalg.norm(vectors - query, axis=1)
    assert positions[0].tolist() == np.argsort(distances)[:5].tolist()
    np.testing.assert_allclose(scores[0], np.sort(distances)[:5], rtol=1e-4)


def test_hits_table_keeps_library_columns_in_their_order_and_renames_clashes(tmp_path):
    """The library's columns follow the hit columns as the library has them (its ID column before its SMILES here),
    not with the SMILES moved first; the score is float32, the precision of the embeddings it comes from."""
    vectors = np.eye(4, dtype=np.float32)
    path = _embeddings_file(tmp_path / "emb.parquet", vectors, ids=["a", "b", "c", "d"],
                            extra={"score": [0.5, 1.5, 2.5, 3.5], "rank": ["x", "y", "z", "w"]})
    index = vi.build_library_index(vi.read_embeddings(path))
    hits = index.hits(vectors[[2, 0]], 2, [vi.Query("q1", "smiles"), vi.Query("q2.png", "picture")])
    assert list(hits.columns) == ["query_number", "query", "query_type", "rank", "score", "library_row", "id",
                                  "smiles", "library_score", "library_rank"]
    assert hits["score"].dtype == np.float32
    assert hits["query_number"].tolist() == [1, 1, 2, 2] and hits["rank"].tolist() == [1, 2, 1, 2]
    assert hits["id"].tolist()[::2] == ["c", "a"] and hits["library_score"].tolist()[::2] == [2.5, 0.5]
    assert hits["query_type"].tolist() == ["smiles", "smiles", "picture", "picture"]


def test_hnsw_recall_above_floor_and_auto_cutoff(tmp_path):
    rng = np.random.default_rng(2)
    vectors = _structured(3000, 32, rng)
    queries = _structured(100, 32, rng)
    exact = vi.build_faiss_index(vectors, kind="exact")
    hnsw = vi.LibraryIndex(vi.build_faiss_index(vectors, kind="hnsw"), pd.DataFrame(index=range(3000)),
                           {"metric": "cosine", "kind": "hnsw"})
    truth = exact.search(vi._prepared(queries, "cosine"), 10)[1]
    found = hnsw.search(queries, 10)[1]
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, truth)])
    assert recall >= 0.95, recall
    narrow = hnsw.search(queries, 10, ef_search=10)[1]  # fewer candidates: allowed, and never fewer than k hits
    assert (narrow >= 0).all()

    cutoff = vi.AUTO_HNSW_VALUES
    assert vi.choose_kind("auto", cutoff // 512, 512) == "exact"
    assert vi.choose_kind("auto", cutoff // 512 + 1, 512) == "hnsw"
    assert vi.choose_kind("exact", 10**9, 512) == "exact" and vi.choose_kind("hnsw", 5, 32) == "hnsw"


def test_library_refusals(tmp_path):
    rng = np.random.default_rng(3)
    good = _embeddings_file(tmp_path / "emb.csv", rng.standard_normal((5, 4)))
    with pytest.raises(ValueError, match="holds no SMILES"):
        vi.read_embeddings(tmp_path / "emb.npy")
    pd.DataFrame({"smiles": ["CCO"], "x": [1.0]}).to_csv(tmp_path / "plain.csv", index=False)
    with pytest.raises(ValueError, match="no embedding columns"):
        vi.read_embeddings(tmp_path / "plain.csv")
    gap = pd.read_csv(good, dtype=str).drop(columns=["emb_1"])
    gap.to_csv(tmp_path / "gap.csv", index=False)
    with pytest.raises(ValueError, match="emb_1 is missing"):
        vi.read_embeddings(tmp_path / "gap.csv")
    partial = pd.read_csv(good, dtype=str)
    partial.loc[2, "emb_3"] = ""
    partial.to_csv(tmp_path / "partial.csv", index=False)
    with pytest.raises(ValueError, match="line 4 has a partly empty"):
        vi.read_embeddings(tmp_path / "partial.csv")

    index = vi.build_library_index(vi.read_embeddings(good))
    for bad_k in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="k must be"):
            index.search(np.ones((1, 4)), bad_k)
    with pytest.raises(ValueError, match="has 4"):
        index.search(np.ones((1, 3)), 1)
    with pytest.raises(ValueError, match="only applies to an HNSW"):
        index.search(np.ones((1, 4)), 1, ef_search=50)
    assert index.search(np.ones((1, 4)), 99)[1].shape == (1, 5)  # k above the library size: all of it

    vi.save_index(index, tmp_path / "idx")
    with pytest.raises(FileExistsError, match="--overwrite"):
        vi.save_index(index, tmp_path / "idx")
    vi.save_index(index, tmp_path / "idx", overwrite=True)
    (tmp_path / "idx" / vi.INDEX_FILE).write_bytes(b"not an index")
    with pytest.raises(ValueError, match="damaged"):
        vi.load_index(tmp_path / "idx")
    (tmp_path / "idx" / vi.MANIFEST_FILE).unlink()
    with pytest.raises(ValueError, match="no manifest.json"):
        vi.load_index(tmp_path / "idx")
    with pytest.raises(FileNotFoundError, match="index not found"):
        vi.load_index(tmp_path / "absent")


def test_missing_faiss_names_the_extra(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "faiss", None)  # what `import faiss` meets where it is not installed
    with pytest.raises(ImportError, match=r'pip install "moleclip\[index\]"'):
        vi.build_faiss_index(np.ones((2, 3)))


# ------------------------------------------------------------------------------------------------------ pictures
def test_read_picture_whitens_transparency_and_pads_to_a_square(tmp_path):
    wide = np.full((50, 100, 4), 0, dtype=np.uint8)  # fully transparent black: naive RGB conversion gives black
    wide[20:30, 40:60] = (200, 0, 0, 255)
    Image.fromarray(wide, "RGBA").save(tmp_path / "wide.png")
    picture = np.asarray(vi.read_picture(tmp_path / "wide.png"))
    assert picture.shape == (100, 100, 3)
    assert (picture[:25] == 255).all() and (picture[75:] == 255).all()  # centred, white above and below
    assert (picture[45:55, 40:60] == (200, 0, 0)).all() and (picture[30:45] == 255).all()

    (tmp_path / "fake.png").write_text("not a picture")
    with pytest.raises(OSError, match="cannot read picture"):
        vi.read_picture(tmp_path / "fake.png")
    with pytest.raises(FileNotFoundError, match="picture not found"):
        vi.read_picture(tmp_path / "absent.png")
    Image.fromarray(np.full((8, 8), 40000, dtype=np.uint16)).save(tmp_path / "deep.png")  # 16-bit grey
    with pytest.raises(ValueError, match="8 bits"):
        vi.read_picture(tmp_path / "deep.png")
    assert vi.is_picture("Figure 2.PNG") and vi.is_picture("a/b.jpeg") and not vi.is_picture("c1ccccc1O")


# ------------------------------------------------------------------------------------------- command line, tiny
@pytest.fixture(scope="module")
def library(tmp_path_factory):
    """A saved tiny model, an embedded library (one molecule embed could not draw) and its index."""
    root = tmp_path_factory.mktemp("library")
    model = root / "tiny"
    assert cli(["init", "--backbone", "tiny", "--output-dir", str(model), "--pseudo-label-classes"]) == 0
    (root / "lib.csv").write_text("id,SMILES\n" + "".join(f"{i},{s}\n" for i, s in zip(IDS, LIBRARY)))
    assert cli(["embed", "--model", str(model), "--input", str(root / "lib.csv"), "--output", str(root / "emb.csv"),
                "--no-progress"]) == 0
    assert cli(["index", "--embeddings", str(root / "emb.csv"), "--output", str(root / "index")]) == 0
    return root, model


def test_search_by_smiles_and_by_picture_finds_the_molecule_first(library, tmp_path, capsys):
    from moleclip.training.serving.hub import load_processor

    root, model = library
    processor = load_processor(str(model))
    processor.to_pil("CC(=O)Nc1ccc(O)cc1").save(tmp_path / "paracetamol.png")  # drawn by the package's renderer
    drawing = np.asarray(processor.to_pil("Clc1ccccc1"))
    # the same drawing with its white made transparent: it must reach the model as the same pixels
    rgba = np.dstack([drawing, np.where((drawing == 255).all(axis=2), 0, 255).astype(np.uint8)])
    rgba[(drawing == 255).all(axis=2)] = 0
    Image.fromarray(rgba, "RGBA").save(tmp_path / "chloro.png")
    out = tmp_path / "hits.csv"
    capsys.readouterr()
    assert cli(["search", "--index", str(root / "index"), "--model", str(model), "--query", "OC(=O)c1ccccc1",
                "--query", str(tmp_path / "paracetamol.png"), "--query", str(tmp_path / "chloro.png"), "-k", "3",
                "--output", str(out), "--no-progress"]) == 0
    assert "wrote 9 hits for 3 queries" in capsys.readouterr().out
    hits = pd.read_csv(out, dtype={"id": str})
    assert list(hits.columns) == ["query_number", "query", "query_type", "rank", "score", "library_row", "id", "SMILES"]
    assert hits["query_type"].tolist() == ["smiles"] * 3 + ["picture"] * 6
    assert hits["rank"].tolist() == [1, 2, 3] * 3
    first = hits[hits["rank"] == 1]
    assert first["SMILES"].tolist() == ["OC(=O)c1ccccc1", "CC(=O)Nc1ccc(O)cc1", "Clc1ccccc1"]
    assert first["id"].tolist() == ["0006", "0004", "0009"]  # IDs as written, with their leading zeros
    assert first["library_row"].tolist() == [5, 3, 8]  # the row in the embeddings file, counting the skipped one
    np.testing.assert_allclose(first["score"], 1.0, atol=1e-5)
    assert (hits.groupby("query_number")["score"].apply(lambda s: s.is_monotonic_decreasing)).all()


def test_search_queries_file_and_k_above_library_size(library, tmp_path, capsys):
    from moleclip.training.serving.hub import load_processor

    root, model = library
    load_processor(str(model)).to_pil("CCN").save(tmp_path / "ethylamine.png")
    (tmp_path / "queries.csv").write_text("name,query\nfirst,CCO\nsecond,ethylamine.png\n")  # paths: the file's folder
    out = tmp_path / "hits.parquet"
    assert cli(["search", "--index", str(root / "index"), "--model", str(model), "--queries",
                str(tmp_path / "queries.csv"), "--query-column", "query", "-k", "50", "--output", str(out),
                "--no-progress"]) == 0
    assert "more than the 8 molecules" in capsys.readouterr().out
    hits = pd.read_parquet(out)
    assert len(hits) == 16 and hits.groupby("query_number").size().tolist() == [8, 8]
    assert hits[hits["rank"] == 1]["SMILES"].tolist() == ["CCO", "CCN"]
    assert sorted(hits[hits["query_number"] == 1]["library_row"]) == [0, 1, 3, 4, 5, 6, 7, 8]


def test_search_refusals_are_one_line(library, tmp_path, capsys):
    root, model = library
    index = str(root / "index")
    base = ["search", "--index", index, "--model", str(model), "--output", str(tmp_path / "h.csv"), "--no-progress"]
    cases = [
        (["--query", "C1CC"], "--query 1: SMILES 'C1CC' could not be parsed"),
        (["--query", "CCO", "--query", str(tmp_path / "absent.png")], "--query 2: picture not found"),
        (["--query", "CCO", "-k", "0"], "-k must be at least 1"),
        ([], "give at least one --query"),
        (["--query", "CCO", "--ef-search", "64"], "only applies to an HNSW index"),
    ]
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
    cases.append((["--query", str(tmp_path / "broken.jpg")], "cannot read picture"))
    for extra, message in cases:
        assert cli([*base, *extra]) == 2, extra
        assert message in _one_line_error(capsys, "search")
    assert not (tmp_path / "h.csv").exists()

    assert cli(["search", "--index", index, "--model", "tiny", "--query", "CCO", "--output",
                str(tmp_path / "h.csv")]) == 2
    assert "randomly initialised preset" in _one_line_error(capsys, "search")
    assert cli(["search", "--index", index, "--query", "CCO", "--output", str(tmp_path / "h.csv")]) == 2
    assert "--model is required" in _one_line_error(capsys, "search")

    # an index of 16-dimensional embeddings cannot be searched with a 32-dimensional model
    other = _embeddings_file(tmp_path / "e16.parquet", np.random.default_rng(4).standard_normal((6, 16)))
    assert cli(["index", "--embeddings", str(other), "--output", str(tmp_path / "i16")]) == 0
    assert cli(["search", "--index", str(tmp_path / "i16"), "--model", str(model), "--query", "CCO", "--output",
                str(tmp_path / "h.csv")]) == 2
    assert "32-dimensional embeddings but" in _one_line_error(capsys, "search")


def test_index_command_refuses_and_overwrites(library, tmp_path, capsys):
    root, _ = library
    embeddings = str(root / "emb.csv")
    capsys.readouterr()
    assert cli(["index", "--embeddings", embeddings, "--output", str(root / "index")]) == 2
    assert "already holds an index" in _one_line_error(capsys, "index")
    target = tmp_path / "new" / "index"
    assert cli(["index", "--embeddings", str(tmp_path / "absent.parquet"), "--output", str(target)]) == 2
    assert not (tmp_path / "new").exists()  # a failed build leaves no folder behind
    capsys.readouterr()
    assert cli(["index", "--embeddings", embeddings, "--output", str(target), "--kind", "hnsw"]) == 0
    assert "1 row of" in capsys.readouterr().out  # the molecule embed could not draw
    assert cli(["index", "--embeddings", embeddings, "--output", str(target), "--metric", "l2", "--overwrite"]) == 0
    manifest = json.loads((target / "manifest.json").read_text())
    assert (manifest["kind"], manifest["metric"], manifest["count"]) == ("exact", "l2", 8)


def test_embeddings_that_record_their_model_need_no_model_option(library, tmp_path):
    root, model = library
    table = pd.read_csv(root / "emb.csv", dtype=str)
    columns = [c for c in table.columns if c.startswith("emb_")]
    kept = table[table[columns[0]] != ""].reset_index(drop=True)
    _embeddings_file(tmp_path / "emb.parquet", kept[columns].astype(np.float32).to_numpy(), ids=kept["id"].tolist(),
                     metadata={"model": str(model), "r_groups": False})
    assert cli(["index", "--embeddings", str(tmp_path / "emb.parquet"), "--output", str(tmp_path / "idx")]) == 0
    assert json.loads((tmp_path / "idx" / "manifest.json").read_text())["embedded_with"]["model"] == str(model)
    assert cli(["search", "--index", str(tmp_path / "idx"), "--query", "CCO", "--output", str(tmp_path / "h.csv"),
                "--no-progress"]) == 0


def test_embed_records_what_made_the_embeddings_and_search_uses_it(library, tmp_path, capsys):
    root, model = library
    out = tmp_path / "emb.parquet"
    assert cli(["embed", "--model", str(model), "--input", str(root / "lib.csv"), "--output", str(out),
                "--no-progress", "--standardize", "parent"]) == 0
    from moleclip.training.retrieval.index import read_embeddings

    recorded = read_embeddings(out).embedded_with
    assert recorded == {"model": str(model.resolve()), "projection_dim": recorded["projection_dim"], "r_groups": False,
                        "standardize": "parent", "encoder_sha256": recorded["encoder_sha256"]}
    assert cli(["index", "--embeddings", str(out), "--output", str(tmp_path / "idx")]) == 0
    capsys.readouterr()
    # a salt query is prepared as the library was (its parent): it finds paracetamol first, with score 1
    assert cli(["search", "--index", str(tmp_path / "idx"), "--query", "CC(=O)Nc1ccc(O)cc1.Cl", "-k", "1",
                "--output", str(tmp_path / "h.csv"), "--no-progress"]) == 0
    hits = pd.read_csv(tmp_path / "h.csv", dtype={"id": str})
    assert hits["id"].tolist() == ["0004"] and hits["score"].iloc[0] == pytest.approx(1.0, abs=1e-5)
    # another model of the same size gives embeddings that mean nothing next to the library's: refused
    other = tmp_path / "other"
    assert cli(["init", "--backbone", "tiny", "--output-dir", str(other), "--pseudo-label-classes", "--seed",
                "1"]) == 0
    capsys.readouterr()
    assert cli(["search", "--index", str(tmp_path / "idx"), "--model", str(other), "--query", "CCO",
                "--output", str(tmp_path / "h2.csv"), "--no-progress"]) == 2
    assert "is not the model that embedded the library" in _one_line_error(capsys, "search")
    assert not (tmp_path / "h2.csv").exists()
    # the same model elsewhere (a copy, a relative path) is the same model: no refusal, no warning
    import shutil

    shutil.copytree(model, tmp_path / "copy")
    for given in (str(tmp_path / "copy"), os.path.relpath(model)):
        assert cli(["search", "--index", str(tmp_path / "idx"), "--model", given, "--query", "CCO", "--output",
                    str(tmp_path / "h3.csv"), "--no-progress"]) == 0
        assert "warning" not in capsys.readouterr().out
    # R-group labels the library was not drawn with: refused, not silently compared
    assert cli(["search", "--index", str(tmp_path / "idx"), "--query", "CCO", "--r-groups", "--output",
                str(tmp_path / "h4.csv"), "--no-progress"]) == 2
    assert "embedded without R-group labels" in _one_line_error(capsys, "search")
    # the recorded model's folder overwritten with other weights since: refused too
    shutil.rmtree(model)
    shutil.copytree(other, model)
    try:
        assert cli(["search", "--index", str(tmp_path / "idx"), "--query", "CCO", "--output",
                    str(tmp_path / "h5.csv"), "--no-progress"]) == 2
        assert "the encoder's weights differ" in _one_line_error(capsys, "search")
    finally:
        shutil.rmtree(model)
        shutil.copytree(tmp_path / "copy", model)


@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_tied_hits_go_by_library_order_whatever_k(tmp_path, metric):
    rng = np.random.default_rng(3)
    vectors = rng.standard_normal((6, 8)).astype(np.float32)
    vectors[[2, 4]] = vectors[0]  # one molecule three times in the library (three IDs)
    index = vi.build_library_index(vi.read_embeddings(_embeddings_file(tmp_path / "emb.parquet", vectors)),
                                   metric=metric, kind="exact")
    found = {k: index.search(vectors[:1], k)[1][0].tolist() for k in (1, 2, 3, 6, 10)}
    assert found[1] == [0] and found[2] == [0, 2] and found[3] == [0, 2, 4]
    assert found[6][:3] == [0, 2, 4] and found[10] == found[6]  # k above the library: every molecule once
    hits = index.hits(vectors[:1], 3)
    assert hits["id"].tolist() == ["m0", "m2", "m4"] and hits["rank"].tolist() == [1, 2, 3]
    # a tie at the k-th place behind a nearer molecule: faiss's heap kept the later of the two for k=2
    angles = np.array([0.2, 0.5, 0.2, 0.1, 0.2001])
    plane = np.stack([np.cos(angles), np.sin(angles)], axis=1).astype(np.float32)
    index = vi.LibraryIndex(vi.build_faiss_index(plane, metric, "exact"), pd.DataFrame(index=range(5)),
                            {"metric": metric, "kind": "exact"})
    found = [index.search(np.array([[1.0, 0.0]]), k)[1][0].tolist() for k in range(1, 6)]
    assert found == [[3], [3, 0], [3, 0, 2], [3, 0, 2, 4], [3, 0, 2, 4, 1]]


def test_embeddings_are_read_in_chunks_with_the_same_result(tmp_path, monkeypatch):
    import tracemalloc

    rng = np.random.default_rng(5)
    vectors = rng.standard_normal((3000, 128)).astype(np.float32)
    vectors[[1, 2, 1500]] = np.nan
    path = _embeddings_file(tmp_path / "emb.csv", vectors, ids=[f"{i:05d}" for i in range(3000)])

    def read(rows):
        monkeypatch.setattr(vi, "READ_CHUNK_ROWS", rows)
        tracemalloc.start()
        try:
            return vi.read_embeddings(path), tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    whole, whole_peak = read(10**6)
    chunked, chunked_peak = read(200)
    # the file's text is never held whole: a CSV's cells as Python strings take ~15 times their numbers' memory
    assert chunked_peak < 0.4 * whole_peak, chunked_peak / whole_peak
    pd.testing.assert_frame_equal(chunked.frame, whole.frame)
    np.testing.assert_array_equal(chunked.vectors, whole.vectors)
    assert chunked.skipped == 3 and chunked.frame["library_row"].tolist()[1498:1500] == [1501, 1502]
    assert chunked.frame["id"].tolist()[:2] == ["00000", "00003"]
    broken = pd.read_csv(path, dtype=str, keep_default_na=False)
    broken.loc[2500, "emb_7"] = ""
    broken.to_csv(tmp_path / "broken.csv", index=False)
    with pytest.raises(ValueError, match="line 2502 has a partly empty"):
        vi.read_embeddings(tmp_path / "broken.csv")
    (tmp_path / "empty.csv").write_text("smiles,x\n")
    with pytest.raises(ValueError, match="no embedding columns"):
        vi.read_embeddings(tmp_path / "empty.csv")
    (tmp_path / "header.csv").write_text("smiles,emb_0\n")
    with pytest.raises(ValueError, match="no row has an embedding"):
        vi.read_embeddings(tmp_path / "header.csv")


def test_a_csv_library_embedded_with_standardisation_standardises_the_queries(library, tmp_path, capsys):
    root, model = library
    out = tmp_path / "emb.csv"  # a CSV records no settings, but carries the standardised SMILES
    assert cli(["embed", "--model", str(model), "--input", str(root / "lib.csv"), "--output", str(out),
                "--no-progress", "--standardize", "parent"]) == 0
    assert cli(["index", "--embeddings", str(out), "--output", str(tmp_path / "idx")]) == 0
    capsys.readouterr()
    assert cli(["search", "--index", str(tmp_path / "idx"), "--model", str(model), "--query",
                "CC(=O)Nc1ccc(O)cc1.Cl", "-k", "1", "--output", str(tmp_path / "h.csv"), "--no-progress"]) == 0
    assert "standardised the same way" in capsys.readouterr().out
    hits = pd.read_csv(tmp_path / "h.csv", dtype={"id": str})
    assert hits["id"].tolist() == ["0004"] and hits["score"].iloc[0] == pytest.approx(1.0, abs=1e-5)


def test_overwrite_never_removes_the_embeddings_it_reads(library, tmp_path, capsys):
    root, _ = library
    target = tmp_path / "index"
    assert cli(["index", "--embeddings", str(root / "emb.csv"), "--output", str(target)]) == 0
    library_file = target / "library.parquet"  # a user indexing the old index's own library table again
    before = library_file.read_bytes()
    capsys.readouterr()
    assert cli(["index", "--embeddings", str(library_file), "--output", str(target), "--overwrite"]) == 2
    assert "--embeddings" in capsys.readouterr().err
    assert library_file.read_bytes() == before


def test_a_missing_smiles_column_message_sums_the_embedding_columns_up(tmp_path):
    """512 emb_ names would bury the columns a user looks for: they are listed as one run."""
    path = _embeddings_file(tmp_path / "emb.csv", np.eye(5, dtype=np.float32))
    frame = pd.read_csv(path, dtype=str).rename(columns={"smiles": "structure"})
    frame.to_csv(path, index=False)
    with pytest.raises(ValueError, match=r"'id', 'structure', emb_0\.\.emb_4 \(5 columns\)") as caught:
        vi.read_embeddings(path)
    assert "'emb_1'" not in str(caught.value)

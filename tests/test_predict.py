"""`moleclip predict`: a finetuned folder and a table of new SMILES in, the table with predictions out."""

import numpy as np
import pandas as pd
import pytest
import torch

from moleclip import MoleCLIPForPropertyPrediction
from moleclip_cli.main import main as cli

from tests.tiny_models import finetune_tiny_models
NEW = ["CCCCCCCCO", "not a molecule", "c1ccccc1CCN", "C1CC"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("predict")
    finetune_tiny_models(root)
    new = root / "new.csv"
    pd.DataFrame({"id": range(len(NEW)), "SMILES": NEW}).to_csv(new, index=False)
    return root, new


def test_predict_new_smiles_keeps_every_row(trained, capsys):
    root, new = trained
    out = root / "pred.csv"
    with pytest.warns(UserWarning, match="line 3 'not a molecule'"):  # reported by its line in the file
        assert cli(["predict", "--model", str(root / "moleclip" / "model"), "--input", str(new), "--output", str(out),
                    "--smiles-column", "SMILES", "--batch-size", "2", "--no-progress", "--no-uncertainty",
                    "--no-domain"]) == 0
    table = pd.read_csv(out)
    assert list(table.columns) == ["id", "SMILES", "predicted_heavy", "moleclip_skipped"]
    # by default the folder's ensemble (one seed here) and applicability domain come along
    full = root / "pred_full.csv"
    assert cli(["predict", "--model", str(root / "moleclip" / "model"), "--input", str(new), "--output", str(full),
                "--smiles-column", "SMILES", "--no-progress"]) == 0
    with_trust = pd.read_csv(full)
    assert {"predicted_heavy_spread", "predicted_heavy_lower", "predicted_heavy_upper", "in_domain",
            "nearest_similarity", "nearest_training_smiles", "nearest_training_heavy"} <= set(with_trust.columns)
    np.testing.assert_allclose(with_trust.predicted_heavy, table.predicted_heavy, rtol=1e-6)  # one member: itself
    assert len(table) == len(NEW)
    valid = [0, 2]
    assert table.predicted_heavy.isna().tolist() == [False, True, False, True]
    assert table.moleclip_skipped.isna().tolist() == [True, False, True, False]  # the reason where there is none

    from moleclip.training.serving.hub import load_processor

    model = MoleCLIPForPropertyPrediction.from_pretrained(root / "moleclip" / "model").eval()
    pixels = load_processor(str(root / "moleclip" / "model"))([NEW[i] for i in valid])["pixel_values"]
    with torch.no_grad():
        expected = model(pixel_values=pixels).logits[:, 0].numpy()
    np.testing.assert_allclose(table.predicted_heavy.to_numpy()[valid], expected, rtol=1e-4, atol=1e-5)


def test_predict_with_the_fingerprint_baseline(trained):
    root, new = trained
    out = root / "fp_pred.parquet"
    assert cli(["predict", "--model", str(root / "fp" / "model"), "--input", str(new), "--output", str(out),
                "--smiles-column", "SMILES", "--no-progress"]) == 0
    table = pd.read_parquet(out)
    assert table.predicted_heavy.notna().tolist() == [True, False, True, False]


def test_predict_refuses_an_encoder_without_trained_head(tmp_path, trained, capsys):
    root, new = trained
    assert cli(["init", "--backbone", "tiny", "--output-dir", str(tmp_path / "encoder")]) == 0
    code = cli(["predict", "--model", str(tmp_path / "encoder"), "--input", str(new), "--output",
                str(tmp_path / "x.csv"), "--smiles-column", "SMILES"])
    assert code == 2
    err = capsys.readouterr().err
    assert "not a finetuned property model" in err and "Traceback" not in err


def test_predict_keeps_text_columns_and_reports_missing_model(trained, tmp_path, capsys):
    root, _ = trained
    new = tmp_path / "ids.csv"
    new.write_text("id,smiles\n0001,CCO\n0002,NA\n")
    out = tmp_path / "p.csv"
    assert cli(["predict", "--model", str(root / "fp" / "model"), "--input", str(new), "--output", str(out),
                "--no-progress"]) == 0
    lines = out.read_text().splitlines()
    assert lines[1].startswith("0001,CCO,") and lines[2].startswith("0002,NA,,")  # IDs and the SMILES "NA" as written
    capsys.readouterr()
    missing = tmp_path / "runs" / "x" / "model"
    assert cli(["predict", "--model", str(missing), "--input", str(new), "--output", str(tmp_path / "q" / "p.csv")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"moleclip predict: error: not found: {missing}" and not (tmp_path / "q").exists()


def test_moleclip_models_judge_the_domain_in_their_own_embedding_space(trained, tmp_path):
    root, _ = trained
    from tests.tiny_models import HEAVY, SMILES

    model = root / "moleclip" / "model"
    assert (model / "applicability_embedding" / "applicability.json").is_file()
    assert not (root / "fp" / "model" / "applicability_embedding").exists()  # fingerprints: Tanimoto only
    from moleclip.training.inference.prediction import Predictor

    predictor = Predictor.load(str(model))
    train = predictor.embedding_domain.reference_ids
    query = [train[0], "not a molecule", "O=C(O)c1ccccc1Cl"]
    columns = predictor.predict(query, progress=False).columns
    assert columns["nearest_embedding_training_smiles"][0] == train[0]  # a training molecule finds itself
    assert columns["nearest_embedding_similarity"][0] == pytest.approx(1.0, abs=1e-5)
    heavy = dict(zip(SMILES, HEAVY))
    assert columns["nearest_embedding_training_heavy"][0] == heavy[train[0]]  # its measured value beside it
    assert columns["in_domain_embedding"][0]
    assert columns["in_domain_embedding"][1] is None and np.isnan(columns["nearest_embedding_similarity"][1])
    assert 0 < columns["nearest_embedding_similarity"][2] <= 1 and set(train) <= set(SMILES)
    out = tmp_path / "p.csv"
    pd.DataFrame({"smiles": query}).to_csv(out.with_suffix(".in.csv"), index=False)
    assert cli(["predict", "--model", str(model), "--input", str(out.with_suffix(".in.csv")), "--output", str(out),
                "--no-progress"]) == 0
    written = pd.read_csv(out)
    np.testing.assert_allclose(written["nearest_embedding_similarity"], columns["nearest_embedding_similarity"],
                               rtol=1e-5)


def test_a_hub_model_predicts_with_the_ensemble_and_domain_pushed_beside_it(trained, monkeypatch):
    """`moleclip finetune --push-to-hub` uploads the ensemble and the domain with the model: predicting from the Hub
    name must use them as predicting from the folder does, not the model alone (other numbers, no intervals)."""
    from moleclip.training.inference import prediction
    from moleclip.training.inference.prediction import Predictor

    root, _ = trained
    folder = root / "fp" / "model"
    fetched = []
    monkeypatch.setattr(prediction, "snapshot_download",
                        lambda repo_id, **kwargs: fetched.append(repo_id) or str(folder))
    from_hub = Predictor.load("lab/moleclip-heavy").predict(NEW, progress=False)
    from_folder = Predictor.load(str(folder)).predict(NEW, progress=False)
    assert fetched == ["lab/moleclip-heavy"]
    assert from_hub.columns.keys() == from_folder.columns.keys() >= {"predicted_heavy_lower", "in_domain"}
    for name, values in from_folder.columns.items():
        np.testing.assert_array_equal(from_hub.columns[name], values)
    with pytest.raises(OSError, match="HF_HUB_OFFLINE"):  # the model alone, from the (offline) Hub
        Predictor.load("lab/moleclip-heavy", uncertainty=False, domain=False)
    assert fetched == ["lab/moleclip-heavy"]  # neither wanted: the repository is not fetched whole

    def offline(repo_id, **kwargs):
        raise OSError("offline, and not in the cache")

    monkeypatch.setattr(prediction, "snapshot_download", offline)
    with pytest.raises(OSError, match="cannot load 'lab/moleclip-heavy'"):
        Predictor.load("lab/moleclip-heavy", uncertainty=True)
    # nothing of it in the cache either: one error, no warning about "the model alone" that cannot load anyway
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(OSError, match="cannot load 'lab/moleclip-heavy'"):
            Predictor.load("lab/moleclip-heavy")


def test_a_preset_is_not_a_finetuned_model(capsys, tmp_path):
    (tmp_path / "in.csv").write_text("smiles\nCCO\n")
    assert cli(["predict", "--model", "tiny", "--input", str(tmp_path / "in.csv"), "--output",
                str(tmp_path / "out.csv"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "'tiny' is a randomly initialised preset, not a finetuned model" in err and "pass" in err


def test_an_unfinished_predict_does_not_resume_with_a_model_written_again(trained, tmp_path, monkeypatch, capsys):
    """The shards of an interrupted run were computed by the model as it then was: after a new finetuning into the
    same folder, resuming would mix two models' predictions in one file. The run is refused instead."""
    import shutil

    from moleclip.training.inference import screening
    from moleclip.training.kinds.baselines import FingerprintPredictor

    root, _ = trained
    folder = tmp_path / "model"
    shutil.copytree(root / "fp" / "model", folder)
    table = tmp_path / "many.csv"
    pd.DataFrame({"smiles": ["C" * k + "O" for k in range(1, 9)]}).to_csv(table, index=False)
    out = tmp_path / "p.csv"
    argv = ["predict", "--model", str(folder), "--input", str(table), "--output", str(out), "--no-progress",
            "--chunk-size", "2"]

    def killed(k):
        raise KeyboardInterrupt

    monkeypatch.setattr(screening, "_after_chunk", killed)
    assert cli(argv) != 0
    assert len(list(screening.parts_folder(out).glob("part-*"))) == 1
    monkeypatch.setattr(screening, "_after_chunk", None)
    model = FingerprintPredictor.load(folder)  # finetuned again: other weights, the same folder
    with torch.no_grad():
        model.head.layers[-1].bias.add_(5.0)
    model.save(folder)
    capsys.readouterr()
    assert cli(argv) == 2
    assert "the arguments changed" in capsys.readouterr().err and not out.exists()
    assert cli([*argv, "--overwrite"]) == 0
    fresh = pd.read_csv(out)["predicted_heavy"].to_numpy()
    shutil.rmtree(tmp_path / "again", ignore_errors=True)
    assert cli([*argv[:6], str(tmp_path / "again.csv"), "--no-progress"]) == 0
    np.testing.assert_allclose(fresh, pd.read_csv(tmp_path / "again.csv")["predicted_heavy"].to_numpy())


@pytest.fixture(scope="module")
def assay(tmp_path_factory):
    from tests.tiny_models import finetune_assay_models

    return finetune_assay_models(tmp_path_factory.mktemp("assay"))


def _shortest_float32(cell: str) -> bool:
    """Whether a written cell is the shortest text that reads back as its float32 (numpy's float32 repr)."""
    return str(np.float32(cell)) == cell


@pytest.mark.parametrize("kind", ["moleclip", "fingerprint"])
@pytest.mark.parametrize("suffix", [".csv", ".tsv"])
def test_predictions_carry_float32_digits_and_measured_values_are_written_as_the_user_wrote_them(assay, tmp_path,
                                                                                                kind, suffix):
    """A prediction comes with the digits float32 carries (-1.9776635, not -1.9776635169982910), and the nearest
    training molecule's measured value as its table had it (-2.48, not float32's -2.4800000190734863)."""
    from tests.tiny_models import ASSAY_LABELS

    out = tmp_path / f"pred{suffix}"
    assert cli(["predict", "--model", str(assay[kind]), "--input", str(assay["data"]), "--output", str(out),
                "--no-progress"]) == 0
    table = pd.read_csv(out, sep="\t" if suffix == ".tsv" else ",", dtype=str, keep_default_na=False)
    computed = ["predicted_logS", "predicted_logS_spread", "nearest_similarity"]
    computed += ["nearest_embedding_similarity"] if kind == "moleclip" else []
    for column in computed:
        cells = [c for c in table[column] if c]
        assert cells and all(_shortest_float32(c) for c in cells), (column, cells[:3])
    as_written = {repr(float(label)) for label in ASSAY_LABELS}
    measured = ["nearest_training_logS"] + (["nearest_embedding_training_logS"] if kind == "moleclip" else [])
    for column in measured:
        assert set(table[column]) <= as_written, (column, sorted(set(table[column]) - as_written)[:3])
    assert table["ID"].tolist()[:2] == ["0000", "0001"]


@pytest.mark.parametrize("kind", ["moleclip", "fingerprint"])
def test_a_model_reads_tables_with_the_smiles_column_it_was_finetuned_on(assay, tmp_path, kind):
    """Finetuned on Compound_SMILES (named with --smiles-column), the model folder remembers it: predict finds that
    column unasked; an explicit --smiles-column still wins, and a table without that column falls back to the column
    recognised by name."""
    new = tmp_path / "new.csv"
    pd.DataFrame({"Compound_SMILES": ["CCO", "CCCN"], "other": ["c1ccccc1", "C"]}).to_csv(new, index=False)
    out = tmp_path / "p.csv"
    assert cli(["predict", "--model", str(assay[kind]), "--input", str(new), "--output", str(out),
                "--no-progress", "--overwrite"]) == 0
    first = pd.read_csv(out)
    assert first.predicted_logS.notna().all() and first.moleclip_skipped.isna().all()
    assert cli(["predict", "--model", str(assay[kind]), "--input", str(new), "--output", str(out),
                "--smiles-column", "other", "--no-progress", "--overwrite"]) == 0
    explicit = pd.read_csv(out)
    assert not np.allclose(explicit.predicted_logS, first.predicted_logS)  # other molecules: other predictions
    plain = tmp_path / "plain.csv"
    pd.DataFrame({"smiles": ["CCO", "CCCN"]}).to_csv(plain, index=False)
    assert cli(["predict", "--model", str(assay[kind]), "--input", str(plain), "--output", str(out),
                "--no-progress", "--overwrite"]) == 0
    np.testing.assert_allclose(pd.read_csv(out).predicted_logS, first.predicted_logS, rtol=1e-6)


def test_embed_and_index_read_the_models_smiles_column_and_index_summarises_embedding_columns(assay, tmp_path,
                                                                                            capsys):
    """embed reads the table with the column the model was finetuned on and records it in the Parquet file, which
    index then reads with it; and where no SMILES column is found, index's message sums the emb_ columns up."""
    emb = tmp_path / "emb.parquet"
    assert cli(["embed", "--model", str(assay["moleclip"]), "--input", str(assay["data"]), "--output", str(emb),
                "--no-progress"]) == 0
    assert cli(["index", "--embeddings", str(emb), "--output", str(tmp_path / "index")]) == 0
    frame = pd.read_parquet(emb).rename(columns={"Compound_SMILES": "structure"})
    renamed = tmp_path / "renamed.parquet"
    frame.to_parquet(renamed, index=False)
    capsys.readouterr()
    assert cli(["index", "--embeddings", str(renamed), "--output", str(tmp_path / "index2")]) == 2
    err = capsys.readouterr().err
    width = sum(c.startswith("emb_") for c in frame.columns)
    assert f"emb_0..emb_{width - 1} ({width} columns)" in err and "'emb_1'" not in err

"""`moleclip app`: the page's callbacks (no browser) and, marked `browser`, the page itself in headless Chromium.

The models are the tiny ones of tests/test_predict.py (frozen tiny MoleCLIP and a fingerprint MLP, 2 epochs). The
browser test needs Chromium and chromedriver (`scripts/install_browser.sh`) and selenium (`pip install -e .[test]`);
without them it fails saying so, unless MOLECLIP_SKIP_BROWSER=1 asks for a skip.
"""

import importlib.util
import io
import os
import re
import shutil
import socket
import sys
import time
import urllib.request

import numpy as np
import pandas as pd
import pytest

from moleclip.training.serving.app import MoleculeApp, require_gradio
from moleclip.training.inference.prediction import Predictor
from moleclip_cli.main import main as cli

from tests.tiny_models import finetune_tiny_models
GOOD = ["CCCCCCCCO", "c1ccccc1CCN"]
BAD = "C1CC"  # an unclosed ring: parses as text, fails as a molecule
STEPS = 8  # integrated-gradients steps: the values checked here do not depend on them, the time does
SKIP_ENV = "MOLECLIP_SKIP_BROWSER"


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return finetune_tiny_models(tmp_path_factory.mktemp("app"))


@pytest.fixture(scope="module")
def apps(models, tmp_path_factory):
    return {kind: MoleculeApp.load(str(path), steps=STEPS, workdir=tmp_path_factory.mktemp(f"work_{kind}"))
            for kind, path in models.items()}


def expected(model, smiles):
    """What `moleclip predict` computes for these molecules: a Predictor of its own, loaded afresh."""
    return Predictor.load(str(model)).predict(smiles, progress=False)


def assert_same_columns(table: pd.DataFrame, result, rows):
    for name, values in result.columns.items():
        got = table[name].to_numpy()[rows]
        want = np.asarray(values)[rows]
        if want.dtype == object:  # in_domain (bool or None), nearest_training_smiles
            assert list(got) == list(want), name
        else:
            np.testing.assert_allclose(got.astype(float), want.astype(float), rtol=1e-5, atol=1e-6, err_msg=name)


# --------------------------------------------------------------------------------------------- callbacks, no browser
@pytest.mark.parametrize("kind", ["moleclip", "fingerprint"])
def test_pasted_smiles_give_the_predictors_values_and_bad_ones_a_message(kind, apps, models):
    app = apps[kind]
    text = f"{GOOD[0]} octanol\n{BAD} broken\n\n{GOOD[1]}\n"
    message, cards, table, csv_path = app.predict_text(text, True)
    smiles = [GOOD[0], BAD, GOOD[1]]
    assert table.smiles.tolist() == smiles and table.name.tolist() == ["octanol", "broken", ""]
    result = expected(models[kind], smiles)
    assert [s.index for s in result.skipped] == [1]
    assert_same_columns(table, result, [0, 2])
    assert {"predicted_heavy_lower", "predicted_heavy_upper", "in_domain", "nearest_similarity"} <= set(table.columns)
    assert np.isnan(table.predicted_heavy[1]) and table.moleclip_skipped[1] == result.skipped[0].reason
    # the message names the bad molecule by its line in the box (line 4 is after the blank line) and why
    assert "Predicted **2 of 3**" in message and f"line 2 `{BAD}`" in message
    assert result.skipped[0].reason.split(" (")[0] in message
    # each good molecule has its card: the drawing, an atom map, its value, and 3 nearest training molecules
    assert cards.count("class='moleclip-card'") == 2 and cards.count("moleclip-bad") == 1
    assert cards.count("<img class='moleclip-drawing'") == 2 and cards.count("<img class='moleclip-atom-map'") == 2
    shown = re.findall(r"class='moleclip-value' data-target='heavy'>([^<]+)<", cards)
    assert shown == [f"{table.predicted_heavy[i]:.3f}" for i in (0, 2)]
    neighbours = re.findall(r"<table class='moleclip-neighbours'.*?</table>", cards)
    assert len(neighbours) == 2 and all(n.count("<tr>") == 4 for n in neighbours)  # header + k = 3
    assert ("integrated gradients" if kind == "moleclip" else "Morgan-bit occlusion") in cards
    assert "CCCCCCO" in neighbours[0]  # the closest training molecules of octanol are the long alcohols
    written = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    assert written.smiles.tolist() == smiles and written.name.tolist() == ["octanol", "broken", ""]


def test_a_standardising_model_shows_the_molecule_it_predicted(models, tmp_path):
    data = models["moleclip"].parent.parent / "train.csv"
    assert cli(["finetune", "--dataset", str(data), "--split", "random", "--seeds", "1", "--epochs", "2",
                "--baseline", "fingerprint", "--standardize", "parent", "--no-progress", "--no-plots",
                "--output-dir", str(tmp_path / "std")]) == 0
    app = MoleculeApp.load(str(tmp_path / "std" / "model"), workdir=tmp_path / "work")
    message, cards, table, _ = app.predict_text("CCCO.[Na+].[Cl-] salt\nCCCO plain", True)
    assert table.moleclip_standardized_smiles.tolist() == ["CCCO", "CCCO"] and "standardised" in message
    assert table.predicted_heavy[0] == table.predicted_heavy[1]  # the salt is gone before the model sees it
    assert "→ <code class='moleclip-standardized'>CCCO</code>" in cards and cards.count("moleclip-standardized") == 1
    assert_same_columns(table, expected(tmp_path / "std" / "model", ["CCCO.[Na+].[Cl-]", "CCCO"]), [0, 1])


def test_atom_maps_can_be_turned_off(apps):
    message, cards, table, _ = apps["moleclip"].predict_text(GOOD[0], False)
    assert "moleclip-drawing" in cards and "moleclip-atom-map" not in cards and "Predicted **1 of 1**" in message


@pytest.mark.parametrize("text", [None, "", "  \n\n "])
def test_an_empty_box_says_so(text, apps):
    message, cards, table, csv_path = apps["fingerprint"].predict_text(text, True)
    assert message.startswith("**Nothing to predict:**") and cards == "" and table.empty and csv_path is None


def test_only_bad_molecules_give_messages_and_no_download(apps):
    message, cards, table, csv_path = apps["fingerprint"].predict_text(f"{BAD}\nnot_smiles", True)
    assert "Predicted **0 of 2**" in message and "line 1" in message and "line 2" in message
    assert csv_path is None and "Nothing to download" in message and cards.count("moleclip-bad") == 2


def test_a_table_upload_keeps_order_and_ids(apps, models, tmp_path):
    ids = ["0007", "0001", "NA", "0003"]
    structures = [GOOD[1], BAD, GOOD[0], "CCO"]
    upload = tmp_path / "library.csv"
    pd.DataFrame({"compound_id": ids, "Structure": structures, "note": ["a", "b", "", "d"]}).to_csv(upload,
                                                                                                    index=False)
    app = apps["moleclip"]
    # no column named like a SMILES column: the message lists the columns, and the app keeps serving
    message, _, _, csv_path = app.predict_table(str(upload), "", False)
    assert message.startswith("**Error:**") and "Structure" in message and csv_path is None
    assert "SMILES column box" in message and str(tmp_path) not in message  # the page's words, not the server's
    message, cards, table, csv_path = app.predict_table(str(upload), "Structure", True)
    assert "Predicted **3 of 4**" in message and "line 3" in message  # the header is line 1
    assert "<b>#1</b> · 0007" in cards  # the card is titled by the ID
    written = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    assert written.compound_id.tolist() == ids and written.Structure.tolist() == structures  # order, IDs as written
    assert written.columns[:3].tolist() == ["compound_id", "Structure", "note"] and written.note.tolist()[2] == ""
    result = expected(models["moleclip"], structures)
    assert_same_columns(table, result, [0, 2, 3])
    np.testing.assert_allclose(written.predicted_heavy.replace("", "nan").astype(float),
                               np.asarray(result.columns["predicted_heavy"], dtype=float), rtol=1e-5)
    # Parquet works the same way; an unreadable file and no file at all are messages too
    parquet = tmp_path / "library.parquet"
    pd.DataFrame({"smiles": structures, "id": ids}).to_parquet(parquet)
    message, _, table, _ = app.predict_table(str(parquet), None, False)
    assert "Predicted **3 of 4**" in message and table.id.tolist() == ids
    garbage = tmp_path / "garbage.csv"
    garbage.write_bytes(b"\xff\xfe\x00\x81 not text")
    assert apps["moleclip"].predict_table(str(garbage), None, False)[0].startswith("**Error:**")
    assert apps["moleclip"].predict_table(None, None, False)[0].startswith("**Nothing to predict:**")


def test_an_input_column_the_results_would_overwrite_is_refused(apps, tmp_path):
    upload = tmp_path / "clash.csv"
    pd.DataFrame({"smiles": ["CCO"], "predicted_heavy": ["1.0"]}).to_csv(upload, index=False)
    message = apps["fingerprint"].predict_table(str(upload), None, False)[0]
    assert message.startswith("**Error:**") and "predicted_heavy" in message


def test_the_page_is_built_without_launching(apps):
    pytest.importorskip("gradio")
    from moleclip.training.serving.app import build_app

    blocks = build_app(apps["fingerprint"])
    assert blocks.moleclip_app is apps["fingerprint"]
    assert {"predict", "predict_table"} <= {fn.api_name for fn in blocks.fns.values()}


def test_without_gradio_the_error_says_how_to_install(monkeypatch, models, capsys):
    monkeypatch.setitem(sys.modules, "gradio", None)  # import gradio now raises ImportError
    with pytest.raises(ImportError, match=re.escape('pip install "moleclip[app]"')):
        require_gradio()
    assert cli(["app", "--model", str(models["fingerprint"])]) == 2
    assert 'pip install "moleclip[app]"' in capsys.readouterr().err


def test_app_command_reports_a_missing_model(tmp_path, capsys):
    pytest.importorskip("gradio")
    missing = tmp_path / "runs" / "x" / "model"
    assert cli(["app", "--model", str(missing)]) == 2
    assert capsys.readouterr().err.strip() == f"moleclip app: error: not found: {missing}"
    # a Hub name is downloaded whole (ensemble and domain too); offline and uncached, that is one line as well
    assert cli(["app", "--model", "lab/no-such-moleclip-model"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("moleclip app: error: cannot load 'lab/no-such-moleclip-model'") and "\n" not in err


def test_space_app_takes_the_model_from_the_environment_or_argument(monkeypatch):
    from moleclip.model_cards import space_app

    monkeypatch.setenv("MOLECLIP_MODEL", "lab/moleclip-esol")
    assert space_app.model_spec([]) == "lab/moleclip-esol"
    assert space_app.model_spec(["runs/esol/model"]) == "runs/esol/model"
    monkeypatch.delenv("MOLECLIP_MODEL")
    with pytest.raises(SystemExit, match="MOLECLIP_MODEL"):
        space_app.model_spec([])


# ------------------------------------------------------------------------------------------ the page, in a browser
@pytest.fixture(scope="module")
def browser_tools():
    """(browser, driver) executables, or a failure that says how to get them; a skip only when asked for. A module
    fixture listed before the models, so that a missing browser is reported before anything is trained."""
    browser = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)),
                   None)
    driver = shutil.which("chromedriver")
    if importlib.util.find_spec("selenium") is None:
        missing = 'selenium (pip install -e ".[test]")'
    else:
        missing = None if browser and driver else "Chromium and chromedriver (run scripts/install_browser.sh)"
    if missing is None:
        return browser, driver
    if os.environ.get(SKIP_ENV) == "1":
        pytest.skip(f"{SKIP_ENV}=1: browser test skipped on request ({missing} missing)")
    pytest.fail(f"the browser test needs {missing}; or set {SKIP_ENV}=1 to skip it knowingly", pytrace=False)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.browser
@pytest.mark.slow
def test_the_page_in_a_real_browser(browser_tools, models, apps, tmp_path):
    browser, driver_path = browser_tools
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    require_gradio()
    from moleclip.training.serving.app import build_app

    app = apps["moleclip"]
    port = _free_port()
    blocks = build_app(app)
    blocks.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--window-size=1280,2000"):
        options.add_argument(flag)
    page = webdriver.Chrome(options=options, service=Service(driver_path))
    try:
        page.get(f"http://127.0.0.1:{port}/")
        wait = WebDriverWait(page, 30)
        box = wait.until(lambda p: p.find_element(By.CSS_SELECTOR, "#moleclip-smiles textarea"))
        predict = page.find_element(By.CSS_SELECTOR, "#moleclip-predict")

        def ask(text: str, answer: str) -> str:
            """Type `text` into the box, press Predict, and wait for the message to say `answer`."""
            box.send_keys(Keys.CONTROL, "a")
            box.send_keys(Keys.BACKSPACE)
            if text:
                box.send_keys(text)
            predict.click()
            return wait.until(lambda p: answer in (m := p.find_element(By.ID, "moleclip-message").text) and m)

        started = time.time()
        ask(GOOD[0], "Predicted 1 of 1")
        value = page.find_element(By.CSS_SELECTOR, ".moleclip-value").text
        want = expected(models["moleclip"], [GOOD[0]]).columns["predicted_heavy"][0]
        assert value == f"{want:.3f}"
        drawing = page.find_element(By.CSS_SELECTOR, "img.moleclip-drawing")
        assert page.execute_script("return arguments[0].complete && arguments[0].naturalWidth", drawing) > 0
        assert page.find_elements(By.CSS_SELECTOR, "img.moleclip-atom-map")
        assert len(page.find_elements(By.CSS_SELECTOR, ".moleclip-neighbours tr")) == 4

        message = ask(BAD, "Could not use 1 molecule")
        assert BAD in message and "Predicted 0 of 1" in message
        assert "Could not use this molecule" in page.find_element(By.CSS_SELECTOR, ".moleclip-error").text
        assert "Nothing to predict" in ask("", "Nothing to predict")
        # still serving: a good molecule after the bad ones gets its prediction
        ask(GOOD[1], "Predicted 1 of 1")
        want = expected(models["moleclip"], [GOOD[1]]).columns["predicted_heavy"][0]
        assert page.find_element(By.CSS_SELECTOR, ".moleclip-value").text == f"{want:.3f}"
        # a table uploaded through the page, and the CSV downloaded from it: input order and IDs as written
        upload = tmp_path / "upload.csv"
        pd.DataFrame({"id": ["0007", "0001", "0003"], "smiles": [GOOD[1], BAD, GOOD[0]]}).to_csv(upload, index=False)
        next(b for b in page.find_elements(By.CSS_SELECTOR, "button[role=tab]") if b.text.strip() == "Table").click()
        wait.until(lambda p: p.find_element(By.CSS_SELECTOR, "#moleclip-upload input[type=file]")).send_keys(
            str(upload))
        wait.until(lambda p: "upload" in p.find_element(By.ID, "moleclip-upload").text)  # the upload has landed
        page.find_element(By.ID, "moleclip-predict-table").click()
        message = wait.until(lambda p: "Predicted 2 of 3" in (m := p.find_element(By.ID, "moleclip-message").text)
                             and m)
        assert "line 3" in message
        link = wait.until(lambda p: p.find_element(By.CSS_SELECTOR, "#moleclip-download a[href*='.csv']"))
        direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # localhost, whatever proxy is set
        with direct.open(link.get_attribute("href"), timeout=10) as answer:
            downloaded = pd.read_csv(io.BytesIO(answer.read()), dtype=str, keep_default_na=False)
        assert downloaded.id.tolist() == ["0007", "0001", "0003"]
        assert downloaded.smiles.tolist() == [GOOD[1], BAD, GOOD[0]] and downloaded.predicted_heavy[1] == ""
        assert time.time() - started < 60
    finally:
        page.quit()
        blocks.close()


def test_an_upload_is_read_with_the_models_smiles_column_and_downloads_readable_numbers(tmp_path):
    """A model finetuned on Compound_SMILES reads an upload's Compound_SMILES without being told; the download writes
    predictions with float32's digits and the nearest training molecule's measured value as its table had it."""
    from tests.tiny_models import ASSAY_LABELS, finetune_assay_models

    model = finetune_assay_models(tmp_path, kinds=("fingerprint",))["fingerprint"]
    app = MoleculeApp.load(str(model), workdir=tmp_path / "work")
    upload = tmp_path / "upload.csv"
    pd.DataFrame({"ID": ["a1", "a2"], "Compound_SMILES": GOOD}).to_csv(upload, index=False)
    message, _, table, csv_path = app.predict_table(str(upload), "", False)
    assert csv_path is not None, message
    written = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    assert written.columns.tolist()[:2] == ["ID", "Compound_SMILES"]
    assert all(str(np.float32(c)) == c for c in written.predicted_logS)
    assert set(written.nearest_training_logS) <= {repr(float(label)) for label in ASSAY_LABELS}

"""The MoleCLIP app: a web page over a finetuned model folder (`moleclip app`, and a Hugging Face Space).

A user pastes SMILES (one a line, optionally a name after it, as in a .smi file) or uploads a table (CSV, TSV or
Parquet with a SMILES column) and sees, for each molecule: the drawing the model sees, the prediction with its
interval or calibrated probability and the applicability-domain flag (all from :class:`Predictor`, the same numbers
`moleclip predict` writes), an atom map (integrated gradients on the drawing for MoleCLIP models, Morgan-bit
occlusion for fingerprint models, from :mod:`moleclip.training.explaining.explainers`; it can be turned off for speed) and the
nearest training molecules with their measured values. The whole batch can be downloaded as CSV: the input's
columns, in input order, with the prediction columns.

:class:`MoleculeApp` does the work and holds the callbacks (plain Python: testable without a browser or gradio);
:func:`build_app` wires them into a gradio ``Blocks`` page. `moleclip app` and ``model_cards/space_app.py`` (the
Space's ``app.py``) both call :func:`build_app`, so they serve the same page. gradio is imported only when a page is
built, so the rest of the package does not need it (``pip install "moleclip[app]"``).

Errors a user can cause (a bad SMILES, an empty box, a table without a SMILES column, an unreadable file) are answered
in the page; molecules that cannot be used are listed there and the others still get their results.
"""

from __future__ import annotations

import base64
import html
import io
import logging
import os
import shutil
import tempfile
import weakref
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from moleclip.processing.molecules import shorten
from moleclip.processing.tables import read_molecule_table, table_smiles_column
from moleclip.training.explaining.explainers import METHOD_WORDS, atom_picture, make_explainer
from moleclip.training.outputs import SKIPPED_COLUMN, STANDARDIZED_COLUMN, mark_skipped, mark_standardized, \
    refuse_column_clash, write_delimited
from moleclip.tasks import is_classification, is_regression
from moleclip.training.inference.prediction import Predictor, local_model_folder

__all__ = ["INSTALL_HINT", "MODEL_ENV", "AppOutput", "MoleculeApp", "build_app", "local_model_folder",
           "require_gradio"]

logger = logging.getLogger(__name__)

INSTALL_HINT = 'pip install "moleclip[app]"'
# The environment variable a Space (or `model_cards/space_app.py` run by hand) names the model (folder or Hub) in.
MODEL_ENV = "MOLECLIP_MODEL"
NEIGHBOURS = 3
# A page is one request: these bounds keep one user's paste from holding the (single) worker for minutes. Every
# molecule gets a prediction (fast, batched); pictures and atom maps (one integrated-gradients run each) are made for
# the first MAX_CARDS only, and the page says so.
MAX_MOLECULES = 2000
MAX_CARDS = 25
# Each request's CSV is written to a folder of its own; gradio copies it into its cache when the request ends, so only
# the newest few are kept (a server runs for days).
KEEP_REQUESTS = 20


def require_gradio():
    """gradio, or an ImportError that says how to install it."""
    try:
        # gradio is an optional extra (moleclip[app])
        import gradio
    except ImportError as err:
        raise ImportError(f"the MoleCLIP app needs gradio, which is not installed: {INSTALL_HINT}") from err
    return gradio


@dataclass
class AppOutput:
    """What one request shows: a message (Markdown), the molecules' cards (HTML), the results table and the CSV file
    to download (None when nothing could be predicted)."""

    message: str
    cards: str
    table: pd.DataFrame
    csv_path: str | None
    skipped: list = field(default_factory=list)

    def as_tuple(self) -> tuple:
        return self.message, self.cards, self.table, self.csv_path


class MoleculeApp:
    """The app's work, independent of gradio: :meth:`predict_text` and :meth:`predict_table` are the page's
    callbacks. `steps`: integrated-gradients steps of a MoleCLIP atom map (more: slower, closer to converged)."""

    def __init__(self, predictor, steps: int = 50, max_molecules: int = MAX_MOLECULES, max_cards: int = MAX_CARDS,
                 workdir: str | os.PathLike | None = None, name: str | None = None):
        if steps < 2:
            raise ValueError(f"steps must be at least 2, got {steps}")
        self.predictor = predictor
        self.steps, self.max_molecules, self.max_cards = int(steps), int(max_molecules), int(max_cards)
        # gradio serves a file a callback returns from its own cache; ours only has to outlive the callback.
        if workdir is None:
            workdir = tempfile.mkdtemp(prefix="moleclip-app-")
            weakref.finalize(self, shutil.rmtree, workdir, ignore_errors=True)  # at exit, or when the app goes
        self.workdir = Path(workdir)
        # the model as the user named it (a Hub model's local folder is a cache path that says nothing)
        self.name = name or _model_name(predictor)
        self.title = f"MoleCLIP: {self.name}"
        self._explainers: dict[str, object] = {}

    @classmethod
    def load(cls, spec: str, trust_pickle: bool = False, device=None, **kwargs) -> "MoleculeApp":
        folder = local_model_folder(spec)
        predictor = Predictor.load(folder, trust_pickle=trust_pickle, device=device)
        return cls(predictor, name=kwargs.pop("name", None) or str(spec), **kwargs)

    # ------------------------------------------------------------------------------------------------- callbacks
    def predict_text(self, text: str | None, atom_maps: bool = True, target: str | None = None) -> tuple:
        """The callback of the SMILES box: one molecule a line, optionally followed by whitespace and a name."""
        return self._guarded(self._from_text, text, atom_maps, target).as_tuple()

    def predict_table(self, path, smiles_column: str | None = None, atom_maps: bool = True,
                      target: str | None = None) -> tuple:
        """The callback of the table upload: a CSV/TSV/Parquet file (path) and optionally its SMILES column."""
        return self._guarded(self._from_file, path, smiles_column, atom_maps, target).as_tuple()

    def _guarded(self, work, *args) -> AppOutput:
        """Whatever goes wrong becomes a message in the page: the app keeps serving, and the server log keeps the
        traceback of anything that is not the user's input."""
        try:
            return work(*args)
        except (ValueError, LookupError, OSError) as err:  # the input: a file, a column, a value
            return self._message_only(f"**Error:** {_plain(err)}")
        except Exception as err:  # a bug: say so briefly in the page, in full in the log
            logger.exception("the app failed on a request")
            return self._message_only(f"**Internal error** ({type(err).__name__}): {_plain(err)}. The server log has "
                                      "the details.")

    def _message_only(self, message: str) -> AppOutput:
        return AppOutput(message, "", pd.DataFrame(), None)

    def _from_text(self, text, atom_maps, target) -> AppOutput:
        if text is None or not str(text).strip():
            return self._message_only("**Nothing to predict:** paste SMILES, one a line (optionally a name after "
                                      "each), or upload a table.")
        # The box is read as a .smi file is, so its rules (names after the SMILES, blank lines, a `smiles` header)
        # are those of every other input of the package.
        with tempfile.TemporaryDirectory(dir=self._ensure_workdir()) as folder:
            box = Path(folder) / "pasted.smi"
            box.write_text(str(text).replace("\r\n", "\n").replace("\r", "\n") + "\n", encoding="utf-8")
            table = read_molecule_table(box)
        return self._run(table.frame, table.smiles_column, lambda row: f"line {table.line(row)}", atom_maps, target)

    def _from_file(self, path, smiles_column, atom_maps, target) -> AppOutput:
        if path is None or (isinstance(path, (list, tuple)) and not path):
            return self._message_only("**Nothing to predict:** upload a CSV, TSV or Parquet file with a SMILES column.")
        path = getattr(path, "name", path)  # older gradio hands over a tempfile wrapper, newer a path
        column = (smiles_column or "").strip() or None
        try:
            table = read_molecule_table(path, table_smiles_column(path, column, self.predictor.smiles_column))
        except (ValueError, LookupError, OSError) as err:
            # Said in the page's terms: the file by its name (not the server's upload folder), the column box.
            text = _plain(err).replace(str(path), Path(path).name)
            text = text.replace("name it with smiles_column=... (--smiles-column on the command line)",
                                "type its name in the SMILES column box")
            return self._message_only(f"**Error:** {text}")
        if not len(table):
            return self._message_only(f"**Nothing to predict:** {Path(path).name} has no rows.")
        return self._run(table.frame, table.smiles_column, lambda row: f"line {table.line(row)}", atom_maps, target)

    # --------------------------------------------------------------------------------------------------- the work
    def _run(self, frame: pd.DataFrame, smiles_column: str, where, atom_maps: bool, target) -> AppOutput:
        if not len(frame):
            return self._message_only("**Nothing to predict:** no molecules in the input.")
        if len(frame) > self.max_molecules:
            return self._message_only(f"**Too many molecules:** {len(frame)}; this app takes at most "
                                      f"{self.max_molecules} a request (`moleclip predict` takes any number).")
        predictor = self.predictor
        smiles = ["" if value is None or (isinstance(value, float) and np.isnan(value)) else str(value)
                  for value in frame[smiles_column].tolist()]
        result = predictor.predict(smiles, progress=False)
        skipped = {s.index: s for s in result.skipped}
        out = frame.copy()
        refuse_column_clash(out.columns, [*result.columns, SKIPPED_COLUMN], "the results would overwrite")
        for name, values in result.columns.items():
            out[name] = values
        mark_skipped(out, result.skipped)
        standardized = result.standardized
        mark_standardized(out, standardized)

        shown = min(len(out), self.max_cards)
        neighbours = self._neighbours(standardized or smiles, shown, skipped)
        target = target or predictor.target_names[0]
        cards = [self._card(i, out, smiles[i], smiles_column, skipped.get(i), neighbours.get(i), atom_maps, target)
                 for i in range(shown)]
        csv_path = self._write_csv(out) if len(skipped) < len(out) else None

        lines = [f"Predicted **{len(out) - len(skipped)} of {len(out)}** molecule(s) with {_code(self.name)}."]
        if skipped:
            listed = "; ".join(f"{where(s.index)} {_code(shorten(s.smiles) or '(empty)')}: {_md(s.reason)}"
                               for s in list(skipped.values())[:10])
            more = f" and {len(skipped) - 10} more" if len(skipped) > 10 else ""
            lines.append(f"**Could not use {len(skipped)} molecule(s):** {listed}{more}.")
        if shown < len(out):
            lines.append(f"The first {shown} molecules are shown below; the CSV holds all {len(out)}.")
        if standardized is not None:
            lines.append(f"Molecules are standardised as the training molecules were ({predictor.standardize}); "
                         f"`{STANDARDIZED_COLUMN}` shows each result's molecule.")
        if csv_path is None:
            lines.append("Nothing to download: no molecule could be used.")
        return AppOutput("\n\n".join(lines), "\n".join(cards), out, csv_path, list(skipped.values()))

    def _neighbours(self, smiles: list[str], shown: int, skipped: dict) -> dict:
        """row -> [(training SMILES, similarity, {target: measured value})] for the shown rows."""
        domain = self.predictor.domain
        if domain is None or shown == 0:
            return {}
        rows = [i for i in range(shown) if i not in skipped]
        if not rows:
            return {}
        result = domain.query_fingerprints([smiles[i] for i in rows])
        if not len(result.kept):
            return {}
        k = min(NEIGHBOURS, domain.reference.shape[0])
        near = domain.neighbours(result.bits, k=k)
        names = self.predictor.target_names
        labels = None
        if domain.reference_labels:
            labels = np.asarray(domain.reference_labels, dtype=np.float64).reshape(len(domain.reference_labels), -1)
        found = {}
        for position, kept in enumerate(result.kept):
            entries = []
            for index, similarity in zip(near.indices[position], near.similarities[position]):
                ident = domain.reference_ids[index] if domain.reference_ids else f"training molecule {index}"
                measured = ({name: labels[index, j] for j, name in enumerate(names) if j < labels.shape[1]}
                            if labels is not None else {})
                entries.append((ident, float(similarity), measured))
            found[rows[kept]] = entries
        return found

    def _explainer(self, target: str):
        if target not in self._explainers:
            predictor = self.predictor
            self._explainers[target] = make_explainer(predictor.kind, target=target, quick=True, steps=self.steps,
                                                      device=predictor.device)
        return self._explainers[target]

    def _write_csv(self, frame: pd.DataFrame) -> str:
        workdir = self._ensure_workdir()
        earlier = sorted((p for p in workdir.glob("request-*") if p.is_dir()), key=lambda p: p.stat().st_mtime)
        for old in earlier[: max(0, len(earlier) - KEEP_REQUESTS + 1)]:
            shutil.rmtree(old, ignore_errors=True)
        path = Path(tempfile.mkdtemp(prefix="request-", dir=workdir)) / "moleclip_predictions.csv"
        write_delimited(frame, path)
        return str(path)

    def _ensure_workdir(self) -> Path:
        self.workdir.mkdir(parents=True, exist_ok=True)
        return self.workdir

    # -------------------------------------------------------------------------------------------------- the page
    def _card(self, row: int, out: pd.DataFrame, smiles: str, smiles_column: str, skipped, neighbours, atom_maps,
              target) -> str:
        """One molecule's results as HTML (classes moleclip-*: the browser test and any CSS find them by these)."""
        label = _row_label(out.iloc[row], smiles_column)
        standardized = out.iloc[row].get(STANDARDIZED_COLUMN)
        became = (f" → <code class='moleclip-standardized'>{_h(_short(standardized))}</code> (standardised)"
                  if isinstance(standardized, str) and standardized and standardized != smiles else "")
        head = (f"<div class='moleclip-card-title'><b>#{row + 1}</b>{' · ' + _h(label) if label else ''} · "
                f"<code>{_h(_short(smiles) or '(empty)')}</code>{became}</div>")
        if skipped is not None:
            return (f"<div class='moleclip-card moleclip-bad' data-row='{row}' style='{_CARD}'>{head}"
                    f"<div class='moleclip-error' style='color:#b00020'>Could not use this molecule: "
                    f"{_h(skipped.reason)}</div></div>")
        figures = [self._drawing(smiles)]
        if atom_maps:
            figures.append(self._atom_map(smiles, row, target))
        facts = [self._prediction_html(out.iloc[row]), self._domain_html(out.iloc[row]),
                 _neighbours_html(neighbours, self.predictor.target_names)]
        return (f"<div class='moleclip-card' data-row='{row}' style='{_CARD}'>{head}"
                f"<div style='display:flex;flex-wrap:wrap;gap:12px;align-items:flex-start'>{''.join(figures)}"
                f"<div style='min-width:260px'>{''.join(facts)}</div></div></div>")

    def _drawing(self, smiles: str) -> str:
        try:
            picture, caption = self.predictor.kind.picture(smiles)
        except Exception as err:  # the prediction stands; only the picture is missing
            return f"<div class='moleclip-error'>no drawing: {_h(_plain(err))}</div>"
        return _figure(picture, caption, "moleclip-drawing")

    def _atom_map(self, smiles: str, row: int, target: str) -> str:
        try:
            explainer = self._explainer(target)
            explanation = explainer.explain(smiles, index=row)
            picture = atom_picture(explanation, size=340)
        except Exception as err:  # e.g. captum missing, or a molecule the drawing geometry cannot follow
            logger.info("no atom map for %r: %s", smiles, err)
            return f"<div class='moleclip-error' style='max-width:260px'>no atom map: {_h(_plain(err))}</div>"
        how = METHOD_WORDS[explainer.methods[0]]
        note = (f"atom map of {target} ({how}; green raises the model's output, pink lowers it"
                + ("; the saved model, not the ensemble mean" if self.predictor.trust is not None else "") + ")")
        return _figure(picture, note, "moleclip-atom-map")

    def _prediction_html(self, row: pd.Series) -> str:
        predictor = self.predictor
        coverage = None
        if predictor.trust is not None:
            coverage = (predictor.trust.get("calibration") or {}).get("coverage")
        classification = is_classification(predictor.task)
        header = ("<tr><th>target</th><th>probability</th><th>calibrated</th></tr>" if classification else
                  "<tr><th>target</th><th>prediction</th><th>"
                  + (f"{coverage:.0%} interval" if coverage else "interval") + "</th></tr>")
        rows = []
        for name in predictor.target_names:
            value = row.get(f"{predictor.prefix}_{name}")
            if classification:
                extra = _number(row.get(f"calibrated_probability_{name}"))
            else:
                low, high = row.get(f"predicted_{name}_lower"), row.get(f"predicted_{name}_upper")
                if not (_present(low) and _present(high)):
                    extra = "–"
                elif np.isinf(low) and np.isinf(high):  # conformal calibration with too few validation molecules
                    extra = "unbounded (too few validation molecules to calibrate)"
                else:
                    extra = f"{_number(low)} to {_number(high)}"
            rows.append(f"<tr><td>{_h(name)}</td><td class='moleclip-value' data-target='{_h(name)}'>"
                        f"{_number(value)}</td><td>{extra}</td></tr>")
        return f"<table class='moleclip-prediction' style='{_TABLE}'>{header}{''.join(rows)}</table>"

    def _domain_html(self, row: pd.Series) -> str:
        if self.predictor.domain is None:
            return "<p class='moleclip-domain'>applicability domain: not saved with this model</p>"
        flag, similarity = row.get("in_domain"), row.get("nearest_similarity")
        if flag is None or (isinstance(flag, float) and np.isnan(flag)):
            verdict = "unknown"
        else:
            verdict = ("<span style='color:#1b7f3b'>in domain</span>" if bool(flag) else
                       "<span style='color:#b00020'>out of domain</span> (less like the training molecules than "
                       "almost all validation molecules were; trust the prediction less)")
        return (f"<p class='moleclip-domain'>{verdict}; nearest training similarity {_number(similarity, 2)} "
                f"(Tanimoto, Morgan bits)</p>")


# ------------------------------------------------------------------------------------------------------- gradio
def build_app(model, steps: int = 50, trust_pickle: bool = False, device=None, max_molecules: int = MAX_MOLECULES,
              max_cards: int = MAX_CARDS):
    """The page as a gradio Blocks (not launched): `model` is a finetuned model folder, a Hub name, or a ready
    :class:`MoleculeApp`. The app object is kept as ``blocks.moleclip_app``."""
    gr = require_gradio()
    app = model if isinstance(model, MoleculeApp) else MoleculeApp.load(
        str(model), trust_pickle=trust_pickle, device=device, steps=steps, max_molecules=max_molecules,
        max_cards=max_cards)
    predictor = app.predictor
    kind = predictor.kind.describe()
    trust = ("ensemble intervals" if is_regression(predictor.task) else "calibrated probabilities") \
        if predictor.trust is not None else "no ensemble calibration saved"
    # delete_cache: gradio's copies of uploads and downloads older than a day go, checked hourly
    with gr.Blocks(title=app.title, delete_cache=(3600, 86400)) as blocks:
        gr.Markdown(f"# {_md(app.title)}\n{kind} model predicting {', '.join(map(_md, predictor.target_names))} "
                    f"({predictor.task}; {trust}; applicability domain "
                    f"{'saved' if predictor.domain is not None else 'not saved'}).")
        with gr.Row():
            atom_maps = gr.Checkbox(value=True, label="atom maps", elem_id="moleclip-atom-maps",
                                    info="per-atom explanation of each prediction (slower; turn off for speed)")
            target = gr.Dropdown(choices=predictor.target_names, value=predictor.target_names[0],
                                 label="atom map of", visible=len(predictor.target_names) > 1)
        with gr.Tabs():
            with gr.Tab("SMILES"):
                text = gr.Textbox(lines=5, label="SMILES, one a line (a name may follow each, after a space; "
                                  "Shift+Enter predicts)",
                                  placeholder="CCO ethanol\nc1ccccc1O phenol", elem_id="moleclip-smiles")
                text_button = gr.Button("Predict", variant="primary", elem_id="moleclip-predict")
            with gr.Tab("Table"):
                upload = gr.File(label="CSV, TSV or Parquet with a SMILES column", type="filepath",
                                 file_types=[".csv", ".tsv", ".parquet", ".pq", ".smi", ".txt", ".gz"],
                                 elem_id="moleclip-upload")
                column = gr.Textbox(label="SMILES column (default: smiles, canonical_smiles, smi or mol)",
                                    elem_id="moleclip-column")
                table_button = gr.Button("Predict the table", variant="primary", elem_id="moleclip-predict-table")
        message = gr.Markdown(elem_id="moleclip-message")
        cards = gr.HTML(elem_id="moleclip-cards")
        with gr.Accordion("Results table", open=False):
            table = gr.Dataframe(elem_id="moleclip-table", interactive=False)
        download = gr.File(label="Download the results (CSV)", interactive=False, elem_id="moleclip-download")
        outputs = [message, cards, table, download]
        # One queue for all three events: they share one model (and its explainers), which runs one batch at a time.
        shared = {"outputs": outputs, "concurrency_id": "moleclip-model", "concurrency_limit": 1}
        text_button.click(app.predict_text, inputs=[text, atom_maps, target], api_name="predict", **shared)
        text.submit(app.predict_text, inputs=[text, atom_maps, target], api_name=False, **shared)
        table_button.click(app.predict_table, inputs=[upload, column, atom_maps, target], api_name="predict_table",
                           **shared)
    blocks.moleclip_app = app
    return blocks


# ------------------------------------------------------------------------------------------------------ helpers
_CARD = "border:1px solid #d0d0d0;border-radius:8px;padding:10px;margin:8px 0"
_TABLE = "border-collapse:collapse;margin-bottom:6px"


def _plain(err: BaseException) -> str:
    text = str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)
    return " ".join(line.strip() for line in text.splitlines() if line.strip()) or type(err).__name__


def _h(value) -> str:
    return html.escape(str(value), quote=True)


def _md(value) -> str:
    """Text shown inside Markdown, with the characters Markdown would act on escaped."""
    text = str(value)
    for char in "\\`*_[]<>#|":
        text = text.replace(char, "\\" + char)
    return text


def _code(value) -> str:
    """Text as a Markdown code span (where backslash escapes would show): backticks cannot be escaped there."""
    return "`" + str(value).replace("`", "'") + "`"


def _short(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _present(value) -> bool:
    return value is not None and not (isinstance(value, (float, np.floating)) and np.isnan(value))


def _number(value, digits: int = 3) -> str:
    if not _present(value):
        return "–"
    return f"{float(value):.{digits}f}" if abs(float(value)) < 1e4 else f"{float(value):.{digits}g}"


def _measured(value) -> str:
    """A measured value as it was most likely written: class labels and counts without decimals."""
    return str(int(value)) if _present(value) and float(value).is_integer() and abs(value) < 1e9 else _number(value)


def _row_label(row: pd.Series, smiles_column: str) -> str:
    """A name for the card: the value of the input's name or id column, when it has one."""
    for column, value in row.items():
        if column == smiles_column:
            continue
        if str(column).strip().lower() in ("name", "id", "identifier", "compound", "compound_id", "mol_id"):
            return "" if not _present(value) else str(value)
    return ""


def _model_name(predictor) -> str:
    path = Path(str(predictor.spec))
    # `moleclip finetune` writes <run>/model: the run's name says more than "model"
    return f"{path.parent.name}/{path.name}" if path.name == "model" and path.parent.name else path.name or str(path)


def _figure(picture, caption: str, css_class: str) -> str:
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return (f"<figure style='margin:0;max-width:{max(picture.width, 224)}px'>"
            f"<img class='{css_class}' alt='{_h(caption)}' src='data:image/png;base64,{data}' "
            f"style='max-width:100%;border:1px solid #eee'/>"
            f"<figcaption style='font-size:0.8em'>{_h(caption)}</figcaption></figure>")


def _neighbours_html(neighbours, names) -> str:
    if not neighbours:
        return ""
    head = "".join(f"<th>measured {_h(name)}</th>" for name in names)
    rows = []
    for ident, similarity, measured in neighbours:
        cells = "".join(f"<td>{_measured(measured.get(name))}</td>" for name in names)
        rows.append(f"<tr><td><code>{_h(_short(ident, 60))}</code></td><td>{similarity:.2f}</td>{cells}</tr>")
    return (f"<table class='moleclip-neighbours' style='{_TABLE}'><caption style='text-align:left'>nearest training "
            f"molecules</caption><tr><th>SMILES</th><th>similarity</th>{head}</tr>{''.join(rows)}</table>")

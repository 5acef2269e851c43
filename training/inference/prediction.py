"""Predictions of a finetuned model folder for new molecules, with what the folder knows about trusting them.

:class:`Predictor` loads what `moleclip finetune` wrote in `<output-dir>/model` (or a Hub repository holding it):
the saved model (MoleCLIP, fingerprint MLP or random forest) and, when the folder has them, its ensemble (one model
per finetuning seed) with intervals or calibrated probabilities fitted on validation (`uncertainty.json`,
`finetuning/trust.py`) and its applicability domain (`applicability.json`). :meth:`Predictor.predict` returns the
output columns for a list of SMILES, in input order, with the molecules it could not use. `moleclip predict` and
`moleclip app` are thin layers over it.

New molecules are prepared as the training molecules were (the model's `standardize` setting).
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from huggingface_hub import snapshot_download, try_to_load_from_cache

from moleclip.tasks import is_classification, prediction_prefix
from moleclip.training.finetuning.trust import MEMBER_FILE, TRUST_FILE, interval_columns, load_head_member
from moleclip.training.inference import engine
from moleclip.training.kinds import ImageKind, load_kind
from moleclip.training.outputs import standardized_column
from moleclip.training.serving.hub import HubUnavailableError, PRESETS, check_model_exists
from moleclip.training.trust.applicability import ApplicabilityDomain, EMBEDDING_DOMAIN_DIR, METADATA_FILE
from moleclip.training.trust.uncertainty import calibration_from_dict, ensemble

__all__ = ["Predictor", "PredictionResult", "load_predictor", "local_model_folder"]


def local_model_folder(spec: str) -> str:
    """A local folder for `spec`: the folder itself, or a Hub repository downloaded whole, since the ensemble
    (ensemble/) and the applicability domain live beside the model and `Predictor` reads them from disk."""
    path = Path(spec).expanduser()
    if path.is_dir():
        return str(path)
    check_model_exists(str(spec))  # a path that is not there: "not found", not a Hub request
    try:
        return snapshot_download(repo_id=str(spec))
    except Exception as err:
        raise HubUnavailableError(f"cannot load {spec!r} from the Hugging Face Hub: {type(err).__name__}: "
                                  f"{str(err).strip().splitlines()[0] if str(err).strip() else 'no answer'}") from err


def _model_folder(spec: str, uncertainty: bool | None, domain: bool | None) -> str:
    """The folder to read a model and what trusts it from. A Hub repository pushed by `moleclip finetune` holds its
    ensemble and domain beside the model, read from disk: it is fetched whole unless neither is wanted (read alone,
    the Hub model would predict without them, its numbers differing from the same model's folder). When the whole
    repository cannot be fetched (offline, with only the model in the cache) and neither was asked for, the model is
    used alone, with a warning."""
    if (uncertainty is False and domain is False) or str(spec) in PRESETS or Path(spec).expanduser().exists():
        return spec
    try:
        return local_model_folder(spec)
    except HubUnavailableError as err:
        if uncertainty or domain or not _model_in_cache(spec):
            raise  # one message: with nothing in the cache, the model alone cannot be read either
        warnings.warn(f"{err}; predicting with the model alone, without its ensemble and applicability domain",
                      UserWarning, stacklevel=3)
        return spec


def _model_in_cache(spec: str) -> bool:
    """Whether the Hub cache holds `spec`'s config (the model alone may then load offline)."""
    try:
        return isinstance(try_to_load_from_cache(str(spec), "config.json"), str)
    except Exception:  # not a valid repository name, say
        return False


def load_predictor(spec: str, trust_pickle: bool = False):
    """The finetuned model at `spec` (a folder or Hub repo), loaded by the kind the registry recognises it as
    (`training.kinds`). A forest is loaded only with `trust_pickle` (its joblib file runs pickle); a pretrained
    encoder without a trained head is refused: its "predictions" would come from random weights."""
    return load_kind(spec, trust_pickle=trust_pickle)


@dataclass
class PredictionResult:
    """Output columns (name -> one value per input molecule, in input order) and the molecules left out."""

    columns: dict[str, np.ndarray] = field(default_factory=dict)
    skipped: list = field(default_factory=list)
    standardized: list | None = None  # the molecule each entry was standardised to ("": failed); None: not standardised


class Predictor:
    """A finetuned model folder ready to predict; see the module docstring. `kind` is the model
    (`training.kinds.ModelKind`); predictions run through the one engine (`training.engine`).

    `uncertainty` / `domain`: True requires the folder's ensemble calibration / applicability domain (an error if it
    has none), False leaves them out, None (default) uses them when the folder has them.
    """

    def __init__(self, spec: str, kind, trust: dict | None, domain, trust_pickle: bool = False, device=None,
                 embedding_domain=None):
        self.spec, self.kind = spec, kind
        self.trust, self.domain, self.trust_pickle, self.device = trust, domain, trust_pickle, device
        # models with embeddings (MoleCLIP) also judge the domain in their own embedding space (cosine)
        self.embedding_domain = embedding_domain if kind.embedding_width is not None else None
        self._members = None

    @classmethod
    def load(cls, spec: str, trust_pickle: bool = False, uncertainty: bool | None = None,
             domain: bool | None = None, device=None) -> "Predictor":
        spec = _model_folder(spec, uncertainty, domain)
        kind = load_predictor(spec, trust_pickle=trust_pickle)
        return cls(spec, kind, _read_trust(spec, uncertainty), _read_domain(spec, domain), trust_pickle, device,
                   _read_embedding_domain(spec, domain))

    @property
    def model(self):
        """The network (or estimator) the kind wraps."""
        return self.kind.model

    @property
    def standardize(self) -> str:
        """How molecules are prepared before the model sees them (the training molecules' preparation)."""
        return self.kind.standardize

    @property
    def smiles_column(self) -> str | None:
        """The SMILES column of the table the model was finetuned on, when the user named it: the column the tables it
        reads are read with by default (`processing.tables.table_smiles_column`)."""
        return self.kind.smiles_column

    @property
    def task(self) -> str:
        return self.kind.task

    @property
    def target_names(self) -> list[str]:
        return self.kind.target_names

    @property
    def prefix(self) -> str:
        return prediction_prefix(self.task)

    def predict(self, smiles: Sequence[str], batch_size: int = 64, progress: bool = True,
                num_workers: int = 0) -> PredictionResult:
        """The output columns for `smiles`: `<prefix>_<target>` (the ensemble mean when the folder has an ensemble),
        its `_spread` and `_lower`/`_upper` or `calibrated_probability_<target>`, and the domain columns.

        The model and its ensemble members run together through the engine: members that prepare molecules as the
        model does share each batch's preparation (each molecule is drawn once), and heads on the model's own encoder
        (the frozen mode's members) share its embeddings. `num_workers` processes draw."""
        smiles = list(smiles)
        members = self._member_kinds() if self.trust is not None else []
        # members give logits for classification, as finetune took them (the ensemble averages their probabilities)
        results = engine.run([self.kind, *(kind for _, kind in members)], smiles, batch_size=batch_size,
                             device=self.device, num_workers=num_workers, progress=progress,
                             logits=[False] + [is_classification(self.task)] * len(members),
                             embeddings=[self.embedding_domain is not None] + [False] * len(members))
        main, skipped = results[0], results[0].skipped
        result = PredictionResult(skipped=list(skipped), standardized=standardized_column(smiles, self.standardize))
        values, extra, names = main.values, {}, self.target_names
        if members:
            values, extra = self._ensemble_columns(smiles, skipped, [(folder, r) for (folder, _), r
                                                                     in zip(members, results[1:])])
        # float32: what the model computes in, so written with the digits it carries (outputs.table_cells); the
        # ensemble's mean, spread and intervals are computed from float32 outputs and carry no more
        for j, name in enumerate(names):
            result.columns[f"{self.prefix}_{name}"] = values[:, j].astype(np.float32)
        result.columns.update({name: column.astype(np.float32) for name, column in extra.items()})
        if self.domain is not None:
            result.columns.update(self._domain_columns(smiles, names, result.standardized))
        if self.embedding_domain is not None:
            result.columns.update(self._embedding_domain_columns(len(smiles), main.embeddings, names))
        return result

    # ------------------------------------------------------------------ ensemble
    def _member_kinds(self) -> list:
        """(folder, kind) of each ensemble member; a frozen-mode member is a head on the main model's encoder."""
        if self._members is None:
            self._members = []
            for folder in self.trust["members"]:
                path = Path(self.spec) / folder
                if (path / MEMBER_FILE).is_file():
                    kind = ImageKind(load_head_member(path, self.kind.model), self.kind.processor)
                else:
                    kind = load_predictor(str(path), trust_pickle=self.trust_pickle)
                self._members.append((folder, kind))
        return self._members

    def _ensemble_columns(self, smiles, skipped, members):
        """The members' predictions (`members`: (folder, engine result)), combined: (ensemble values [N, T] with NaN
        rows where skipped, extra columns)."""
        task, names = self.task, self.target_names
        missing = {s.index for s in skipped}
        usable = np.array([i not in missing for i in range(len(smiles))])
        values = []  # with no usable molecule, every member gives [0, T]: the same columns, empty
        for folder, result in members:
            if {s.index for s in result.skipped} != missing:  # all members prepare molecules the same way
                raise ValueError(f"ensemble member {folder} could not use the same molecules as the saved model")
            values.append(result.values[usable].astype(np.float64))
        members = values
        ens = ensemble(members, task)
        calibration = calibration_from_dict(self.trust["calibration"])
        spread = ens.spread if self.trust["scope"] == "ensemble" else None
        out = {f"{self.prefix}_{name}_spread": ens.spread[:, j] for j, name in enumerate(names)}
        out.update(interval_columns(task, list(names), calibration, ens.mean, spread))
        full = {name: _scatter(column, usable) for name, column in out.items()}
        mean = 1.0 / (1.0 + np.exp(-ens.mean)) if is_classification(task) else ens.mean
        return _scatter(mean, usable), full

    # ------------------------------------------------------------------ applicability domain
    def _embedding_domain_columns(self, n: int, embeddings: np.ndarray | None, names) -> dict:
        """in_domain_embedding, nearest_embedding_similarity (cosine of the model's own embeddings, from the same
        forward pass as the prediction), the nearest training molecule in that space and its measured values; empty
        where the molecule could not be drawn (all of them when `embeddings` is None: nothing could)."""
        usable = np.zeros(n, dtype=bool) if embeddings is None else ~np.isnan(embeddings).any(axis=1)
        queries = embeddings[usable] if embeddings is not None else None
        return _neighbour_columns(self.embedding_domain, queries, np.flatnonzero(usable), n, names, "embedding")

    def _domain_columns(self, smiles, names, standardized: list | None) -> dict:
        """in_domain, nearest_similarity, the nearest training molecule and its measured values (empty where the
        molecule has no fingerprint); molecules are taken as standardised (`standardized`, when the training ones
        were; an entry that failed stays as given and fails again here)."""
        if standardized is not None:
            smiles = [prepared or given for prepared, given in zip(standardized, smiles)]
        result = self.domain.query_fingerprints(smiles)
        return _neighbour_columns(self.domain, result.bits, result.kept, len(smiles), names)


def _neighbour_columns(domain, queries, kept, n: int, names, space: str = "") -> dict:
    """The domain flag, the nearest training molecule's similarity, SMILES and measured values for the `kept` rows
    (whose representations `queries` holds, in order) of `n`; empty elsewhere. `space` names a domain other than the
    Tanimoto one in the column names (in_domain_embedding, nearest_embedding_similarity, ...)."""
    tag = f"{space}_" if space else ""
    kept = np.asarray(kept, dtype=np.int64)
    # the similarity is computed (float32, like a prediction); the measured values are the user's (float64)
    flag, similarity = np.full(n, None, dtype=object), np.full(n, np.nan, dtype=np.float32)
    ids = np.full(n, "", dtype=object)
    columns = {f"in_domain_{space}" if space else "in_domain": flag, f"nearest_{tag}similarity": similarity,
               f"nearest_{tag}training_smiles": ids}
    nearest = None
    if len(kept):
        near = domain.neighbours(queries, k=1)
        nearest = near.indices[:, 0]
        flag[kept] = domain.scores(queries) >= domain.threshold
        similarity[kept] = near.similarities[:, 0]
        if domain.reference_ids:
            ids[kept] = [domain.reference_ids[i] for i in nearest]
    if domain.reference_labels:  # the columns exist whether or not any row could be used: every call has the same ones
        labels = np.asarray(domain.reference_labels, dtype=np.float64).reshape(len(domain.reference_labels), -1)
        for j, name in enumerate(names):
            values = np.full(n, np.nan)
            if nearest is not None:
                values[kept] = labels[nearest, j]
            columns[f"nearest_{tag}training_{name}"] = values
    return columns

def _read_embedding_domain(spec: str, wanted: bool | None):
    folder = Path(spec) / EMBEDDING_DOMAIN_DIR
    if wanted is False or not (folder / METADATA_FILE).is_file():
        return None  # fingerprint models and folders written before it have only the Tanimoto domain
    return ApplicabilityDomain.load(folder)


def _read_trust(spec: str, wanted: bool | None) -> dict | None:
    if wanted is False:
        return None
    path = Path(spec) / TRUST_FILE
    if not path.is_file():
        if wanted:
            raise ValueError(f"{spec} has no {TRUST_FILE}: uncertainty needs a model folder written by this version of "
                             "`moleclip finetune` (it keeps one model per seed and their calibration)")
        return None
    return json.loads(path.read_text())


def _read_domain(spec: str, wanted: bool | None):
    if wanted is False:
        return None
    if not (Path(spec) / METADATA_FILE).is_file():
        if wanted:
            raise ValueError(f"{spec} has no {METADATA_FILE}: the applicability domain needs a model folder written by "
                             "this version of `moleclip finetune`")
        return None
    return ApplicabilityDomain.load(spec)


def _scatter(values, usable):
    full = np.full((len(usable), *np.shape(values)[1:]), np.nan)
    full[usable] = values
    return full

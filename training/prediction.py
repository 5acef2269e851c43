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
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from moleclip.tasks import default_target_names, is_classification, prediction_prefix, predictions_from_logits

__all__ = ["Predictor", "PredictionResult", "load_predictor", "predict_values", "local_model_folder"]


def local_model_folder(spec: str) -> str:
    """A local folder for `spec`: the folder itself, or a Hub repository downloaded whole, since the ensemble
    (ensemble/) and the applicability domain live beside the model and `Predictor` reads them from disk."""
    path = Path(spec).expanduser()
    if path.is_dir():
        return str(path)
    from moleclip.training.hub import check_model_exists

    check_model_exists(str(spec))  # a path that is not there: "not found", not a Hub request
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(repo_id=str(spec))
    except Exception as err:
        from moleclip.training.hub import HubUnavailableError

        raise HubUnavailableError(f"cannot load {spec!r} from the Hugging Face Hub: {type(err).__name__}: "
                                  f"{str(err).strip().splitlines()[0] if str(err).strip() else 'no answer'}") from err


def _model_folder(spec: str, uncertainty: bool | None, domain: bool | None) -> str:
    """The folder to read a model and what trusts it from. A Hub repository pushed by `moleclip finetune` holds its
    ensemble and domain beside the model, read from disk: it is fetched whole unless neither is wanted (read alone,
    the Hub model would predict without them, its numbers differing from the same model's folder). When the whole
    repository cannot be fetched (offline, with only the model in the cache) and neither was asked for, the model is
    used alone, with a warning."""
    from moleclip.training.hub import PRESETS

    if (uncertainty is False and domain is False) or str(spec) in PRESETS or Path(spec).expanduser().exists():
        return spec
    from moleclip.training.hub import HubUnavailableError

    try:
        return local_model_folder(spec)
    except HubUnavailableError as err:
        if uncertainty or domain or not _model_in_cache(spec):
            raise  # one message: with nothing in the cache, the model alone cannot be read either
        import warnings

        warnings.warn(f"{err}; predicting with the model alone, without its ensemble and applicability domain",
                      UserWarning, stacklevel=3)
        return spec


def _model_in_cache(spec: str) -> bool:
    """Whether the Hub cache holds `spec`'s config (the model alone may then load offline)."""
    from huggingface_hub import try_to_load_from_cache

    try:
        return isinstance(try_to_load_from_cache(str(spec), "config.json"), str)
    except Exception:  # not a valid repository name, say
        return False


def load_predictor(spec: str, trust_pickle: bool = False):
    """(model, processor) for a finetuned MoleCLIP folder or Hub repo; (FingerprintPredictor or ForestPredictor,
    None) for a baseline. A forest is loaded only with `trust_pickle` (its joblib file runs pickle).

    A pretrained encoder without a trained head is refused: its "predictions" would come from random weights.
    """
    from moleclip.training.baselines import FingerprintPredictor, ForestPredictor
    from moleclip.training.hub import PRESETS, read_model_config

    if str(spec) in PRESETS:
        raise ValueError(f"{spec!r} is a randomly initialised preset, not a finetuned model: pass the model/ folder "
                         "that `moleclip finetune` wrote, or a Hub repository of one")
    path = Path(spec)
    if path.is_dir() and (path / FingerprintPredictor.CONFIG_FILE).is_file():
        return FingerprintPredictor.load(path), None
    if path.is_dir() and (path / ForestPredictor.CONFIG_FILE).is_file():
        return ForestPredictor.load(path, trust_pickle=trust_pickle), None
    architectures = read_model_config(spec).get("architectures") or []
    if "MoleCLIPForPropertyPrediction" not in architectures:
        raise ValueError(
            f"{spec} is not a finetuned property model (architectures: {architectures or 'none recorded'}); "
            "finetune it first with `moleclip finetune` and pass its model/ folder"
        )
    from moleclip import MoleCLIPForPropertyPrediction
    from moleclip.training.hub import load_backbone, load_processor

    model = load_backbone(spec, MoleCLIPForPropertyPrediction, new_heads=False)  # every weight from the checkpoint
    return model.eval(), load_processor(spec)


def predict_values(model, processor, smiles: Sequence[str], batch_size: int = 64, device=None, progress: bool = True,
                   logits: bool = False):
    """(predictions [N, T] with NaN rows for molecules that could not be used, target names, skipped entries, task).
    Regression values in the targets' units; probabilities for classification, or with `logits=True` the logits an
    ensemble combines (a forest's probabilities as clipped logits, as finetune takes them)."""
    import torch

    if processor is None:  # fingerprint baselines
        from moleclip.processing.fingerprints import morgan_fingerprints
        from moleclip.training.baselines import ForestPredictor

        result = morgan_fingerprints(smiles, radius=model.settings["radius"], n_bits=model.settings["in_features"],
                                     progress=progress, standardize=model.settings.get("standardize", "none"))
        outputs = []
        if isinstance(model, ForestPredictor):  # values, or positive-class probabilities, already
            values = model.predict(result.bits)
            if logits and is_classification(model.task):
                from moleclip.training.uncertainty import probability_logits

                values = probability_logits(values)
            outputs.append(values)
        else:
            model = model.to(device or "cpu").eval()
            with torch.no_grad():
                for start in range(0, len(result.kept), batch_size):
                    x = torch.as_tensor(result.bits[start:start + batch_size], dtype=torch.float32,
                                        device=next(model.parameters()).device)
                    out = model(features=x).logits
                    outputs.append((out if logits else predictions_from_logits(out, model.task)).cpu().numpy())
        values = np.concatenate(outputs) if outputs else np.zeros((0, model.settings["num_targets"]))
        kept, skipped = result.kept, result.skipped
        names = default_target_names(model.settings.get("target_names"), model.settings["num_targets"])
        task = model.task
    else:
        from moleclip.training.inference import predict_smiles

        values, kept, skipped = predict_smiles(model, processor, smiles, batch_size=batch_size, device=device,
                                               progress=progress, on_error="skip", logits=logits)
        names = default_target_names(model.config.target_names, model.config.num_targets)
        task = model.config.task
    full = np.full((len(smiles), values.shape[1]), np.nan)  # values are [kept, T], also when nothing was kept
    if len(kept):
        full[np.asarray(kept)] = values
    return full, list(names), skipped, task


@dataclass
class PredictionResult:
    """Output columns (name -> one value per input molecule, in input order) and the molecules left out."""

    columns: dict[str, np.ndarray] = field(default_factory=dict)
    skipped: list = field(default_factory=list)
    standardized: list | None = None  # the molecule each entry was standardised to ("": failed); None: not standardised


class Predictor:
    """A finetuned model folder ready to predict; see the module docstring.

    `uncertainty` / `domain`: True requires the folder's ensemble calibration / applicability domain (an error if it
    has none), False leaves them out, None (default) uses them when the folder has them.
    """

    def __init__(self, spec: str, model, processor, trust: dict | None, domain, trust_pickle: bool = False,
                 device=None, embedding_domain=None):
        self.spec, self.model, self.processor = spec, model, processor
        self.trust, self.domain, self.trust_pickle, self.device = trust, domain, trust_pickle, device
        # MoleCLIP models also judge the domain in their own embedding space (cosine to the training molecules)
        self.embedding_domain = embedding_domain if processor is not None else None
        self._members = None

    @classmethod
    def load(cls, spec: str, trust_pickle: bool = False, uncertainty: bool | None = None,
             domain: bool | None = None, device=None) -> "Predictor":
        spec = _model_folder(spec, uncertainty, domain)
        model, processor = load_predictor(spec, trust_pickle=trust_pickle)
        return cls(spec, model, processor, _read_trust(spec, uncertainty), _read_domain(spec, domain), trust_pickle,
                   device, _read_embedding_domain(spec, domain))

    @property
    def standardize(self) -> str:
        """How molecules are prepared before the model sees them (the training molecules' preparation)."""
        return self.model.settings.get("standardize", "none") if self.processor is None else self.processor.standardize

    @property
    def smiles_column(self) -> str | None:
        """The SMILES column of the table the model was finetuned on, when the user named it: the column the tables it
        reads are read with by default (`processing.tables.table_smiles_column`)."""
        if self.processor is None:
            return self.model.settings.get("smiles_column")
        return getattr(self.model.config, "smiles_column", None)

    @property
    def task(self) -> str:
        return self.model.task if self.processor is None else self.model.config.task

    @property
    def target_names(self) -> list[str]:
        if self.processor is None:
            n = self.model.settings["num_targets"]
            return default_target_names(self.model.settings.get("target_names"), n)
        config = self.model.config
        return default_target_names(config.target_names, config.num_targets)

    @property
    def prefix(self) -> str:
        return prediction_prefix(self.task)

    def predict(self, smiles: Sequence[str], batch_size: int = 64, progress: bool = True,
                batches=None) -> PredictionResult:
        """The output columns for `smiles`: `<prefix>_<target>` (the ensemble mean when the folder has an ensemble),
        its `_spread` and `_lower`/`_upper` or `calibrated_probability_<target>`, and the domain columns.

        `batches` (MoleCLIP models): the molecules already drawn, as `training.screening.draw_chunk` yields them
        ((pixel values or None, kept positions, skipped entries) per batch of `smiles`); the model and the ensemble
        members that draw alike all take them, so each molecule is drawn once. Without them a MoleCLIP model's
        molecules are drawn here, batch by batch, the same way."""
        smiles = list(smiles)
        drawn = embeddings = None
        if self.processor is not None:
            if batches is None:
                batches = self._draw(smiles, batch_size, progress)
            values, skipped, drawn, embeddings = self._values_from_batches(len(smiles), batches)
            names, task = self.target_names, self.task
        else:
            values, names, skipped, task = predict_values(self.model, self.processor, smiles, batch_size=batch_size,
                                                          device=self.device, progress=progress)
        from moleclip.training.outputs import standardized_column

        result = PredictionResult(skipped=list(skipped), standardized=standardized_column(smiles, self.standardize))
        extra = {}
        if self.trust is not None:
            values, extra = self._ensemble_columns(smiles, names, task, skipped, batch_size, drawn)
        # float32: what the model computes in, so written with the digits it carries (outputs.table_cells); the
        # ensemble's mean, spread and intervals are computed from float32 outputs and carry no more
        for j, name in enumerate(names):
            result.columns[f"{self.prefix}_{name}"] = values[:, j].astype(np.float32)
        result.columns.update({name: column.astype(np.float32) for name, column in extra.items()})
        if self.domain is not None:
            result.columns.update(self._domain_columns(smiles, names, result.standardized))
        if self.embedding_domain is not None:
            result.columns.update(self._embedding_domain_columns(len(smiles), embeddings, names))
        return result

    def _torch_device(self):
        from moleclip.training.devices import choose_device

        return choose_device(self.device)

    def _draw(self, smiles: list[str], batch_size: int, progress: bool):
        """The molecules drawn in this process, batch by batch, as `screening.draw_chunk` yields them."""
        from tqdm.auto import tqdm

        from moleclip.training.screening import draw_chunk

        batches = draw_chunk(self.processor, smiles, batch_size, 0, self._torch_device())
        return tqdm(batches, total=-(-len(smiles) // batch_size), desc="predicting", unit="batch",
                    disable=not progress)

    def _values_from_batches(self, n: int, batches):
        """(the model's values [n, T], skipped, {member folder: values} for the members drawing as the model does,
        the model's embeddings [n, d] when the embedding domain needs them, else None) from drawn batches; NaN rows
        where a molecule could not be drawn."""
        import torch

        from moleclip.training.inference import property_outputs

        device = self._torch_device()
        models = [(None, self.model)]
        if self.trust is not None:
            models += [(folder, model) for folder, model, processor in self._member_models()
                       if processor is self.processor or (processor is not None
                                                          and processor.to_dict() == self.processor.to_dict())]
        models = [(folder, model.to(device).eval()) for folder, model in models]
        # Frozen-mode members are heads on the main model's own encoder module: they read its embeddings.
        encoder = getattr(self.model, "moleclip", None)
        on_shared_encoder = {folder for folder, model in models[1:] if getattr(model, "moleclip", None) is encoder}
        values: dict = {folder: None for folder, _ in models}
        skipped, embeddings = [], None
        with torch.no_grad():
            for pixels, kept, batch_skipped in batches:
                skipped += batch_skipped
                if pixels is None:
                    continue
                embeds = None
                for folder, model in models:
                    raw = folder is not None and is_classification(self.task)  # members: logits for the ensemble
                    if folder in on_shared_encoder:
                        out = property_outputs(model, image_embeds=embeds, logits=raw)
                    else:
                        out = property_outputs(model, pixels.to(next(model.parameters()).dtype),
                                               return_embeds=folder is None, logits=raw)
                    if isinstance(out, tuple):  # the main model's embeddings, from the same forward pass
                        out, embeds = out
                        if self.embedding_domain is not None:
                            if embeddings is None:
                                embeddings = np.full((n, embeds.shape[1]), np.nan, dtype=np.float32)
                            embeddings[kept] = embeds.float().cpu().numpy()
                    out = out.float().cpu().numpy()
                    if values[folder] is None:
                        values[folder] = np.full((n, out.shape[1]), np.nan)
                    values[folder][kept] = out
        for folder in values:
            if values[folder] is None:  # nothing in this batch could be drawn
                values[folder] = np.full((n, len(self.target_names)), np.nan)  # as predict_values does
        main = values.pop(None)
        return main, skipped, values, embeddings

    # ------------------------------------------------------------------ ensemble
    def _member_models(self):
        from moleclip.training.finetuning.trust import MEMBER_FILE, load_head_member

        if self._members is None:
            self._members = []
            for folder in self.trust["members"]:
                path = Path(self.spec) / folder
                if (path / MEMBER_FILE).is_file():  # frozen mode: a head on the encoder of the main folder
                    self._members.append((folder, load_head_member(path, self.model), self.processor))
                else:
                    self._members.append((folder, *load_predictor(str(path), trust_pickle=self.trust_pickle)))
        return self._members

    def _ensemble_columns(self, smiles, names, task, skipped, batch_size, drawn=None):
        """Every member's predictions, combined: (ensemble values [N, T] with NaN rows where skipped, extra columns).
        `drawn`: the members' values already computed from drawn pixels (the others predict from `smiles`)."""
        from moleclip.training.finetuning.trust import interval_columns
        from moleclip.training.uncertainty import calibration_from_dict, ensemble

        missing = {s.index for s in skipped}
        usable = np.array([i not in missing for i in range(len(smiles))])
        members = []  # with no usable molecule, every member gives [0, T]: the same columns, empty
        for folder, model, processor in self._member_models():
            # Classification members give logits, as finetune took them (the ensemble averages their probabilities)
            if drawn is not None and folder in drawn:
                values, member_skipped = drawn[folder], skipped
            else:
                values, _, member_skipped, _ = predict_values(model, processor, smiles, batch_size=batch_size,
                                                              device=self.device, progress=False,
                                                              logits=is_classification(task))
            if {s.index for s in member_skipped} != missing:  # all members prepare molecules the same way
                raise ValueError(f"ensemble member {folder} could not use the same molecules as the saved model")
            members.append(values[usable].astype(np.float64))
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
    from moleclip.training.applicability import EMBEDDING_DOMAIN_DIR, METADATA_FILE, ApplicabilityDomain

    folder = Path(spec) / EMBEDDING_DOMAIN_DIR
    if wanted is False or not (folder / METADATA_FILE).is_file():
        return None  # fingerprint models and folders written before it have only the Tanimoto domain
    return ApplicabilityDomain.load(folder)


def _read_trust(spec: str, wanted: bool | None) -> dict | None:
    from moleclip.training.finetuning.trust import TRUST_FILE

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
    from moleclip.training.applicability import METADATA_FILE, ApplicabilityDomain

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

"""Where models come from and where they go: backbones, checkpoint directories, model cards, the Hub.

* `load_backbone(spec)` accepts a preset (`tiny`, `base`), a MoleCLIP checkpoint (local folder or Hub name), any CLIP
  checkpoint (`openai/clip-vit-base-patch16`, full or vision-only), or the paper's released `.pth` file.
* `save_model_dir(...)` writes a complete, shareable folder: config, safetensors weights, preprocessor config, the
  remote-code files and a model card.
* `push_model_dir(...)` uploads such a folder in one commit.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import warnings
from pathlib import Path

from huggingface_hub import HfApi, constants, get_hf_file_metadata, hf_hub_url, try_to_load_from_cache
from huggingface_hub.errors import EntryNotFoundError, GatedRepoError, HfHubHTTPError, RepositoryNotFoundError
from safetensors import safe_open
from safetensors.torch import load_file
from transformers.utils import cached_file, logging as hf_logging

from moleclip import MoleCLIPConfig, MoleCLIPForPropertyPrediction, MoleCLIPImageProcessor, MoleCLIPModel, __version__
from moleclip.configuration_moleclip import MODEL_PRESETS as PRESETS
from moleclip.convert_original import convert_original_checkpoint, original_processor
from moleclip.model_cards import render_model_card
from moleclip.tasks import default_target_names

logger = logging.getLogger(__name__)

__all__ = ["HubUnavailableError", "check_init_factor", "check_model_exists", "check_push_possible", "load_backbone",
           "load_encoder", "load_processor", "looks_like_local_path", "read_model_config", "save_model_dir",
           "write_model_card", "push_model_dir", "describe_backbone"]

DEFAULT_BACKBONE = "openai/clip-vit-base-patch16"


class HubUnavailableError(OSError):
    """A model could not be fetched (no network, no such repository, or offline mode) and is not cached."""


_HUB_ID = re.compile(r"[A-Za-z0-9_.\-]+(/[A-Za-z0-9_.\-]+)?")
_WAYS_FORWARD = ("pass a local folder (a saved MoleCLIP or CLIP checkpoint), the paper's 'MoleCLIP - Primary.pth', "
                 "or a randomly initialised preset: tiny (seconds on a CPU) or base (the ViT-B/16 shape)")


def _hub_help(spec: str, err: BaseException | None = None, reason: str | None = None) -> HubUnavailableError:
    """One line saying why `spec` could not be had from the Hub, and what to do instead."""
    if reason is None:
        if isinstance(err, GatedRepoError):
            reason = "it is a gated repository: accept its terms on huggingface.co, then `hf auth login`"
        elif isinstance(err, RepositoryNotFoundError):
            reason = "there is no such repository on the Hugging Face Hub (or it is private: `hf auth login`)"
        elif constants.HF_HUB_OFFLINE:
            reason = "HF_HUB_OFFLINE is set and the files are not in the local Hugging Face cache"
        else:
            first = str(err).strip().splitlines()[0] if err is not None and str(err).strip() else ""
            reason = f"{type(err).__name__}: {first}" if err is not None else "unknown error"
    return HubUnavailableError(f"cannot load {spec!r}: {reason}. Instead, {_WAYS_FORWARD}.")


def looks_like_local_path(spec: str) -> bool:
    """Whether a model name that is not on disk was meant as a path rather than a Hub repository id: it starts with
    `.`, `/` or `~`, has more than one `/` (or a backslash), its parent folder exists, or it cannot be a Hub id."""
    text = str(spec)
    if text.startswith((".", "/", "~")) or text.count("/") > 1 or "\\" in text or os.sep in text.replace("/", ""):
        return True
    parent = os.path.dirname(text)
    if parent and os.path.isdir(parent):
        return True
    return _HUB_ID.fullmatch(text) is None


def _hub_file(spec: str, filename: str) -> str:
    """Local path of `filename` of Hub repository `spec`: from the cache, else downloaded. Fails at once, with the
    advice of :func:`_hub_help`, when offline or when the Hub cannot be reached: huggingface_hub itself would retry a
    failed request for a file it has not cached for about 25 s, and transformers asks for several files."""
    cached = try_to_load_from_cache(spec, filename)
    if isinstance(cached, str):
        return cached
    if constants.HF_HUB_OFFLINE:
        raise _hub_help(spec, reason="HF_HUB_OFFLINE is set and it is not in the local Hugging Face cache")
    try:  # one request, no retries: is the Hub there, and is the repository?
        get_hf_file_metadata(hf_hub_url(spec, filename), timeout=constants.HF_HUB_ETAG_TIMEOUT)
    except Exception as err:
        if isinstance(err, EntryNotFoundError):
            raise FileNotFoundError(f"{spec} on the Hugging Face Hub has no {filename}: not a model repository") from err
        if isinstance(err, HfHubHTTPError):
            raise _hub_help(spec, err) from err
        raise _hub_help(spec, reason=f"the Hugging Face Hub cannot be reached ({type(err).__name__}: "
                                     f"{str(err).strip().splitlines()[0] if str(err).strip() else 'no answer'}) "
                                     "and it is not in the local cache") from err
    try:
        return cached_file(spec, filename)
    except Exception as err:
        raise _hub_help(spec, err) from err


def check_model_exists(spec: str) -> None:
    """Raise FileNotFoundError("not found: SPEC") for a model that is neither on disk nor a plausible Hub name."""
    spec = str(spec)
    if spec in PRESETS or Path(spec).expanduser().exists():
        return
    if spec.endswith((".pth", ".pt")) or looks_like_local_path(spec):
        raise FileNotFoundError(f"not found: {spec}")


def read_model_config(spec: str) -> dict:
    """The config.json of a checkpoint folder or Hub repository, as a dict (see :func:`check_model_exists` and
    :func:`_hub_file` for the errors)."""
    spec = str(spec)
    check_model_exists(spec)
    path = Path(spec).expanduser()
    if path.is_dir():
        config_file = path / "config.json"
        if not config_file.is_file():
            # a pretraining or finetuning run folder keeps its model in model/: say so rather than only refuse
            hint = (f"; its model is in {path / 'model'}: pass that folder" if (path / "model" / "config.json").is_file()
                    else "")
            raise FileNotFoundError(f"{path} has no config.json: not a Hugging Face checkpoint folder{hint}")
        return json.loads(config_file.read_text())
    if path.exists():
        raise ValueError(f"{path} is a file; a model is a checkpoint folder, a Hub name, a .pth file or a preset")
    return json.loads(Path(_hub_file(spec, "config.json")).read_text())


# The dtypes (safetensors' names) weights are kept in. Every model here computes in floating point; an integer or
# boolean tensor in a weights file is not one it saved, and loading casts it to float32 without a word, after which
# the model predicts as confidently as ever.
FLOATING_DTYPES = {"F32": "float32", "F16": "float16", "BF16": "bfloat16", "F64": "float64"}


def check_weight_dtypes(path: str | Path) -> None:
    """Refuse a safetensors file that holds a tensor of a dtype no model uses, reading its header only (no tensor is
    loaded, so this runs before anything casts them)."""
    with safe_open(str(path), framework="pt") as weights:
        for name in weights.keys():
            dtype = weights.get_slice(name).get_dtype()
            if dtype not in FLOATING_DTYPES:
                raise ValueError(f"{path}: tensor {name} is stored as {dtype}, not as the floating-point weights a "
                                 f"model uses ({', '.join(FLOATING_DTYPES.values())}), and loading would cast it "
                                 "silently: save or download the checkpoint again")


def load_weights(path: str | Path) -> dict:
    """The tensors of a safetensors file whose dtypes :func:`check_weight_dtypes` accepts."""
    check_weight_dtypes(path)
    return load_file(str(path))


def _check_checkpoint_dtypes(spec: str) -> None:
    """:func:`check_weight_dtypes` for every weights file of a checkpoint folder (shards too), or of a Hub
    checkpoint's single file once it is in the cache."""
    folder = Path(spec).expanduser()
    if folder.is_dir():
        files = sorted(folder.glob("*.safetensors"))
    else:
        cached = try_to_load_from_cache(spec, "model.safetensors")
        files = [cached] if isinstance(cached, str) else []
    for path in files:
        check_weight_dtypes(path)


def load_encoder(spec: str) -> MoleCLIPModel:
    """The encoder alone, for embedding molecules (`embed`, `search`): no pseudo-label classifier is built, as none is
    used, so a finetuned model's folder (which has none) loads without the announcement that new ones are initialised
    for training, which only a job that trains them should print. Every encoder weight must be in the checkpoint."""
    return load_backbone(spec, MoleCLIPModel, pseudo_label_classes=[])


def _model_type_of(spec: str) -> str | None:
    """`model_type` of a local folder or Hub repo's config.json."""
    return read_model_config(spec).get("model_type")


def describe_backbone(spec: str) -> str:
    if spec in PRESETS:
        return f"the randomly initialised `{spec}` preset"
    return f"`{spec}`"


def check_init_factor(spec: str, init_factor: float) -> None:
    """Refuse an `init_factor` (see :func:`load_backbone`) that is not positive or whose backbone is not a preset;
    the training scripts call it while reading their options, before any slow work."""
    if str(spec) not in PRESETS:
        raise ValueError(f"--init-factor only applies to a randomly initialised preset ({', '.join(PRESETS)}), "
                         f"not to {spec!r}")
    if not init_factor > 0:
        raise ValueError(f"--init-factor must be positive, got {init_factor}")


def load_backbone(spec: str = DEFAULT_BACKBONE, model_class=MoleCLIPModel, init_factor: float | None = None,
                  new_heads: bool = True, **config_overrides):
    """Build `model_class` (MoleCLIPModel or MoleCLIPForPropertyPrediction) from a backbone specification.

    `new_heads=True` (finetuning, pretraining): a checkpoint without the property head or pseudo-label classifiers the
    job needs gets new ones, announced in one line. `new_heads=False` (inference): every tensor the model needs must
    be in the checkpoint with its shape, and nothing else may be, or the checkpoint is refused: a prediction never
    comes from random weights.

    `config_overrides` set fields of the MoleCLIP config (heads, targets...). For a MoleCLIP checkpoint they are
    applied on top of the saved config; head weights whose shape changes are re-initialised.

    `init_factor` scales a preset's random initialisation (CLIP's ``initializer_factor``, 1 by default). At CLIP's
    scale, drawings (mostly white) get nearly the same embedding for every molecule (cosine ~0.9995), so a preset
    trained from scratch barely moves off predicting the mean; 5 spreads them enough to learn. Only presets have a
    random initialisation to scale: anything else is refused.
    """
    if model_class not in (MoleCLIPModel, MoleCLIPForPropertyPrediction):
        raise TypeError("model_class must be MoleCLIPModel or MoleCLIPForPropertyPrediction")
    spec = str(spec)
    if init_factor is not None:
        check_init_factor(spec, init_factor)
        vision = dict(config_overrides.pop("vision_config", None) or {}, initializer_factor=float(init_factor))
        config_overrides["vision_config"] = vision
    if spec in PRESETS:
        return model_class(MoleCLIPConfig.from_preset(spec, **config_overrides))
    check_model_exists(spec)
    if spec.endswith((".pth", ".pt")):
        encoder = convert_original_checkpoint(spec, **config_overrides)
        return encoder if model_class is MoleCLIPModel else _encoder_to(model_class, encoder, config_overrides)
    model_type = _model_type_of(spec)
    try:
        if model_type == MoleCLIPConfig.model_type:
            config = MoleCLIPConfig.from_pretrained(spec)
            for key, value in config_overrides.items():
                setattr(config, key, value)
            config._validate_moleclip()
            _check_checkpoint_dtypes(spec)  # a local folder's before transformers casts them to float32
            with _quiet_loading():
                model, info = model_class.from_pretrained(spec, config=config, dtype="float32",
                                                          ignore_mismatched_sizes=True, output_loading_info=True)
            _check_checkpoint_dtypes(spec)  # a Hub checkpoint's, now that it is in the cache
            _check_loaded(model_class, spec, info, new_heads)
            return model
        if model_type in ("clip", "clip_vision_model"):
            return model_class.from_clip(spec, **config_overrides)
    except HubUnavailableError:
        raise
    except OSError as err:
        if Path(spec).exists():
            if "no file named" in str(err):
                raise FileNotFoundError(f"{spec}: the folder has a config but no weights file (an interrupted save?): "
                                        "save or download the checkpoint again") from err
            raise  # a local checkpoint's own problem, not the Hub's
        raise _hub_help(spec, err) from err
    except Exception as err:
        if type(err).__name__ == "SafetensorError":  # safetensors' own error type, raised for a damaged file
            raise ValueError(f"{spec}: its weights file is damaged ({err}); save or download the checkpoint "
                             "again") from err
        raise
    raise ValueError(
        f"{spec!r} is a {model_type!r} checkpoint; MoleCLIP starts from a CLIP or MoleCLIP checkpoint, the paper's "
        f".pth file, or a preset ({', '.join(PRESETS)})"
    )


# Parts of a checkpoint that a new job may legitimately start afresh: the property head (new targets) and the
# pseudo-label classifiers (new label sets). Anything else missing or reshaped means the weights are not usable.
_FRESH_PARTS = {"head.": "a new property head is", "label_heads.": "new pseudo-label classifiers are",
                "moleclip.label_heads.": "new pseudo-label classifiers are"}


def _drop_load_report(record: logging.LogRecord) -> bool:
    return "LOAD REPORT" not in str(record.msg)


@contextlib.contextmanager
def _quiet_loading():
    """transformers' loading report (a coloured table) and progress bar off: `_check_loaded` says what matters.

    A filter, not a higher level: transformers reads its logger's level to decide what else to check and log.
    """
    report = logging.getLogger("transformers.modeling_utils")  # the logger the report is written to
    bars = hf_logging.is_progress_bar_enabled()
    report.addFilter(_drop_load_report)
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        report.removeFilter(_drop_load_report)
        if bars:
            hf_logging.enable_progress_bar()


def _check_loaded(model_class, spec: str, info: dict, new_heads: bool = True) -> None:
    """Refuse a checkpoint whose weights are missing or reshaped (any of them when `new_heads` is False, the encoder's
    always); announce freshly initialised heads in one line."""
    missing = list(info.get("missing_keys") or [])
    reshaped = [entry[0] if isinstance(entry, (tuple, list)) else entry for entry in info.get("mismatched_keys") or []]
    unexpected = list(info.get("unexpected_keys") or [])
    problems = missing + reshaped + ([] if new_heads else unexpected)
    fresh = {}
    for key in problems:
        part = next((name for prefix, name in _FRESH_PARTS.items() if key.startswith(prefix)), None)
        if part is None or not new_heads:
            what = "lacks, reshapes or adds weights" if not new_heads else "lacks or reshapes weights the model needs"
            raise ValueError(f"{spec}: the checkpoint {what} ({key}"
                             f"{f' and {len(problems) - 1} more' if len(problems) > 1 else ''}); it is not a complete "
                             f"{model_class.__name__} checkpoint" + ("" if new_heads else ", and predicting from it "
                                                                     "would use random weights"))
        fresh[part] = "reshaped" if key in reshaped and part not in fresh else fresh.get(part, "absent")
    for part, why in fresh.items():
        cause = "has none" if why == "absent" else "has one of another shape"
        logger.warning(f"{spec} {cause}: {part} initialised, to be trained")


def _encoder_to(model_class, encoder: MoleCLIPModel, overrides: dict):
    config = MoleCLIPConfig(**{**encoder.config.to_dict(), **overrides})
    model = model_class(config)
    model.moleclip.load_state_dict(encoder.state_dict(), strict=False)
    return model


def load_processor(spec: str, **overrides) -> MoleCLIPImageProcessor:
    """The image processor that goes with a backbone or checkpoint, with `overrides` (settings, checked) applied.

    A MoleCLIP checkpoint (folder or Hub name): the processor saved with it. The paper's released `.pth` file: the
    processor its weights expect, `channel_order="bgr"` (`moleclip.convert_original.original_processor`). A preset
    or a CLIP checkpoint: the default processor (RGB, CLIP's statistics; CLIP's own processor is for photos).
    """
    spec = str(spec)
    path = Path(spec)
    if path.is_dir() and (path / "preprocessor_config.json").is_file():
        return MoleCLIPImageProcessor.from_pretrained(spec, **overrides)
    if path.is_dir() and (path / "config.json").is_file() and _model_type_of(spec) == MoleCLIPConfig.model_type:
        # model.save_pretrained(folder) alone leaves a folder like this. The default processor stands in, said aloud:
        # it may draw other pictures (channel order, size, back end) than the model was trained on.
        warnings.warn(f"{spec} has no preprocessor_config.json: its molecules are drawn with the default processor "
                      "(R, G, B; 224 px). If the model was trained on other pictures (the paper's converted weights "
                      "take B, G, R), save its processor in the folder (processor.save_pretrained(folder))",
                      UserWarning, stacklevel=2)
    if spec.endswith((".pth", ".pt")):
        return original_processor(**overrides)
    if not path.exists() and spec not in PRESETS:
        try:
            model_type = _model_type_of(spec)
        except Exception:  # cannot be read here: load_backbone reports that; the default processor stands in
            model_type = None
        if model_type == MoleCLIPConfig.model_type:
            # Its saved processor or nothing: a default one could feed the model other pictures (channel order,
            # back end, size) than it was trained on.
            return MoleCLIPImageProcessor.from_pretrained(spec, **overrides)
    return MoleCLIPImageProcessor(**overrides)


def save_model_dir(
    output_dir: str | Path,
    model,
    processor: MoleCLIPImageProcessor,
    card: dict | None = None,
    extra_files: dict[str, str] | None = None,
) -> Path:
    """Write a complete checkpoint folder: weights, config, processor, remote code, README model card, extras."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(output_dir)
    processor.save_pretrained(output_dir)
    card = dict(card or {})
    kind = "property" if isinstance(model, MoleCLIPForPropertyPrediction) else "encoder"
    vc = model.config.vision_config
    card.setdefault("title", output_dir.name)
    if not card.get("repo_id"):  # None (nothing pushed) too: the card's code would load from_pretrained("n/a")
        # a run keeps its model in <run>/model: the run's name is the one a user would give the repository
        named = output_dir.absolute()
        card["repo_id"] = f"<your-name>/{named.parent.name if named.name == 'model' else named.name}"
    card.setdefault("projection_dim", model.config.projection_dim)
    card.setdefault("vision_shape", f"{vc.num_hidden_layers} layers, width {vc.hidden_size}, patch {vc.patch_size}, {vc.image_size} px")
    card.setdefault("pseudo_label_classes", ", ".join(map(str, model.config.pseudo_label_classes)) or "none")
    card.setdefault("head_summary", f"{model.config.head_num_layers} x {model.config.head_hidden_size} hidden units")
    card.setdefault("targets", ", ".join(default_target_names(model.config.target_names, model.config.num_targets)))
    card.setdefault("task", model.config.task)
    card.setdefault(
        "prediction_note",
        {"regression": "predicted values in the targets' units", "classification": "one logit per target; sigmoid for probabilities"}[model.config.task],
    )
    write_model_card(output_dir, kind, card, extra_files)
    return output_dir


def write_model_card(output_dir: str | Path, kind: str, card: dict, extra_files: dict[str, str] | None = None) -> Path:
    """The model card (README.md, `model_cards/<kind>.md` filled with `card`) and `extra_files` (name -> text: the
    results) of a model folder: the one way every model folder gets them, MoleCLIP checkpoints (`save_model_dir`) and
    fingerprint baselines alike."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    card = {"package_version": __version__, **card}
    (output_dir / "README.md").write_text(render_model_card(kind, **card), encoding="utf-8")
    for name, text in (extra_files or {}).items():
        (output_dir / name).write_text(text, encoding="utf-8")
    return output_dir


# What an earlier push to the same repository may have left that this folder does not have, removed in the same commit:
# an upload only adds, and a model's files mixed with another's load as a wrong model without an error (an earlier
# frozen run's ensemble/seed_1/member.json beside a full run's seed_1 model makes predict use the old head; another
# run's weights shard or trust files would be read too). Files a user added by hand (a licence, pictures) are kept.
STALE_ON_THE_HUB = ["ensemble/*", "applicability*", "uncertainty.json", "results.json", "results.md",
                    "training_results.json", "*.safetensors", "*.bin", "*.index.json"]


def check_push_possible(api: HfApi | None = None) -> None:
    """Refuse a push to the Hub that cannot happen (offline mode, without a stand-in `api`); a job that pushes its
    result calls it before the work, not after."""
    # read as huggingface_hub reads it (1, on, yes, true, any case): HF_HUB_OFFLINE=no or off is not offline
    if api is None and os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in ("1", "ON", "YES", "TRUE"):
        raise HubUnavailableError("HF_HUB_OFFLINE is set: unset it to push to the Hub, or leave --push-to-hub out")


def _warn_of_training_molecules(folder: Path, repo_id: str) -> None:
    """Say it when an upload that may be public carries the training molecules and their measured values: a finetuned
    model's applicability domain keeps them (predict's nearest-training-molecule columns), and a company's assay data
    would otherwise go to the Hub with nothing said."""
    carriers = []
    for path in sorted(folder.rglob("applicability.json")):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if record.get("reference_ids") or record.get("reference_labels"):
            carriers.append(path.relative_to(folder).as_posix())
    if carriers:
        warnings.warn(f"{repo_id}: the upload holds the training molecules and their labels ({', '.join(carriers)}: "
                      "the applicability domain and the nearest training molecule of each prediction); the repository "
                      "is public unless it is private (--hub-private) or your organisation makes new ones private",
                      UserWarning, stacklevel=2)


def push_model_dir(
    folder: str | Path, repo_id: str, private: bool | None = None, token: str | None = None,
    commit_message: str = "Upload MoleCLIP model", api: HfApi | None = None,
) -> str:
    """Upload a folder written by `save_model_dir` to `repo_id` in one commit; returns the commit URL."""
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder} is not a saved model folder (no config.json)")
    if api is None:
        check_push_possible()
        api = HfApi()
    if not private:
        _warn_of_training_molecules(folder, repo_id)
    repo_id = api.create_repo(repo_id, private=private, token=token, exist_ok=True).repo_id
    # Checkpoints, logs and the (possibly large) pseudo-label table stay local: the Hub repo gets the model,
    # processor, code, card and results. A temporary file of an interrupted write (outputs.write_atomically) or a
    # lock is no output either.
    commit = api.upload_folder(
        repo_id=repo_id, folder_path=str(folder), commit_message=commit_message, token=token,
        ignore_patterns=["checkpoints/*", "tensorboard/*", "*.tmp/*", "pseudo_labels.parquet", ".*.tmp-*",
                         "*/.*.tmp-*", "*.lock"],
        delete_patterns=STALE_ON_THE_HUB,
    )
    return str(getattr(commit, "commit_url", commit))

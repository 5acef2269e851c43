"""The settings of a pretraining run: `PretrainConfig`, its command line and its JSON file, and the run's file layout.

It belongs to the library, which runs a pretraining from it (`pretraining.run.pretrain(config)`); the command line
builds `moleclip pretrain`'s options from its fields (`add_arguments`). Only the standard library at module level (the
package's lists of schedules, optimizers and standardisations are imported when a config is built), so that `moleclip
pretrain --help` pays for the package's import and nothing more (accelerate, RDKit's standardiser).

Output layout of a run (`--output-dir`):

    pretrain_config.json      every setting (this class, as JSON)
    pseudo_labels.parquet     pseudo-labels computed on the fly (+ .json: how), reused by a resumed run
    metrics.csv               one row per logged step (loss parts, lr, images/s) and per validation
    tensorboard/              the same, when tensorboard is installed
    validation_initial.json   validation before the first step
    checkpoints/step_N/       resumable state (--save-every, and the last step)
    training_results.json     summary of the run
    model/                    the final model: weights, config, processor, remote code, model card (what is pushed)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field

from moleclip.processing.standardize import check_standardization

from moleclip.training.loop import OPTIMIZERS, SCHEDULES

from moleclip.training.serving.hub import check_init_factor

__all__ = ["PretrainConfig", "TASKS", "CONFIG_FILE", "PSEUDO_LABEL_FILE", "RESULTS_FILE", "MODEL_DIR", "KILL_ENV", "RUN_OUTPUTS"]

CONFIG_FILE = "pretrain_config.json"
PSEUDO_LABEL_FILE = "pseudo_labels.parquet"
RESULTS_FILE = "training_results.json"
MODEL_DIR = "model"
# What a run writes in its folder (see the layout above): present before a run starts means another run is there.
RUN_OUTPUTS = (CONFIG_FILE, PSEUDO_LABEL_FILE, "pseudo_labels.json", "metrics.csv", "tensorboard",
               "validation_initial.json", "checkpoints", RESULTS_FILE, MODEL_DIR)
# Test hook: the process SIGKILLs itself when it is about to run this optimizer step (fault-tolerance tests).
KILL_ENV = "MOLECLIP_TEST_KILL_AT_STEP"
# Settings renamed since they were first written to pretrain_config.json: old name -> new name.
RENAMED = {"head_lr": "classifier_lr", "head_weight_decay": "classifier_weight_decay"}
# The pretraining tasks, in the order a config records them; a config file written before `tasks` was a setting ran both.
TASKS = ("classification", "contrastive")


def _opt(help_text: str, **extra) -> dict:
    return {"help": help_text, **extra}


@dataclass
class PretrainConfig:
    """Every setting of a pretraining run. Each field is a command-line option (`--field-name`)."""

    # ---- data
    input: str | None = field(default=None, metadata=_opt(
        ".smi/.csv/.parquet of SMILES, with or without pseudo-label columns label_k<K> (computed when missing)",
        required=True))
    output_dir: str | None = field(default=None, metadata=_opt(
        f"folder of the run: checkpoints, logs, and the final model in <output-dir>/{MODEL_DIR}", required=True))
    smiles_column: str | None = field(default=None, metadata=_opt("SMILES column of a CSV/Parquet input (default: auto)"))
    standardize: str = field(default="none", metadata=_opt(
        "none: draw the SMILES as written (the paper's); parent: each molecule's largest organic fragment, "
        "neutralised (RDKit MolStandardize), for labels and drawings alike; an input with label columns must have been "
        "labelled the same way (moleclip pseudo-labels --standardize records it). Saved with the model's processor"))
    k: list[str] | None = field(default=None, metadata=_opt(
        "K of each pseudo-label set. Input without label columns: computed on the fly (default 300 3000; 'auto': the "
        f"knee of the inertia curve) and saved to <output-dir>/{PSEUDO_LABEL_FILE}; input with label columns: which "
        "of them to use (default all)"))
    limit: int | None = field(default=None, metadata=_opt("use only the first N molecules of the input"))
    valid_fraction: float = field(default=0.01, metadata=_opt("held-out fraction for validation losses (0: none)"))
    max_valid: int = field(default=2048, metadata=_opt("at most this many held-out molecules"))
    augmentation: str = field(default="default", metadata=_opt("augmentation preset of both views: none|default|intense"))
    prerendered: str | None = field(default=None, metadata=_opt("store written by `moleclip prerender` to read drawings from"))
    num_workers: int | None = field(default=None, metadata=_opt(
        "DataLoader workers drawing pictures, per process (default: the process's share of the cores, minus one)"))
    coordinate_cache_size: int = field(default=10_000, metadata=_opt(
        "molecules whose 2D layout each drawing worker keeps (about 70 KiB each: 10,000 take 0.65 GiB per worker; "
        "each worker's cache also stops at an estimated 1 GiB)"))
    augment_on: str = field(default="auto", metadata=_opt(
        "where the classical augmentation runs: workers (each picture in the DataLoader workers, numpy/PIL: fastest "
        "on a CPU), device (whole batches on the accelerator, so workers only draw or decode) or auto (device on a "
        "GPU, else workers; a resumed run keeps the place it started with)"))
    pseudo_label_jobs: int | None = field(default=None, metadata=_opt("processes for on-the-fly MACCS keys (default: all cores)"))
    # ---- model
    backbone: str = field(default="openai/clip-vit-base-patch16", metadata=_opt(
        "CLIP name or path, MoleCLIP checkpoint, the paper's .pth, or a preset (tiny, base)"))
    init_factor: float | None = field(default=None, metadata=_opt(
        "scale of a preset's random initialisation (CLIP's: 1). At 1, drawings get nearly the same embedding for "
        "every molecule and the contrastive task starts stuck at chance; 5 spreads them"))
    # ---- objective
    tasks: list[str] = field(default=TASKS, metadata=_opt(
        "what the loss trains: classification (the K-means pseudo-labels of MACCS keys, one linear classifier per K), "
        "contrastive (a plain against a randomly styled drawing of each molecule), or both, as in the paper. "
        "Contrastive only computes no pseudo-labels and trains no classifiers; classification only draws one picture "
        "per molecule"))
    # ---- batches
    batch_size: int = field(default=256, metadata=_opt("global batch (all processes) of one forward pass"))
    group_size: int = field(default=32, metadata=_opt("molecules of the same fine pseudo-class placed together"))
    groups_per_batch: int | None = field(default=None, metadata=_opt("groups per batch (default batch-size / group-size)"))
    # ---- optimisation
    max_steps: int | None = field(default=None, metadata=_opt("optimizer steps (default: --epochs worth)"))
    epochs: float = field(default=4.0, metadata=_opt("epochs over the training molecules, when --max-steps is not given"))
    encoder_lr: float = field(default=5e-6, metadata=_opt("learning rate of the vision tower and projection"))
    encoder_weight_decay: float = field(default=0.1, metadata=_opt(
        "weight decay of the encoder (with --optimizer adam an L2 term in the gradient, as in the paper)"))
    classifier_lr: float = field(default=0.01, metadata=_opt(
        "learning rate of the pseudo-label classifiers (one linear layer per K)"))
    classifier_weight_decay: float = field(default=0.0, metadata=_opt("weight decay of the pseudo-label classifiers"))
    optimizer: str = field(default="adam", metadata=_opt(
        "adam: torch.optim.Adam, weight decay added to the gradient as an L2 term (the paper's) | adamw: AdamW, "
        "decoupled decay that shrinks the weights directly. Both with betas (0.9, 0.98), eps 1e-6"))
    schedule: str = field(default="constant", metadata=_opt("constant | constant_with_warmup | cosine (warm-up + cosine)"))
    warmup_steps: int = field(default=0, metadata=_opt("linear warm-up steps"))
    mixed_precision: str | None = field(default=None, metadata=_opt("no | fp16 | bf16 (default: accelerate's setting)"))
    gradient_accumulation_steps: int = field(default=1, metadata=_opt("forward passes per optimizer step"))
    max_grad_norm: float | None = field(default=None, metadata=_opt(
        "clip the gradient norm to this value (default none: no clipping, as in the paper)"))
    seed: int = field(default=0, metadata=_opt("seed of initialisation, pseudo-labels, split, batches and drawings"))
    # ---- checkpoints, logs, sharing
    save_every: int | None = field(default=1000, metadata=_opt(
        "checkpoint every N optimizer steps, and at the last step (none: no checkpoints)"))
    save_total_limit: int | None = field(default=3, metadata=_opt("checkpoints kept (oldest deleted)"))
    eval_every: int | None = field(default=500, metadata=_opt("validation every N optimizer steps (none: only at the end)"))
    log_every: int = field(default=10, metadata=_opt("metrics row every N optimizer steps"))
    resume: str | None = field(default=None, metadata=_opt("'latest' or a checkpoint folder to continue from"))
    overwrite: bool = field(default=False, metadata=_opt(
        "replace an earlier run in --output-dir (refused without it, unless resuming)"))
    push_to_hub: str | None = field(default=None, metadata=_opt("upload the final model to this Hub repo (org/name)"))
    hub_private: bool = field(default=False, metadata=_opt("create the Hub repo as private"))
    progress: bool = field(default=True, metadata=_opt("tqdm progress bars"))
    debug_dump_dir: str | None = field(default=None, metadata=_opt(
        "write per-process batch contents (molecule ids, contrastive logits shape, first embeddings) here"))

    def __post_init__(self):
        given = [self.tasks] if isinstance(self.tasks, str) else list(self.tasks or [])
        unknown = [t for t in given if t not in TASKS]
        if unknown or not given:
            raise ValueError(f"tasks must be classification, contrastive or both, got {' '.join(map(str, given)) or 'none'}")
        self.tasks = [t for t in TASKS if t in given]  # one spelling per choice, so that a resumed run compares equal
        for name in ("batch_size", "group_size", "gradient_accumulation_steps", "log_every", "max_valid",
                     "coordinate_cache_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("max_steps", "save_every", "eval_every", "groups_per_batch", "limit"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1 (or none), got {value}")
        if self.batch_size % self.group_size:
            raise ValueError(f"batch_size {self.batch_size} is not a multiple of group_size {self.group_size}")
        if self.groups_per_batch is None:
            self.groups_per_batch = self.batch_size // self.group_size
        elif self.groups_per_batch * self.group_size != self.batch_size:
            raise ValueError(f"groups_per_batch x group_size = {self.groups_per_batch} x {self.group_size} "
                             f"!= batch_size {self.batch_size}")
        if not 0 <= self.seed < 2**32:  # numpy's and scikit-learn's seeds; refused now, not after the MACCS keys
            raise ValueError(f"seed must be in 0..{2**32 - 1}, got {self.seed}")
        if not 0.0 <= self.valid_fraction < 1.0:
            raise ValueError(f"valid_fraction must be in [0, 1), got {self.valid_fraction}")
        if self.init_factor is not None:
            check_init_factor(self.backbone, self.init_factor)  # now, not after the pseudo-labels
        if self.epochs <= 0:
            raise ValueError(f"epochs must be > 0, got {self.epochs}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        if self.augment_on not in ("auto", "workers", "device"):
            raise ValueError(f"augment_on must be auto, workers or device, got {self.augment_on!r}")
        check_standardization(self.standardize)
        if self.mixed_precision not in (None, "no", "fp16", "bf16"):
            raise ValueError(f"mixed_precision must be no, fp16 or bf16, got {self.mixed_precision!r}")
        if self.max_grad_norm is not None and self.max_grad_norm <= 0:
            self.max_grad_norm = None
        if self.k is not None and list(self.k) == [None]:
            self.k = None  # `--k none`: the option's way of asking for the default, as for every optional setting
        if self.k is not None:
            if [str(k) for k in self.k] == ["auto"]:
                self.k = ["auto"]
            else:
                try:
                    self.k = [int(k) for k in self.k]
                except (TypeError, ValueError):  # TypeError: `none` among numbers (--k 300 none)
                    raise ValueError(f"k must be integers or the single word auto, got "
                                     f"{['none' if k is None else k for k in self.k]}") from None
                if any(k < 2 for k in self.k) or len(set(self.k)) != len(self.k):
                    raise ValueError(f"k must be distinct values >= 2, got {self.k}")
            if "classification" not in self.tasks:
                raise ValueError("--k sets the pseudo-labels of the classification task, which --tasks contrastive "
                                 "leaves out: drop --k, or add classification to --tasks")

    def check_required(self) -> None:
        missing = [f.name for f in dataclasses.fields(self) if f.metadata.get("required") and getattr(self, f.name) is None]
        if missing:
            raise ValueError("missing required setting(s): " + ", ".join("--" + m.replace("_", "-") for m in missing))

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2)

    @staticmethod
    def saved_settings(text: str) -> dict:
        """The settings of a `pretrain_config.json`, with old names brought up to date (see `RENAMED`)."""
        data = json.loads(text)
        for old, new in RENAMED.items():
            if old in data and new not in data:
                data[new] = data.pop(old)
        return data

    @classmethod
    def from_json(cls, text: str) -> "PretrainConfig":
        data = cls.saved_settings(text)
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    # ------------------------------------------------------------------ command line
    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
        """Add one option per field to `parser` (`none` sets an optional value to None); returns the parser."""
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            kind, optional, is_list = _unpack_type(hints[f.name])
            flag = "--" + f.name.replace("_", "-")
            help_text = f.metadata.get("help", "")
            if f.default is not None and not f.metadata.get("required"):
                shown = " ".join(map(str, f.default)) if isinstance(f.default, tuple) else f.default
                help_text += f" [default: {shown}]"
            if kind is bool:
                parser.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=f.default, help=help_text)
                continue
            convert = _converter(kind, optional)
            kwargs = dict(dest=f.name, type=convert, default=f.default, help=help_text, metavar=f.name.upper())
            if is_list:
                kwargs["nargs"] = "+"
            if f.metadata.get("required"):
                kwargs["required"] = True
            parser.add_argument(flag, **kwargs)
        return parser

    @classmethod
    def build_parser(cls, prog: str = "pretrain.py", description: str | None = None) -> argparse.ArgumentParser:
        """A parser of its own, with the options of `add_arguments`."""
        parser = argparse.ArgumentParser(prog=prog, description=description or __doc__,
                                         formatter_class=argparse.RawDescriptionHelpFormatter)
        return cls.add_arguments(parser)

    @classmethod
    def from_namespace(cls, args: argparse.Namespace) -> "PretrainConfig":
        """The config from parsed options (attributes that are not fields, such as a dispatcher's, are ignored)."""
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in vars(args).items() if k in known})

    @classmethod
    def from_args(cls, argv: list[str] | None = None, **parser_kwargs) -> "PretrainConfig":
        return cls.from_namespace(cls.build_parser(**parser_kwargs).parse_args(argv))


def _unpack_type(hint) -> tuple[type, bool, bool]:
    """(element type, accepts None, is a list) of a field annotation such as `list[int] | None`."""
    optional = False
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        optional = type(None) in args
        hint = next(a for a in args if a is not type(None))
    if typing.get_origin(hint) is list:
        return typing.get_args(hint)[0], optional, True
    return hint, optional, False


def _converter(kind: type, optional: bool):
    def convert(text: str):
        if optional and text.lower() == "none":
            return None
        return kind(text)

    convert.__name__ = kind.__name__  # argparse names the type in its error messages
    return convert

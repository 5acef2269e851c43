#!/usr/bin/env python
"""Continued pretraining of a MoleCLIP encoder on pictures of molecules (an `accelerate launch` entry point).

A file of SMILES goes in, a MoleCLIP checkpoint folder (weights, config, image processor, remote code, model card)
comes out. The objective is the paper's: a symmetric contrastive loss between a plain and a randomly styled,
augmented drawing of each molecule, with the negatives taken from the global batch across processes, plus one
cross-entropy per K-means pseudo-label set of MACCS keys. Batches are groups of molecules of the same fine class.

Runs on one CPU, one GPU or many (`accelerate launch`), survives being killed (`--resume latest` continues from the
newest checkpoint at the exact step, with the same data order and the same pictures), and can push the result to
the Hub (`--push-to-hub REPO`). Every setting lives in `PretrainConfig`; each field is a command-line option and the
whole config is saved as `<output-dir>/pretrain_config.json`.

Examples:
  python training/pretrain.py --input molecules.smi --backbone tiny --output-dir runs/tiny --k 30 300 --max-steps 200
  accelerate launch training/pretrain.py --input chembl_labels.parquet --backbone openai/clip-vit-base-patch16 \\
      --output-dir runs/moleclip --batch-size 256 --epochs 4 --mixed-precision bf16 --resume latest
"""

from __future__ import annotations

import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent
if __name__ == "__main__" and sys.path and Path(sys.path[0] or ".").resolve() == _HERE:
    # `python training/pretrain.py` puts training/ first on sys.path, where its module names could shadow installed
    # packages; everything here is imported through the `moleclip` package instead.
    sys.path.pop(0)


def _ensure_package_importable() -> None:
    """Make `import moleclip` work from a source checkout that was not pip-installed.

    The repository keeps the folders `modeling_moleclip/`, `processing/`, `training/`, `model_cards/`, installed as
    `moleclip`, `moleclip.processing`, ...; this finder applies the same mapping when no installation provides it.
    """
    import importlib.abc
    import importlib.util

    try:
        import moleclip.training  # noqa: F401

        return
    except ImportError:
        pass
    root = _HERE.parent
    folders = {"moleclip": "modeling_moleclip", "moleclip.processing": "processing", "moleclip.training": "training",
               "moleclip.model_cards": "model_cards"}
    if not all((root / f / "__init__.py").is_file() for f in folders.values()):
        raise ImportError("the moleclip package is not installed and this script is not inside its source tree: "
                          "`pip install -e .` in the repository")

    class _SourceTreeFinder(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name in folders:
                folder = root / folders[name]
                return importlib.util.spec_from_file_location(name, folder / "__init__.py",
                                                              submodule_search_locations=[str(folder)])
            return None

    for name in [n for n in sys.modules if n == "moleclip" or n.startswith("moleclip.")]:
        del sys.modules[name]  # half-imported leftovers of the failed attempt
    sys.meta_path.insert(0, _SourceTreeFinder())


if __name__ == "__main__":
    _ensure_package_importable()

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import signal  # noqa: E402
import time  # noqa: E402
import types  # noqa: E402
import typing  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402

__all__ = ["PretrainConfig", "pretrain", "main", "build_param_groups", "load_pretraining_table", "PretrainingTable"]

PSEUDO_LABEL_FILE = "pseudo_labels.parquet"
CONFIG_FILE = "pretrain_config.json"
RESULTS_FILE = "training_results.json"
# Test hook: the process SIGKILLs itself when it is about to run this optimizer step (fault-tolerance tests).
KILL_ENV = "MOLECLIP_TEST_KILL_AT_STEP"


def _opt(help_text: str, **extra) -> dict:
    return {"help": help_text, **extra}


@dataclass
class PretrainConfig:
    """Every setting of a pretraining run. Each field is a command-line option (`--field-name`)."""

    # ---- data
    input: str | None = field(default=None, metadata=_opt(
        ".smi/.csv/.parquet of SMILES, with or without pseudo-label columns label_k<K> (computed when missing)",
        required=True))
    output_dir: str | None = field(default=None, metadata=_opt("folder for checkpoints, logs and the final model",
                                                                 required=True))
    smiles_column: str | None = field(default=None, metadata=_opt("SMILES column of a CSV/Parquet input (default: auto)"))
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
    coordinate_cache_size: int = field(default=50_000, metadata=_opt("molecules whose 2D layout each worker keeps"))
    pseudo_label_jobs: int | None = field(default=None, metadata=_opt("processes for on-the-fly MACCS keys (default: all cores)"))
    # ---- model
    backbone: str = field(default="openai/clip-vit-base-patch16", metadata=_opt(
        "CLIP name or path, MoleCLIP checkpoint, the paper's .pth, or a preset (tiny, base)"))
    init_factor: float | None = field(default=None, metadata=_opt(
        "scale of a preset's random initialisation (CLIP's: 1). At 1, drawings get nearly the same embedding for "
        "every molecule and the contrastive task starts stuck at chance; 5 spreads them"))
    # ---- batches
    batch_size: int = field(default=256, metadata=_opt("global batch (all processes) of one forward pass"))
    group_size: int = field(default=32, metadata=_opt("molecules of the same fine pseudo-class placed together"))
    groups_per_batch: int | None = field(default=None, metadata=_opt("groups per batch (default batch-size / group-size)"))
    # ---- optimisation
    max_steps: int | None = field(default=None, metadata=_opt("optimizer steps (default: --epochs worth)"))
    epochs: float = field(default=4.0, metadata=_opt("epochs over the training molecules, when --max-steps is not given"))
    encoder_lr: float = field(default=5e-6, metadata=_opt("learning rate of the vision tower and projection"))
    encoder_weight_decay: float = field(default=0.1, metadata=_opt("weight decay of the encoder"))
    head_lr: float = field(default=0.01, metadata=_opt("learning rate of the pseudo-label heads"))
    head_weight_decay: float = field(default=0.0, metadata=_opt("weight decay of the heads"))
    schedule: str = field(default="constant", metadata=_opt("constant | constant_with_warmup | cosine (warm-up + cosine)"))
    warmup_steps: int = field(default=0, metadata=_opt("linear warm-up steps"))
    mixed_precision: str | None = field(default=None, metadata=_opt("no | fp16 | bf16 (default: accelerate's setting)"))
    gradient_accumulation_steps: int = field(default=1, metadata=_opt("forward passes per optimizer step"))
    max_grad_norm: float | None = field(default=1.0, metadata=_opt("gradient clipping norm (none: no clipping)"))
    seed: int = field(default=0, metadata=_opt("seed of initialisation, pseudo-labels, split, batches and drawings"))
    # ---- checkpoints, logs, sharing
    save_every: int | None = field(default=1000, metadata=_opt("checkpoint every N optimizer steps (none: never)"))
    save_total_limit: int | None = field(default=3, metadata=_opt("checkpoints kept (oldest deleted)"))
    eval_every: int | None = field(default=500, metadata=_opt("validation every N optimizer steps (none: only at the end)"))
    log_every: int = field(default=10, metadata=_opt("metrics row every N optimizer steps"))
    resume: str | None = field(default=None, metadata=_opt("'latest' or a checkpoint folder to continue from"))
    push_to_hub: str | None = field(default=None, metadata=_opt("upload the final model to this Hub repo (org/name)"))
    hub_private: bool = field(default=False, metadata=_opt("create the Hub repo as private"))
    progress: bool = field(default=True, metadata=_opt("tqdm progress bars"))
    debug_dump_dir: str | None = field(default=None, metadata=_opt(
        "write per-process batch contents (molecule ids, contrastive logits shape, first embeddings) here"))

    def __post_init__(self):
        for name in ("batch_size", "group_size", "gradient_accumulation_steps", "log_every", "max_valid"):
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
        if not 0.0 <= self.valid_fraction < 1.0:
            raise ValueError(f"valid_fraction must be in [0, 1), got {self.valid_fraction}")
        if self.init_factor is not None:
            from moleclip.training.hub import check_init_factor

            check_init_factor(self.backbone, self.init_factor)  # now, not after the pseudo-labels
        if self.epochs <= 0:
            raise ValueError(f"epochs must be > 0, got {self.epochs}")
        if self.schedule not in ("constant", "constant_with_warmup", "cosine"):
            raise ValueError(f"schedule must be constant, constant_with_warmup or cosine, got {self.schedule!r}")
        if self.mixed_precision not in (None, "no", "fp16", "bf16"):
            raise ValueError(f"mixed_precision must be no, fp16 or bf16, got {self.mixed_precision!r}")
        if self.max_grad_norm is not None and self.max_grad_norm <= 0:
            self.max_grad_norm = None
        if self.k is not None:
            if [str(k) for k in self.k] == ["auto"]:
                self.k = ["auto"]
            else:
                try:
                    self.k = [int(k) for k in self.k]
                except ValueError:
                    raise ValueError(f"k must be integers or the single word auto, got {self.k}") from None
                if any(k < 2 for k in self.k) or len(set(self.k)) != len(self.k):
                    raise ValueError(f"k must be distinct values >= 2, got {self.k}")

    def check_required(self) -> None:
        missing = [f.name for f in dataclasses.fields(self) if f.metadata.get("required") and getattr(self, f.name) is None]
        if missing:
            raise ValueError("missing required setting(s): " + ", ".join("--" + m.replace("_", "-") for m in missing))

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> "PretrainConfig":
        data = json.loads(text)
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    # ------------------------------------------------------------------ command line
    @classmethod
    def build_parser(cls, parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
        """An argparse parser with one option per field (`none` sets an optional value to None)."""
        parser = parser or argparse.ArgumentParser(
            prog="pretrain.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            kind, optional, is_list = _unpack_type(hints[f.name])
            flag = "--" + f.name.replace("_", "-")
            help_text = f.metadata.get("help", "")
            if f.default is not None and not f.metadata.get("required"):
                help_text += f" [default: {f.default}]"
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
    def from_args(cls, argv: list[str] | None = None) -> "PretrainConfig":
        args = cls.build_parser().parse_args(argv)
        return cls(**vars(args))


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


# ---------------------------------------------------------------------------------------------------- data
@dataclass
class PretrainingTable:
    """The molecules to train on, their pseudo-labels and where they came from."""

    smiles: list[str]
    labels: "object"  # np.ndarray [n, n_label_sets], int64
    ks: list[int]
    ids: "object"  # np.ndarray [n]: row of each molecule in the input file (0-based, header excluded)
    source: str  # how the labels were obtained, for the model card


def _read_input(config: PretrainConfig):
    import pandas as pd

    from moleclip.processing.smiles_files import detect_smiles_column, read_smiles

    path = Path(config.input)
    if not path.is_file():
        raise FileNotFoundError(f"input file not found: {path}")
    name = path.name.lower()
    if name.endswith((".csv", ".csv.gz")):
        frame = pd.read_csv(path, dtype={config.smiles_column: str} if config.smiles_column else None,
                            keep_default_na=False, nrows=config.limit)
    elif name.endswith((".parquet", ".pq")):
        frame = pd.read_parquet(path)
    else:
        frame = pd.DataFrame({"smiles": read_smiles(path)})
    if config.limit is not None:
        frame = frame.iloc[: config.limit]
    column = detect_smiles_column(frame.columns, config.smiles_column, source=str(path))
    frame = frame.rename(columns={column: "smiles"}) if column != "smiles" else frame
    frame["smiles"] = frame["smiles"].astype(str)
    return frame.reset_index(drop=True)


def _columns_by_k(columns) -> dict[int, str]:
    from moleclip.processing.pseudo_labels import LABEL_PREFIX, label_columns

    found = label_columns([str(c) for c in columns])
    if isinstance(found, dict):  # {K: column}
        return dict(found)
    return {int(name[len(LABEL_PREFIX):]): name for name in found}


def _labels_from_columns(frame, config: PretrainConfig):
    import numpy as np

    found = _columns_by_k(frame.columns)
    if not found:
        return None
    if config.k == ["auto"]:
        raise ValueError("--k auto chooses K when labels are computed; this input already has label columns "
                         f"{list(found.values())}: give --k from {sorted(found)} or leave it out")
    ks = config.k or sorted(found)
    missing = [k for k in ks if k not in found]
    if missing:
        raise ValueError(f"--k {' '.join(map(str, ks))}: the input has label columns for K = {sorted(found)}, not {missing}")
    labels = np.stack([frame[found[k]].to_numpy() for k in ks], axis=1)
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"label columns {[found[k] for k in ks]} must hold integer classes")
    labels = labels.astype(np.int64)
    for j, k in enumerate(ks):
        low, high = int(labels[:, j].min()), int(labels[:, j].max())
        if low < 0 or high >= k:
            raise ValueError(f"column {found[k]} holds classes {low}..{high}; a K={k} label must be in 0..{k - 1}")
    return labels, ks, found


def load_pretraining_table(config: PretrainConfig, accelerator=None) -> PretrainingTable:
    """Read the input and get its pseudo-labels: from its label columns, from a previous run's file, or computed.

    Computing happens on the main process only (the others wait and read the saved file), and the result is saved to
    `<output_dir>/pseudo_labels.parquet` so that a resumed run trains on the very same labels without recomputing.
    """
    import numpy as np
    import pandas as pd

    from moleclip.processing.pseudo_labels import compute_pseudo_labels

    frame = _read_input(config)
    if frame.empty:
        raise ValueError(f"{config.input} holds no molecules")
    given = _labels_from_columns(frame, config)
    if given is not None:
        labels, ks, columns = given
        return PretrainingTable(frame["smiles"].tolist(), labels, ks, np.arange(len(frame), dtype=np.int64),
                                f"label columns {', '.join(columns[k] for k in ks)} of the input")

    ks = config.k or [300, 3000]
    out = Path(config.output_dir) / PSEUDO_LABEL_FILE
    meta_file = out.with_suffix(".json")
    from moleclip.processing.pretraining_data import smiles_digest

    wanted = {"input_sha1": smiles_digest(frame["smiles"].tolist()), "k": ks, "seed": config.seed}
    is_main = accelerator is None or accelerator.is_main_process

    def usable() -> bool:
        return out.is_file() and meta_file.is_file() and json.loads(meta_file.read_text()).get("request") == wanted

    if is_main and not usable():
        print(f"computing pseudo-labels (MACCS keys + K-means, K = {ks}) for {len(frame)} molecules ...", flush=True)
        start = time.perf_counter()
        table, info = compute_pseudo_labels(frame["smiles"].tolist(), "auto" if ks == ["auto"] else ks, seed=config.seed,
                                            n_jobs=config.pseudo_label_jobs, progress=config.progress)
        if info.get("skipped"):
            skipped = info["skipped"]
            shown = "; ".join(f"row {s.index}: {_shorten(s.smiles)} {_shorten(s.reason, 80)}" for s in skipped[:3])
            print(f"warning: {len(skipped)} of {len(frame)} molecules left out of pretraining (rows count from 0 after "
                  f"any header): {shown}{' ...' if len(skipped) > 3 else ''}", flush=True)
        kept = _kept_rows(table, info, frame)
        table = table.copy()
        table.insert(0, "row", kept)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name + ".tmp")
        table.to_parquet(tmp, index=False)
        tmp.replace(out)
        meta_file.write_text(json.dumps({"request": wanted, "seconds": time.perf_counter() - start,
                                         "n_molecules": len(frame), "n_labelled": len(table),
                                         "info": _jsonable(info)}, indent=2))
        print(f"pseudo-labels for {len(table)} of {len(frame)} molecules saved to {out} "
              f"({time.perf_counter() - start:.1f} s)", flush=True)
    if accelerator is not None:
        accelerator.wait_for_everyone()
    if not usable():
        raise RuntimeError(f"{out} was not written by the main process")
    table = pd.read_parquet(out)
    columns = _columns_by_k(table.columns)
    ks = sorted(columns) if ks == ["auto"] else ks
    labels = np.stack([table[columns[k]].to_numpy() for k in ks], axis=1).astype(np.int64)
    return PretrainingTable(table["smiles"].astype(str).tolist(), labels, ks, table["row"].to_numpy(np.int64),
                            f"computed on the fly (MACCS keys, mini-batch K-means, seed {config.seed})")


def _shorten(text: str, width: int = 40) -> str:
    text = str(text)
    return text if len(text) <= width else text[: width - 3] + "..."


def _kept_rows(table, info, frame):
    """Input rows of the labelled molecules (invalid SMILES are left out by the labelling)."""
    import numpy as np

    for key in ("kept", "kept_indices", "rows"):
        value = info.get(key) if isinstance(info, dict) else getattr(info, key, None)
        if value is not None and len(value) == len(table):
            return np.asarray(value, dtype=np.int64)
    if len(table) == len(frame):
        return np.arange(len(frame), dtype=np.int64)
    # Fall back on matching SMILES (first occurrence in order), which is exact when the table keeps input order.
    rows, j = [], 0
    source = frame["smiles"].tolist()
    for s in table["smiles"].tolist():
        while j < len(source) and source[j] != s:
            j += 1
        if j == len(source):
            raise RuntimeError("the pseudo-label table does not keep the input order; cannot line its rows up")
        rows.append(j)
        j += 1
    return np.asarray(rows, dtype=np.int64)


def _jsonable(value):
    import numpy as np

    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items() if not isinstance(v, np.ndarray) or v.size <= 64}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value][:1000]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if dataclasses.is_dataclass(value):
        return _jsonable(dataclasses.asdict(value))
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def _split(n: int, config: PretrainConfig, num_processes: int):
    """(train positions, valid positions): a seeded random held-out slice, at most `max_valid` molecules."""
    import numpy as np

    n_valid = min(config.max_valid, int(round(config.valid_fraction * n))) if config.valid_fraction > 0 else 0
    if 0 < n_valid < num_processes:
        n_valid = 0
    order = np.random.default_rng([config.seed, 7]).permutation(n)
    return np.sort(order[n_valid:]), np.sort(order[:n_valid])


# ---------------------------------------------------------------------------------------------------- model
def build_param_groups(model, config: PretrainConfig) -> list[dict]:
    """Encoder (tower + projection): `encoder_lr`, `encoder_weight_decay`; heads: `head_lr`, `head_weight_decay`.

    A learnable logit scale trains at the encoder rate without decay (decay would pull the temperature towards 1).
    """
    encoder = list(model.vision_model.parameters()) + list(model.visual_projection.parameters())
    heads = list(model.label_heads.parameters())
    covered = {id(p) for p in encoder + heads} | {id(model.logit_scale)}
    stray = [n for n, p in model.named_parameters() if id(p) not in covered]
    if stray:
        raise ValueError(f"parameters outside the encoder and heads would not be trained: {stray}")
    return [
        {"params": encoder, "lr": config.encoder_lr, "weight_decay": config.encoder_weight_decay, "name": "encoder"},
        {"params": heads, "lr": config.head_lr, "weight_decay": config.head_weight_decay, "name": "heads"},
        {"params": [model.logit_scale], "lr": config.encoder_lr, "weight_decay": 0.0, "name": "logit_scale"},
    ]


class PretrainStep:
    """The loss of one batch for the training loop: normalise on the device, run both views, name the loss parts."""

    def __init__(self, ks: list[int], dump_dir: str | None = None, rank: int = 0, dump_embeddings: int = 2):
        self.ks = list(ks)
        self.loop = None  # set once the loop exists: the dump and the kill hook read its step counter
        self.dump_file = None
        if dump_dir:
            Path(dump_dir).mkdir(parents=True, exist_ok=True)
            self.dump_file = Path(dump_dir) / f"rank{rank}.jsonl"
        self.dump_embeddings = dump_embeddings
        self.calls = 0
        kill = os.environ.get(KILL_ENV)
        self.kill_at = int(kill) if kill else None

    def forward(self, model, batch):
        from moleclip.processing.pretraining_data import normalize_pixels

        return model(
            pixel_values=normalize_pixels(batch["pixel_values"]),
            augmented_pixel_values=normalize_pixels(batch["augmented_pixel_values"]),
            pseudo_labels=batch.get("pseudo_labels"),
        )

    def __call__(self, model, batch):
        step = self.loop.state.global_step if self.loop is not None else None
        if self.kill_at is not None and step is not None and step >= self.kill_at:
            os.kill(os.getpid(), signal.SIGKILL)  # a hard crash: no cleanup, no final save
        output = self.forward(model, batch)
        parts = {"contrastive_loss": float(output.contrastive_loss.detach())}
        if output.classification_losses is not None:
            for k, value in zip(self.ks, output.classification_losses.detach().tolist()):
                parts[f"classification_loss_k{k}"] = value
        if self.dump_file is not None:
            record = {"call": self.calls, "step": step, "epoch": self.loop.state.epoch if self.loop else None,
                      "indices": batch["indices"].tolist(), "logits_shape": list(output.logits_per_view.shape),
                      "contrastive_loss": parts["contrastive_loss"],
                      "logit_scale": float(model_attr(model, "logit_scale").exp())}
            if self.calls < self.dump_embeddings:
                record["image_embeds"] = output.image_embeds.detach().float().tolist()
                record["augmented_image_embeds"] = output.augmented_image_embeds.detach().float().tolist()
            with open(self.dump_file, "a") as fh:
                fh.write(json.dumps(record) + "\n")
        self.calls += 1
        return output.loss, parts


def model_attr(model, name: str):
    """An attribute of the model under its wrappers (DDP's `.module`, compile's `._orig_mod`)."""
    while not hasattr(model, name) and hasattr(model, "module"):
        model = model.module
    return getattr(model, name)


def make_evaluator(accelerator, step: PretrainStep, loader, ks: list[int]):
    """Validation: mean loss parts and pseudo-label accuracies over the held-out batches, across processes."""
    import torch

    def evaluate(model) -> dict[str, float]:
        model.eval()
        names = ["loss", "contrastive_loss"] + [f"classification_loss_k{k}" for k in ks] + [f"accuracy_k{k}" for k in ks]
        totals = torch.zeros(len(names), dtype=torch.float64, device=accelerator.device)
        batches = 0
        with torch.no_grad():
            for batch in loader:
                batch = {k: v.to(accelerator.device, non_blocking=True) for k, v in batch.items()}
                out = step.forward(model, batch)
                values = [out.loss, out.contrastive_loss]
                values += list(out.classification_losses) if ks else []
                values += [(logits.argmax(-1) == batch["pseudo_labels"][:, j]).float().mean()
                           for j, logits in enumerate(out.label_logits or [])]
                totals += torch.stack([v.detach().double() for v in values])
                batches += 1
        totals = accelerator.reduce(totals / max(batches, 1), reduction="mean")
        return {f"valid_{name}": float(v) for name, v in zip(names, totals.tolist())}

    return evaluate


# ---------------------------------------------------------------------------------------------------- the run
def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _default_workers(num_processes: int) -> int:
    return max(0, _cores() // max(1, num_processes) - 1)


def _check_resumed_config(config: PretrainConfig, saved_file: Path, accelerator) -> None:
    """Warn when a resumed run changes settings that decide the data order or the optimisation."""
    if not saved_file.is_file():
        return
    saved = json.loads(saved_file.read_text())
    harmless = {"resume", "push_to_hub", "hub_private", "progress", "num_workers", "max_steps", "epochs", "save_every",
                "save_total_limit", "eval_every", "log_every", "debug_dump_dir", "pseudo_label_jobs", "coordinate_cache_size",
                "prerendered"}
    changed = {k: (saved.get(k), v) for k, v in dataclasses.asdict(config).items() if k not in harmless and saved.get(k) != v}
    if changed:
        accelerator.print("warning: resuming with changed settings (the run will not repeat the original exactly): " +
                          ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in changed.items()))


def pretrain(config: PretrainConfig, hub_api=None) -> dict:
    """Run a pretraining described by `config`; returns the summary also written to `training_results.json`.

    `hub_api` (an `HfApi`-like object) is used for `push_to_hub` instead of a real `HfApi` (tests pass a stand-in).
    """
    config.check_required()
    import numpy as np
    import torch
    from accelerate import Accelerator, InitProcessGroupKwargs
    from accelerate.utils import set_seed
    from torch.utils.data import DataLoader

    from moleclip.processing.pretraining_data import (
        VALID_STREAM, EpochBatches, FixedBatches, PrerenderedImages, TwoViewDataset, collate_two_views)
    from moleclip.training.hub import describe_backbone, load_backbone, load_processor, push_model_dir, save_model_dir
    from moleclip.training.loop import LoopSettings, TrainingLoop, build_optimizer, build_scheduler, latest_checkpoint
    from moleclip.training.samplers import GroupedClassBatchSampler

    started = time.perf_counter()
    # Pseudo-labels may be computed on the main process while the others wait at a barrier: allow for it.
    accelerator = Accelerator(
        mixed_precision=config.mixed_precision, gradient_accumulation_steps=config.gradient_accumulation_steps,
        kwargs_handlers=[InitProcessGroupKwargs(timeout=datetime.timedelta(hours=2))],
    )
    world, rank = accelerator.num_processes, accelerator.process_index
    if config.batch_size % world:
        raise ValueError(f"batch_size {config.batch_size} (the global batch) cannot be split evenly over {world} processes")
    output_dir = Path(config.output_dir)
    if config.resume is None and latest_checkpoint(output_dir) is not None:
        raise ValueError(f"{output_dir} already holds checkpoints of a run: pass --resume latest to continue it, or "
                         "choose another --output-dir")
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        if config.resume:
            _check_resumed_config(config, output_dir / CONFIG_FILE, accelerator)
        (output_dir / CONFIG_FILE).write_text(config.to_json())
    accelerator.wait_for_everyone()

    # ---- data
    table = load_pretraining_table(config, accelerator)
    train_pos, valid_pos = _split(len(table.smiles), config, world)
    if len(train_pos) < config.batch_size:
        raise ValueError(f"{len(train_pos)} training molecules cannot fill one batch of {config.batch_size}")
    set_seed(config.seed)
    model = load_backbone(config.backbone, init_factor=config.init_factor, pseudo_label_classes=table.ks)
    image_size = model.config.vision_config.image_size
    store = PrerenderedImages(config.prerendered) if config.prerendered else None

    def dataset(positions, **kwargs):
        smiles = [table.smiles[i] for i in positions]
        slots = store.slots_for(smiles) if store is not None else None
        return TwoViewDataset(smiles, table.labels[positions], seed=config.seed, size=image_size,
                              augmentation=config.augmentation, ids=table.ids[positions],
                              coordinate_cache_size=config.coordinate_cache_size, prerendered=store, store_slots=slots,
                              **kwargs)

    fine = int(np.argmax(table.ks))  # batches group molecules of the finest label set
    sampler = GroupedClassBatchSampler(table.labels[train_pos, fine], group_size=config.group_size,
                                       groups_per_batch=config.groups_per_batch, num_replicas=world, rank=rank,
                                       seed=config.seed, drop_last=True)
    workers = _default_workers(world) if config.num_workers is None else config.num_workers
    if accelerator.device.type == "cpu" and "OMP_NUM_THREADS" not in os.environ:
        # Drawing workers and the training step share the cores. An OpenMP thread without a core of its own makes
        # every parallel region wait for it: on 2 cores with a busy worker, 2 threads ran a step 30x slower than 1.
        torch.set_num_threads(max(1, _cores() // world - workers))
    loader_kwargs = dict(num_workers=workers, collate_fn=collate_two_views, pin_memory=torch.cuda.is_available())
    if workers > 0:
        loader_kwargs.update(persistent_workers=True, prefetch_factor=4)
    train_loader = DataLoader(dataset(train_pos), batch_sampler=EpochBatches(sampler), **loader_kwargs)
    batches_per_epoch = len(sampler)
    steps_per_epoch = max(1, batches_per_epoch // config.gradient_accumulation_steps)
    max_steps = config.max_steps or max(1, math.ceil(config.epochs * steps_per_epoch))

    evaluate = None
    if len(valid_pos):
        per_process = config.batch_size // world
        valid_batch = min(per_process, len(valid_pos) // world)
        valid_loader = DataLoader(dataset(valid_pos, stream=VALID_STREAM),
                                  batch_sampler=FixedBatches(range(len(valid_pos)), valid_batch, world, rank),
                                  num_workers=min(workers, 4), collate_fn=collate_two_views)
    accelerator.print(
        f"{len(table.smiles)} molecules ({len(train_pos)} train, {len(valid_pos)} validation), pseudo-labels K = "
        f"{table.ks}; {world} process(es) x {config.batch_size // world} molecules a batch, {batches_per_epoch} "
        f"batches an epoch; {max_steps} optimizer steps ({max_steps / steps_per_epoch:.2f} epochs); {workers} drawing "
        f"worker(s) per process{'; pre-rendered store ' + str(config.prerendered) if store else ''}; "
        f"{torch.get_num_threads()} torch thread(s) per process")

    # ---- optimisation
    optimizer = build_optimizer(build_param_groups(model, config))
    scheduler = build_scheduler(optimizer, config.schedule, warmup_steps=config.warmup_steps, total_steps=max_steps)
    step = PretrainStep(table.ks, dump_dir=config.debug_dump_dir, rank=rank)
    if len(valid_pos):
        evaluate = make_evaluator(accelerator, step, valid_loader, table.ks)
    settings = LoopSettings(
        output_dir=str(output_dir), max_steps=max_steps, gradient_accumulation_steps=config.gradient_accumulation_steps,
        max_grad_norm=config.max_grad_norm, log_every=config.log_every, eval_every=config.eval_every if evaluate else None,
        save_every=config.save_every, save_total_limit=config.save_total_limit,
        select_key="valid_loss" if evaluate else None, progress=config.progress,
    )
    loop = TrainingLoop(accelerator, model, optimizer, train_loader, settings, scheduler=scheduler, evaluate=evaluate,
                        compute_loss=step)
    step.loop = loop
    initial_file = output_dir / "validation_initial.json"
    resuming = config.resume is not None and (config.resume != "latest" or latest_checkpoint(output_dir) is not None)
    if evaluate is not None and not resuming and not initial_file.exists():
        initial = evaluate(loop.model)
        if accelerator.is_main_process:
            initial_file.write_text(json.dumps(initial, indent=2))
    state = loop.run(resume=config.resume)

    # ---- the end: final validation, model folder, Hub
    final_valid = None
    if evaluate is not None:
        last = state.history[-1] if state.history else None
        final_valid = ({k: v for k, v in last.items() if k.startswith("valid_")}
                       if last and last.get("step") == state.global_step else evaluate(loop.model))
    summary = None
    if accelerator.is_main_process:
        summary = _summary(config, table, train_pos, valid_pos, state, max_steps, steps_per_epoch, world, output_dir,
                           final_valid, time.perf_counter() - started)
        model_out = accelerator.unwrap_model(loop.model)
        processor = load_processor(config.backbone, size=image_size)
        card = {
            "title": f"MoleCLIP encoder pretrained on {Path(config.input).name}",
            "backbone": describe_backbone(config.backbone),
            "training_summary": summary["card_summary"],
            "repo_id": config.push_to_hub,
            "extra_tags": "- moleclip-pretraining",
        }
        save_model_dir(output_dir, model_out, processor, card=card,
                       extra_files={RESULTS_FILE: json.dumps(summary, indent=2)})
        accelerator.print(f"model saved to {output_dir}")
        if config.push_to_hub:
            url = push_model_dir(output_dir, config.push_to_hub, private=config.hub_private or None, api=hub_api,
                                 commit_message=f"MoleCLIP pretraining: {state.global_step} steps")
            summary["hub_commit"] = url
            (output_dir / RESULTS_FILE).write_text(json.dumps(summary, indent=2))
            accelerator.print(f"pushed to the Hub: {url}")
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return summary or {}


def _summary(config, table, train_pos, valid_pos, state, max_steps, steps_per_epoch, world, output_dir, final_valid,
             seconds) -> dict:
    import csv

    rows = []
    metrics = output_dir / "metrics.csv"
    if metrics.is_file():
        with open(metrics, newline="") as fh:
            rows = [r for r in csv.DictReader(fh) if r.get("loss")]
    def parts(row):
        return {k: float(v) for k, v in row.items()
                if v not in (None, "") and not k.startswith("valid_") and (k.endswith("loss") or "_loss_" in k)}

    first, last = (parts(rows[0]), parts(rows[-1])) if rows else ({}, {})
    initial = output_dir / "validation_initial.json"
    initial_valid = json.loads(initial.read_text()) if initial.is_file() else None
    epochs = state.global_step / steps_per_epoch
    molecules = state.global_step * config.batch_size * config.gradient_accumulation_steps
    loss_text = (f"train loss {first.get('loss', float('nan')):.3f} -> {last.get('loss', float('nan')):.3f}"
                 if rows else "no loss logged")
    if final_valid:
        loss_text += f"; validation loss {final_valid['valid_loss']:.3f}"
    card = (f"{state.global_step} optimizer steps ({epochs:.2f} epochs over {len(train_pos):,} molecules of "
            f"`{Path(config.input).name}`), batch {config.batch_size * config.gradient_accumulation_steps} "
            f"(groups of {config.group_size} of one pseudo-class), {world} process(es); contrastive + classification "
            f"(K = {', '.join(map(str, table.ks))}); encoder lr {config.encoder_lr:g} (wd {config.encoder_weight_decay:g}), "
            f"heads lr {config.head_lr:g}, {config.schedule} schedule; {loss_text}")
    return {
        "steps": state.global_step, "max_steps": max_steps, "epochs": epochs, "molecules_seen": molecules,
        "images_seen": 2 * molecules, "train_molecules": int(len(train_pos)), "valid_molecules": int(len(valid_pos)),
        "pseudo_label_ks": table.ks, "pseudo_labels": table.source, "processes": world, "wall_seconds": seconds,
        "first_logged": first, "last_logged": last, "initial_validation": initial_valid, "final_validation": final_valid,
        "best_valid_loss": state.best_value, "best_step": state.best_step, "card_summary": card,
        "config": dataclasses.asdict(config),
    }


def main(argv: list[str] | None = None) -> int:
    config = PretrainConfig.from_args(argv)
    pretrain(config)
    return 0


if __name__ == "__main__":
    sys.exit(main())

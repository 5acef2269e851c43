"""Finetune MoleCLIP (or a fingerprint baseline) on a property table with the paper's protocol.

    accelerate launch training/finetune.py --model NAME_OR_PATH --dataset esol --output-dir runs/esol \\
        --split scaffold --seeds 1 2 3 --epochs 60 --head-lr 1e-3 1e-4 --augmentation none default
    python training/finetune.py ...            # the same on one process

Protocol (DESIGN.md, "Finetuning"): the dataset is split once per seed (scaffold splits are deterministic, so seeds
then vary only the model); every setting of the grid (head learning rate x augmentation preset x encoder learning
rate x weight decay x head dropout) is trained once per seed through the package's one training loop
(`training/loop.py`) with Adam(0.9, 0.98, eps 1e-6), evaluated on validation and test after every epoch; a run reports
its test scores at its best-validation epoch (`--select-on loss`, as the paper, or `metric`); settings are compared on
their mean validation value only, and the chosen setting's runs (or fresh `--final-epochs` runs) make the final table.
The best run of the chosen setting is saved as a complete checkpoint folder (`<output-dir>/model`), with plots and
`results.json` / `results.md`.

Modes:
  (default)            images are drawn and augmented on the fly; encoder and head are trained
  --freeze-encoder     embeddings are computed once (plus `--frozen-views` augmented copies of the training molecules
                       per augmentation preset); only the head is trained: minutes on a CPU
  --baseline fingerprint     Morgan radius 2, 2048 bits into the same MLP head, same splits, grid and loop
  --baseline random_forest   random forest on the same bits (training/baselines.py), same splits and seeds
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import math
import sys
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from moleclip import MoleCLIPForPropertyPrediction, PropertyHead
from moleclip.modeling_moleclip import MoleCLIPPropertyOutput, property_loss, scaled_property_outputs
from moleclip.processing.augment import augment, normalize
from moleclip.processing.property_data import PropertyDataset, load_property_dataset
from moleclip.processing.splits import DEFAULT_FRACTIONS, SPLIT_KINDS, Split, make_split
from moleclip.training.loop import LoopSettings, TrainingLoop, build_optimizer, build_scheduler
from moleclip.training.samplers import ShuffledBatchSampler
from moleclip.training.scoring import TASK_METRICS, compute_metrics, higher_is_better
from moleclip.training.search import (
    expand_grid,
    final_markdown,
    paper_reference,
    public_view,
    run_search,
    search_markdown,
    setting_name,
    summarize_runs,
)

__all__ = [
    "HEAD_LRS",
    "AUGMENTATIONS",
    "FingerprintPredictor",
    "RunOptions",
    "ImageFeatures",
    "FrozenFeatures",
    "FingerprintFeatures",
    "train_run",
    "build_parser",
    "finetune",
    "main",
]

HEAD_LRS = (1e-3, 4e-4, 1e-4, 4e-5, 1e-5)
AUGMENTATIONS = ("none", "default", "intense")
ENCODER_LR = 5e-6
WEIGHT_DECAY = 1e-5
FP_RADIUS, FP_BITS = 2, 2048
FP_CONFIG = "fingerprint_mlp.json"
FP_WEIGHTS = "fingerprint_mlp.safetensors"


# ---------------------------------------------------------------------------------------------------------- models
class FingerprintPredictor(nn.Module):
    """The paper's fixed-representation baseline: Morgan bits into the same MLP head as MoleCLIP's.

    Same loss, masking and target standardisation as [`MoleCLIPForPropertyPrediction`], so the two differ only in
    what the head reads.
    """

    def __init__(self, in_features: int, num_targets: int, task: str, regression_loss: str = "l1",
                 hidden_size: int = 512, num_layers: int = 3, dropout: float = 0.1,
                 target_mean: Sequence[float] | None = None, target_std: Sequence[float] | None = None,
                 target_names: Sequence[str] | None = None, radius: int = FP_RADIUS):
        super().__init__()
        self.settings = dict(in_features=in_features, num_targets=num_targets, task=task, regression_loss=regression_loss,
                             hidden_size=hidden_size, num_layers=num_layers, dropout=dropout, radius=radius,
                             target_names=list(target_names) if target_names else None)
        self.task, self.regression_loss = task, regression_loss
        self.head = PropertyHead(in_features, num_targets, hidden_size=hidden_size, num_layers=num_layers, dropout=dropout)
        for module in self.head.modules():
            if isinstance(module, nn.Linear):  # the same initialisation as MoleCLIP's head
                nn.init.normal_(module.weight, std=module.in_features**-0.5)
                nn.init.zeros_(module.bias)
        self.register_buffer("target_mean", torch.tensor(target_mean or [0.0] * num_targets, dtype=torch.float32))
        self.register_buffer("target_std", torch.tensor(target_std or [1.0] * num_targets, dtype=torch.float32))

    def set_target_scaling(self, mean, std) -> None:
        self.target_mean.copy_(torch.tensor([float(m) for m in mean]))
        self.target_std.copy_(torch.tensor([float(s) if s > 0 else 1.0 for s in std]))

    def forward(self, features: torch.Tensor, labels: torch.Tensor | None = None, **kwargs) -> MoleCLIPPropertyOutput:
        logits, loss = scaled_property_outputs(self.head(features.float()), labels, self.task, self.regression_loss,
                                               self.target_mean, self.target_std)
        return MoleCLIPPropertyOutput(loss=loss, logits=logits)

    def save(self, folder: str | Path) -> Path:
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        settings = {**self.settings, "target_mean": self.target_mean.tolist(), "target_std": self.target_std.tolist()}
        (folder / FP_CONFIG).write_text(json.dumps(settings, indent=2))
        save_file({k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}, str(folder / FP_WEIGHTS))
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> "FingerprintPredictor":
        from safetensors.torch import load_file

        folder = Path(folder)
        settings = json.loads((folder / FP_CONFIG).read_text())
        model = cls(**settings)
        model.load_state_dict(load_file(str(folder / FP_WEIGHTS)))
        return model.eval()


class _Forward(nn.Module):
    """A fresh shell around the model of one run, so that what `accelerate.prepare` does to `forward` (autocast,
    DDP) stays with this run and never accumulates on a model reused by the next one (the frozen mode's)."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, **batch):
        return self.inner(**batch)


def _fresh_head(model: MoleCLIPForPropertyPrediction, dropout: float | None) -> None:
    """Replace the head by a newly initialised one (the global RNG, seeded per run, decides its weights)."""
    config = model.config
    if dropout is not None:
        config.head_dropout = float(dropout)
    head = PropertyHead(config.projection_dim, config.num_targets, hidden_size=config.head_hidden_size,
                        num_layers=config.head_num_layers, dropout=config.head_dropout)
    head.apply(model._init_weights)
    model.head = head.to(next(model.moleclip.parameters()).device)


def _clone_state(module: nn.Module, prefix: str = "") -> dict[str, torch.Tensor]:
    return {prefix + k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}


# ---------------------------------------------------------------------------------------------------------- data
class _EpochTagged:
    """Batch sampler wrapper whose indices carry the epoch (`epoch * n + i`).

    Datasets use the tag to draw each epoch's augmentation from `(seed, epoch, molecule)`, so an image depends on
    nothing else: not on worker processes, not on how far a resumed run had got.
    """

    def __init__(self, inner: ShuffledBatchSampler, n: int):
        self.inner, self.n, self.epoch = inner, n, 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch = epoch
        self.inner.set_epoch(epoch, start_batch)

    def __len__(self) -> int:
        return len(self.inner)

    def __iter__(self):
        offset = self.epoch * self.n
        for batch in self.inner:
            yield [offset + int(i) for i in batch]


class _TaggedData(Dataset):
    """Training items addressed by epoch-tagged keys (see `_EpochTagged`).

    `item_fn(epoch, i)` builds one item; `batch_fn(epoch, positions)`, when given, builds a whole batch at once (the
    DataLoader then calls `__getitems__` and the collate function must pass the batch through): for precomputed
    embeddings and fingerprints, indexing one tensor beats building and stacking 64 small dicts. Both are picklable
    objects, not closures, so DataLoader workers work under every start method (spawn on macOS and Windows).
    """

    def __init__(self, n: int, labels: np.ndarray, item_fn, batch_fn=None):
        self.n, self.labels, self.item_fn, self.batch_fn = n, torch.as_tensor(labels, dtype=torch.float32), item_fn, batch_fn

    def __getattr__(self, name: str):
        # `__getitems__` exists only when whole batches can be built (the DataLoader looks it up with getattr)
        if name == "__getitems__" and self.__dict__.get("batch_fn") is not None:
            return self._getitems
        raise AttributeError(name)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, key: int) -> dict:
        epoch, i = divmod(int(key), self.n)
        item = self.item_fn(epoch, i)
        item["labels"] = self.labels[i]
        return item

    def _getitems(self, keys: list[int]) -> dict:
        keys = torch.as_tensor(keys, dtype=torch.long)
        epochs, positions = keys // self.n, keys % self.n
        if not bool((epochs == epochs[0]).all()):
            raise RuntimeError("a batch spans two epochs")  # the epoch-tagged sampler never does this
        batch = self.batch_fn(int(epochs[0]), positions)
        batch["labels"] = self.labels[positions]
        return batch


def _pass_batch(batch: dict) -> dict:
    return batch


class _TableItems:
    """Items read from a precomputed table: `table[rows[i]]`, or with views `table[epoch % views, rows[i]]`."""

    def __init__(self, key: str, table: torch.Tensor, rows: torch.Tensor, views: int | None = None):
        self.key, self.table, self.rows, self.views = key, table, rows, views

    def batch(self, epoch: int, positions) -> dict:
        rows = self.rows[positions]
        return {self.key: self.table[rows] if self.views is None else self.table[epoch % self.views, rows]}

    def __call__(self, epoch: int, i: int) -> dict:
        return self.batch(epoch, i)


class _Pictures:
    """What DataLoader workers need to make training pictures: the plain drawings (or the SMILES to draw them from)
    and the processor's settings; kept apart from the model so that workers never receive a copy of it."""

    def __init__(self, processor, smiles: list[str], images: np.ndarray | None):
        self.processor, self.smiles, self.images = processor, smiles, images

    def plain(self, row: int) -> np.ndarray:
        if self.images is not None:
            return self.images[row]
        images, _, _ = self.processor.render_images([self.smiles[row]], augmentation="none")
        return images[0]

    def normalize(self, images: list[np.ndarray]) -> torch.Tensor:
        # the processor's own normalisation, called directly: a processor call per picture costs four times as much
        return normalize(images, mean=self.processor.image_mean, std=self.processor.image_std)

    def collate(self, items: list[dict]) -> dict:
        """Pictures (uint8) to one normalised batch; runs in the DataLoader workers."""
        return {"pixel_values": self.normalize([item["pixel_values"] for item in items]),
                "labels": torch.stack([item["labels"] for item in items])}


class _PictureItems:
    """One training picture: the plain drawing, augmented with a generator seeded by (run seed, epoch, molecule)."""

    def __init__(self, pictures: _Pictures, rows: np.ndarray, augmentation: str, seed: int):
        self.pictures, self.rows, self.augmentation, self.seed = pictures, rows, augmentation, seed

    def __call__(self, epoch: int, i: int) -> dict:
        row = int(self.rows[i])
        picture = self.pictures.plain(row)
        if self.augmentation != "none":
            picture = augment(picture, self.augmentation, np.random.default_rng([self.seed, epoch, row]))
        return {"pixel_values": picture}


class ImageFeatures:
    """Molecules drawn by the processor: plain drawings are made once (and kept when there are few enough), training
    images are augmented per epoch with a generator seeded by `(run seed, epoch, molecule)`."""

    kind = "full"

    def __init__(self, template: MoleCLIPForPropertyPrediction, processor, smiles: Sequence[str],
                 max_cached: int = 20_000, progress: bool = True, batch_size: int = 64):
        self.template, self.processor = template, processor
        drawn, kept, skipped = [], [], []
        keep_images = len(smiles) <= max_cached
        from tqdm.auto import tqdm

        for start in tqdm(range(0, len(smiles), batch_size), desc="drawing", unit="batch", disable=not progress):
            images, ok, bad = processor.render_images(list(smiles[start:start + batch_size]), augmentation="none",
                                                      on_error="skip")
            kept += [start + i for i in ok]
            skipped += [type(s)(s.index + start, s.smiles, s.reason) for s in bad]
            if keep_images:
                drawn += images
        self.kept, self.skipped = np.asarray(kept, dtype=np.int64), skipped
        self.smiles = [smiles[i] for i in kept]
        self.pictures = _Pictures(processor, self.smiles, np.stack(drawn) if keep_images and drawn else None)
        self.images = self.pictures.images
        self.collate = self.pictures.collate

    def train_dataset(self, rows: np.ndarray, labels: np.ndarray, augmentation: str, seed: int) -> Dataset:
        return _TaggedData(len(rows), labels, _PictureItems(self.pictures, np.asarray(rows), augmentation, seed))

    def eval_inputs(self, rows: np.ndarray, batch_size: int) -> Iterator[dict]:
        plain, normalize_ = self.pictures.plain, self.pictures.normalize
        for start in range(0, len(rows), batch_size):
            yield {"pixel_values": normalize_([plain(int(r)) for r in rows[start:start + batch_size]])}

    def new_model(self, setting: dict) -> nn.Module:
        model = copy.deepcopy(self.template)  # keeps the template's frozen parameters (the unused logit scale) frozen
        _fresh_head(model, setting.get("head_dropout"))
        return model

    def param_groups(self, model, setting: dict) -> list[dict]:
        wd = setting["weight_decay"]
        return [{"params": list(model.moleclip.parameters()), "lr": setting["encoder_lr"], "weight_decay": wd},
                {"params": list(model.head.parameters()), "lr": setting["head_lr"], "weight_decay": wd}]

    def trainable_state(self, model) -> dict:
        return _clone_state(model)

    def restore(self, state: dict, setting: dict) -> nn.Module:
        model = copy.deepcopy(self.template)
        _fresh_head(model, setting.get("head_dropout"))
        model.load_state_dict(state)
        return model.eval()


class FrozenFeatures:
    """Embeddings computed once by the frozen encoder; only the head is trained.

    Augmentation presets other than "none" are approximated by `views` augmented embeddings of each training molecule,
    made once before training (`prepare_views`); epoch `e` reads view `e % views`. Validation and test always read the
    plain embedding, as in the unfrozen mode.
    """

    kind = "frozen"

    def __init__(self, template: MoleCLIPForPropertyPrediction, processor, smiles: Sequence[str], batch_size: int,
                 device=None, progress: bool = True, views: int = 1, seed: int = 0):
        from moleclip.training.inference import embed_smiles

        if views < 1:
            raise ValueError(f"--frozen-views must be >= 1, got {views}")
        self.template, self.processor, self.device = template, processor, device
        self.batch_size, self.progress, self.views, self.seed = batch_size, progress, views, seed
        template.requires_grad_(False)
        embeds, kept, skipped = embed_smiles(template, processor, list(smiles), batch_size=batch_size, device=device,
                                             progress=progress, on_error="skip")
        self.kept, self.skipped = kept, skipped
        self.smiles = [smiles[i] for i in kept]
        self.embeds = torch.as_tensor(embeds, dtype=torch.float32)
        self.augmented: dict[str, torch.Tensor] = {}

    def prepare_views(self, presets: Sequence[str], rows: np.ndarray) -> None:
        """Embed `views` augmented drawings of the molecules at `rows` for each preset (other rows stay zero)."""
        from moleclip.training.inference import embed_smiles

        rows = np.unique(np.asarray(rows, dtype=np.int64))
        for p_index, preset in enumerate(AUGMENTATIONS):
            if preset == "none" or preset not in presets or preset in self.augmented:
                continue
            table = torch.zeros((self.views, *self.embeds.shape), dtype=torch.float32)
            for view in range(self.views):
                # One generator per (preset, view) walks the molecules in row order: the views depend only on the
                # molecules to embed, never on the run, so every run of the grid reads the same augmented data.
                rng = np.random.default_rng([self.seed, p_index, view])
                embeds, kept, _ = embed_smiles(self.template, self.processor, [self.smiles[r] for r in rows],
                                               batch_size=self.batch_size, device=self.device, progress=self.progress,
                                               on_error="raise", augmentation=preset, seed=rng)
                table[view, torch.as_tensor(rows[kept])] = torch.as_tensor(embeds, dtype=torch.float32)
            self.augmented[preset] = table

    def train_dataset(self, rows: np.ndarray, labels: np.ndarray, augmentation: str, seed: int) -> Dataset:
        rows = torch.as_tensor(np.asarray(rows), dtype=torch.long)
        if augmentation == "none":
            items = _TableItems("image_embeds", self.embeds, rows)
        elif augmentation in self.augmented:
            items = _TableItems("image_embeds", self.augmented[augmentation], rows, views=self.views)
        else:
            raise RuntimeError(f"no augmented embeddings for preset {augmentation!r}: call prepare_views first")
        return _TaggedData(len(rows), labels, items, items.batch)

    collate = staticmethod(_pass_batch)

    def eval_inputs(self, rows: np.ndarray, batch_size: int) -> Iterator[dict]:
        rows = torch.as_tensor(np.asarray(rows), dtype=torch.long)
        for start in range(0, len(rows), batch_size):
            yield {"image_embeds": self.embeds[rows[start:start + batch_size]]}

    def new_model(self, setting: dict) -> nn.Module:
        _fresh_head(self.template, setting.get("head_dropout"))
        return self.template

    def param_groups(self, model, setting: dict) -> list[dict]:
        return [{"params": list(model.head.parameters()), "lr": setting["head_lr"], "weight_decay": setting["weight_decay"]}]

    def trainable_state(self, model) -> dict:
        return _clone_state(model.head)

    def restore(self, state: dict, setting: dict) -> nn.Module:
        _fresh_head(self.template, setting.get("head_dropout"))
        self.template.head.load_state_dict(state)
        return self.template.eval()


class FingerprintFeatures:
    """Morgan fingerprints (radius 2, 2048 bits) for the fixed-representation baseline."""

    kind = "fingerprint"

    def __init__(self, smiles: Sequence[str], task: str, target_names: Sequence[str], regression_loss: str = "l1",
                 hidden_size: int = 512, num_layers: int = 3, dropout: float = 0.1, progress: bool = True):
        from moleclip.processing.fingerprints import morgan_fingerprints

        result = morgan_fingerprints(list(smiles), radius=FP_RADIUS, n_bits=FP_BITS, progress=progress)
        self.kept, self.skipped = result.kept, result.skipped
        self.bits = torch.as_tensor(result.bits, dtype=torch.float32)
        self.model_args = dict(in_features=FP_BITS, num_targets=len(target_names), task=task,
                               regression_loss=regression_loss, hidden_size=hidden_size, num_layers=num_layers,
                               dropout=dropout, target_names=list(target_names))

    def train_dataset(self, rows, labels, augmentation, seed) -> Dataset:
        items = _TableItems("features", self.bits, torch.as_tensor(np.asarray(rows), dtype=torch.long))
        return _TaggedData(len(rows), labels, items, items.batch)

    collate = staticmethod(_pass_batch)

    def eval_inputs(self, rows, batch_size) -> Iterator[dict]:
        rows = torch.as_tensor(np.asarray(rows), dtype=torch.long)
        for start in range(0, len(rows), batch_size):
            yield {"features": self.bits[rows[start:start + batch_size]]}

    def new_model(self, setting: dict) -> nn.Module:
        args = dict(self.model_args)
        if setting.get("head_dropout") is not None:
            args["dropout"] = float(setting["head_dropout"])
        return FingerprintPredictor(**args)

    def param_groups(self, model, setting: dict) -> list[dict]:
        return [{"params": list(model.parameters()), "lr": setting["head_lr"], "weight_decay": setting["weight_decay"]}]

    def trainable_state(self, model) -> dict:
        return _clone_state(model)

    def restore(self, state: dict, setting: dict) -> nn.Module:
        model = self.new_model(setting)
        model.load_state_dict(state)
        return model.eval()


# ---------------------------------------------------------------------------------------------------------- one run
@dataclass
class RunOptions:
    """What stays fixed across the runs of one finetuning job (the grid varies the rest)."""

    output_dir: Path
    metric: str
    select_on: str = "loss"
    epochs: int = 60
    batch_size: int = 64
    eval_batch_size: int = 128
    num_workers: int = 0
    max_grad_norm: float | None = None
    scheduler: str = "constant"
    warmup_steps: int = 0
    progress: bool = True

    @property
    def select_key(self) -> str:
        return "loss" if self.select_on == "loss" else self.metric

    @property
    def select_mode(self) -> str:
        return "min" if self.select_on == "loss" else ("max" if higher_is_better(self.metric) else "min")


def _target_stats(labels: np.ndarray) -> tuple[list[float], list[float]]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a target without training labels: mean 0, std 1
        mean = np.nan_to_num(np.nanmean(labels, axis=0), nan=0.0)
        std = np.nan_to_num(np.nanstd(labels, axis=0), nan=1.0)
    return mean.tolist(), std.tolist()


def _set_loss(pred: np.ndarray, labels: np.ndarray, task: str, regression_loss: str, mean, std) -> float:
    """The training loss on a whole set (regression on standardised values, as the model computes it)."""
    p, y = torch.as_tensor(pred, dtype=torch.float64), torch.as_tensor(labels, dtype=torch.float64)
    if task == "regression":
        m, s = torch.as_tensor(mean, dtype=torch.float64), torch.as_tensor(std, dtype=torch.float64)
        p, y = (p - m) / s, (y - m) / s
    return float(property_loss(p, y, task, regression_loss))


def _score(task: str, labels: np.ndarray, pred: np.ndarray, target_names) -> dict[str, float]:
    if not (~np.isnan(labels)).any():
        return {m: math.nan for m in TASK_METRICS[task]}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # one-class validation tasks would warn every epoch; the table shows n/a
        return compute_metrics(task, labels, pred, target_names)


def train_run(features, data: PropertyDataset, split: Split, setting: dict, seed: int, options: RunOptions,
              accelerator, run_dir: Path, regression_loss: str = "l1") -> dict:
    """Train one setting with one seed through the shared loop; scores are taken at the best-validation epoch.

    Returns ``{"seed", "best_epoch", "valid": {...}, "test": {...}, ...}`` plus private ``_state`` (weights of the
    best epoch) and ``_predictions`` (validation and test predictions of that epoch).
    """
    from accelerate.utils import set_seed

    acc = accelerator
    started = time.perf_counter()
    if acc.is_main_process and (run_dir / "metrics.csv").exists():
        (run_dir / "metrics.csv").unlink()  # the loop appends; a rerun into the same folder must start clean
    acc.wait_for_everyone()
    set_seed(seed)
    train_rows, valid_rows, test_rows = split
    y = data.targets
    model = features.new_model(setting)
    mean, std = _target_stats(y[train_rows])
    if data.task == "regression":
        model.set_target_scaling(mean, std)
    optimizer = build_optimizer(features.param_groups(model, setting))
    sampler = _EpochTagged(
        ShuffledBatchSampler(len(train_rows), options.batch_size, seed=seed, drop_last=False,
                             num_replicas=acc.num_processes, rank=acc.process_index),
        len(train_rows),
    )
    loader = DataLoader(features.train_dataset(train_rows, y[train_rows], setting["augmentation"], seed),
                        batch_sampler=sampler, num_workers=options.num_workers,
                        collate_fn=getattr(features, "collate", None), persistent_workers=options.num_workers > 0,
                        pin_memory=acc.device.type == "cuda")
    steps = options.epochs * len(sampler)
    scheduler = build_scheduler(optimizer, options.scheduler, options.warmup_steps, steps)

    last, best, leader = {}, {}, {"value": None}
    clock = {"t": time.perf_counter()}
    select = f"valid_{options.select_key}"

    @torch.no_grad()
    def predict(rows: np.ndarray) -> np.ndarray:
        model.eval()
        outputs = []
        for batch in features.eval_inputs(rows, options.eval_batch_size):
            batch = {k: v.to(acc.device) for k, v in batch.items()}
            with acc.autocast():
                outputs.append(model(**batch).logits.float().cpu().numpy())
        return np.concatenate(outputs) if outputs else np.zeros((0, data.n_targets), dtype=np.float32)

    def score(part: str, rows: np.ndarray, record: dict, metrics: bool = True) -> None:
        pred = predict(rows)
        last[part] = pred
        record[f"{part}_loss"] = _set_loss(pred, y[rows], data.task, regression_loss, mean, std)
        if metrics:
            record.update({f"{part}_{k}": v for k, v in _score(data.task, y[rows], pred, data.target_names).items()})

    def improves(value: float) -> bool:
        # the loop's own rule for a new best (it calls on_best on the same epochs)
        b = leader["value"]
        return math.isfinite(value) and (b is None or (value < b if options.select_mode == "min" else value > b))

    def evaluate(_prepared) -> dict:
        train_seconds = time.perf_counter() - clock["t"]
        t0 = time.perf_counter()
        record = {}
        # Selecting on the loss needs no metric; the validation metric is then computed only where it is reported.
        score("valid", valid_rows, record, metrics=options.select_on != "loss")
        if improves(record[select]):
            # The test set is scored only where validation improved: those are the only epochs a run can report,
            # and nothing else about the test set is ever computed, let alone looked at.
            leader["value"] = record[select]
            if options.select_on == "loss":
                record.update({f"valid_{k}": v for k, v in
                               _score(data.task, y[valid_rows], last["valid"], data.target_names).items()})
            score("test", test_rows, record)
        record["train_seconds"] = train_seconds
        record["eval_seconds"] = time.perf_counter() - t0
        clock["t"] = time.perf_counter()
        return record

    def on_best(_prepared, record: dict) -> None:
        best["state"] = features.trainable_state(model)
        best["predictions"] = {k: v.copy() for k, v in last.items()}
        best["record"] = dict(record)

    settings = LoopSettings(
        output_dir=str(run_dir), max_steps=steps, max_grad_norm=options.max_grad_norm, log_every=len(sampler),
        eval_each_epoch=True, select_key=f"valid_{options.select_key}", select_mode=options.select_mode,
        progress=options.progress,
    )
    loop = TrainingLoop(acc, _Forward(model), optimizer, loader, settings, scheduler=scheduler, evaluate=evaluate,
                        on_best=on_best)
    state = loop.run()
    if not best:
        # Every validation value was NaN (e.g. ROC-AUC on a one-class validation set): keep the last epoch, and say so.
        warnings.warn(f"validation {options.select_key} was never finite for {setting} seed {seed}; reporting the "
                      "last epoch", UserWarning, stacklevel=2)
        record = dict(state.history[-1])
        record.update({f"valid_{k}": v for k, v in
                       _score(data.task, y[valid_rows], last["valid"], data.target_names).items()})
        score("test", test_rows, record)
        on_best(None, record)
    record = best["record"]
    names = ["loss", *TASK_METRICS[data.task]]
    run = {
        "seed": int(seed),
        "best_epoch": int(record["epoch"]),
        "epochs": options.epochs,
        "valid": {k: float(record[f"valid_{k}"]) for k in names},
        "test": {k: float(record[f"test_{k}"]) for k in names},
        "seconds": round(time.perf_counter() - started, 2),
        "train_seconds_per_epoch": float(np.mean([r["train_seconds"] for r in state.history])),
        "split_sizes": [len(train_rows), len(valid_rows), len(test_rows)],
        "metrics_csv": str(run_dir / "metrics.csv"),
        "_state": best["state"],
        "_predictions": best["predictions"],
        "_rows": {"valid": valid_rows, "test": test_rows},
        "_target_scaling": (mean, std),
    }
    acc.free_memory()
    del loop
    return run


class _Keeper:
    """Keeps the weights of one run per setting (its best on validation) and of the current leading setting only, so
    a long grid never holds more than a few copies of the model in memory."""

    def __init__(self, key: str, mode: str):
        self.key, self.mode = key, mode
        self.candidates: dict[str, dict] = {}
        self.leader: dict | None = None

    def _better(self, a: dict, b: dict | None) -> bool:
        if b is None:
            return True
        va, vb = a["valid"][self.key], b["valid"][self.key]
        if not math.isfinite(vb):
            return math.isfinite(va)
        return math.isfinite(va) and (va < vb if self.mode == "min" else va > vb)

    def offer(self, name: str, setting: dict, run: dict) -> None:
        private = {k: run.pop(k) for k in list(run) if k.startswith("_")}
        if self._better(run, (self.candidates.get(name) or {}).get("run")):
            self.candidates[name] = {"run": dict(run), "setting": dict(setting), "name": name, **private}

    def entry_done(self, entry: dict, is_leader: bool) -> None:
        candidate = self.candidates.pop(entry["name"], None)
        if is_leader and candidate is not None:
            self.leader = candidate


# ---------------------------------------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="finetune.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("data")
    g.add_argument("--dataset", required=True, help="a named set (esol, bace, ...) or a CSV / Parquet file")
    g.add_argument("--data-dir", default=None, help="folder of the named sets (default: $MOLECLIP_DATA_DIR)")
    g.add_argument("--smiles-column", default=None)
    g.add_argument("--target-columns", nargs="+", default=None)
    g.add_argument("--task", choices=("regression", "classification"), default=None, help="default: inferred")
    g.add_argument("--split", choices=SPLIT_KINDS, default=None, help="default: the named set's (scaffold for "
                   "MoleculeNet, random for catalysis), random for files")
    g.add_argument("--fractions", nargs=3, type=float, default=list(DEFAULT_FRACTIONS), metavar=("TRAIN", "VALID", "TEST"))
    g.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3], help="one run per seed and setting")
    g.add_argument("--limit", type=int, default=None, help="use only the first N molecules (smoke tests)")

    g = p.add_argument_group("model")
    g.add_argument("--model", default="openai/clip-vit-base-patch16",
                   help="MoleCLIP or CLIP checkpoint (folder or Hub name), the paper's .pth, or a preset (tiny, base)")
    g.add_argument("--init-from", default=None, help="start the encoder from this finetuned MoleCLIP checkpoint folder "
                   "(domain-focused pretraining: finetune on kraken_buried_volume first); overrides --model")
    g.add_argument("--freeze-encoder", action="store_true", help="embed once, train only the head")
    g.add_argument("--frozen-views", type=int, default=1,
                   help="augmented embeddings per training molecule and preset in --freeze-encoder mode")
    g.add_argument("--r-groups", action="store_true", help="draw terminal C O N S F Cl Br I atoms as R1..R8 labels")
    g.add_argument("--baseline", choices=("fingerprint", "random_forest"), default=None,
                   help="Morgan r2 2048-bit baseline: the same MLP head (fingerprint) or a random forest")
    g.add_argument("--rf-estimators", type=int, default=500)
    g.add_argument("--head-hidden-size", type=int, default=None, help="default: the backbone config's (512 for the "
                   "paper's shape; 512 for the fingerprint baseline)")
    g.add_argument("--head-num-layers", type=int, default=None)
    g.add_argument("--regression-loss", choices=("l1", "mse"), default="l1")
    g.add_argument("--init-factor", type=float, default=None,
                   help="weight initialisation scale of a preset's randomly initialised encoder (CLIP's default 1). "
                   "At 1, drawings (mostly white) give nearly the same embedding for every molecule and training "
                   "from scratch collapses to predicting the mean; 5 lets the tiny preset learn")
    g.add_argument("--backbone-seed", type=int, default=0,
                   help="seed for weights a backbone does not provide (the presets' random encoder) and for the "
                   "frozen mode's augmented views")

    g = p.add_argument_group("training (lists are grid axes)")
    g.add_argument("--head-lr", nargs="+", type=float, default=list(HEAD_LRS))
    g.add_argument("--encoder-lr", nargs="+", type=float, default=[ENCODER_LR])
    g.add_argument("--weight-decay", nargs="+", type=float, default=[WEIGHT_DECAY])
    g.add_argument("--augmentation", nargs="+", choices=AUGMENTATIONS, default=list(AUGMENTATIONS))
    g.add_argument("--head-dropout", nargs="+", type=float, default=None, help="default: the backbone config's (0.1)")
    g.add_argument("--epochs", type=int, default=60)
    g.add_argument("--final-epochs", type=int, default=None,
                   help="after the search, train the chosen setting again for this many epochs (the paper: 180-300)")
    g.add_argument("--batch-size", type=int, default=64)
    g.add_argument("--eval-batch-size", type=int, default=128)
    g.add_argument("--select-on", choices=("loss", "metric"), default="loss",
                   help="pick the epoch (and the setting) by validation loss (the paper) or validation metric")
    g.add_argument("--max-grad-norm", type=float, default=None)
    g.add_argument("--scheduler", choices=("constant", "constant_with_warmup", "cosine"), default="constant")
    g.add_argument("--warmup-steps", type=int, default=0)
    g.add_argument("--mixed-precision", choices=("no", "fp16", "bf16"), default=None)
    g.add_argument("--num-workers", type=int, default=0, help="DataLoader workers drawing training images")
    g.add_argument("--max-cached-images", type=int, default=20_000,
                   help="keep plain drawings in memory up to this many molecules (150 kB each at 224 px)")
    g.add_argument("--cpu", action="store_true", help="train on the CPU even when a GPU is present")
    g.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: torch's for drawing and embedding; 1 while training a head alone "
                   "on a CPU, where thread start-up costs more than the tiny matrix products gain)")

    g = p.add_argument_group("output")
    g.add_argument("--output-dir", required=True)
    g.add_argument("--push-to-hub", default=None, metavar="REPO", help="upload the saved model with its model card")
    g.add_argument("--hub-private", action="store_true")
    g.add_argument("--no-plots", action="store_true")
    g.add_argument("--no-progress", action="store_true")
    return p


def _check_args(args) -> None:
    if args.baseline and (args.freeze_encoder or args.init_from or args.r_groups):
        raise ValueError("--baseline uses fingerprints: --freeze-encoder, --init-from and --r-groups do not apply")
    if args.baseline and args.push_to_hub:
        raise ValueError("--push-to-hub shares MoleCLIP models; a fingerprint baseline is not one")
    if args.epochs < 1 or (args.final_epochs is not None and args.final_epochs < 1):
        raise ValueError("--epochs and --final-epochs must be >= 1")
    if args.batch_size < 1 or args.eval_batch_size < 1:
        raise ValueError("batch sizes must be >= 1")
    if any(seed < 0 for seed in args.seeds):
        raise ValueError(f"--seeds must be non-negative integers, got {args.seeds}")
    if len(set(args.seeds)) != len(args.seeds):
        raise ValueError(f"--seeds has repeats: {args.seeds}")
    if any(v <= 0 for v in args.head_lr + args.encoder_lr):
        raise ValueError("learning rates must be positive")
    if args.threads is not None and args.threads < 1:
        raise ValueError("--threads must be >= 1")
    if args.limit is not None and args.limit < 3:
        raise ValueError("--limit must leave at least 3 molecules (one per split part)")


def _protocol_text(args, data: PropertyDataset, split_kind: str, mode: str, grid: dict, options: RunOptions) -> str:
    def show(v):
        return "default" if v is None else format(v, "g") if isinstance(v, float) else str(v)

    axes = ", ".join(f"{k} {{{', '.join(show(v) for v in vals)}}}" for k, vals in grid.items() if len(vals) > 1)
    fixed = ", ".join(f"{k} {show(vals[0])}" for k, vals in grid.items() if len(vals) == 1)
    fractions = "/".join(format(f, "g") for f in args.fractions)
    training = {"full": "encoder and head finetuned", "frozen": "frozen encoder, head trained on its embeddings"}[mode]
    text = (f"{split_kind} split {fractions}, seeds {', '.join(map(str, args.seeds))}; {training}; "
            f"Adam (0.9, 0.98), eps 1e-6, batch {args.batch_size}, {args.epochs} epochs per search run, {fixed}")
    if args.final_epochs:
        text += f", {args.final_epochs} epochs for the final runs"
    text += f"; grid over {axes}" if axes else ""
    text += (f"; the test score of a run is taken at its best-validation-{options.select_key} epoch and settings are "
             f"chosen on mean validation {options.select_key}")
    if mode == "frozen":
        text += f"; {args.frozen_views} augmented embedding view(s) per training molecule and augmentation preset"
    if args.r_groups:
        text += "; molecules drawn with R-group labels"
    return text


def _model_index(title: str, data: PropertyDataset, split_kind: str, summary: dict, metrics: Sequence[str],
                 n_seeds: int) -> str:
    import yaml

    scores = [{"type": m, "value": round(float(summary["test"][m]["mean"]), 6),
               "name": f"test {m.upper() if m != 'roc_auc' else 'ROC-AUC'} (mean of {n_seeds} seeds)"}
              for m in metrics if m in summary["test"] and math.isfinite(summary["test"][m]["mean"])]
    block = {"model-index": [{"name": title, "results": [{
        "task": {"type": "tabular-regression" if data.task == "regression" else "tabular-classification",
                 "name": "Molecular property prediction"},
        "dataset": {"name": data.name, "type": data.name, "split": f"test ({split_kind} split)"},
        "metrics": scores,
    }]}]}
    return yaml.safe_dump(block, sort_keys=False).rstrip()


def _build_template(args, data: PropertyDataset) -> tuple[MoleCLIPForPropertyPrediction, object, str]:
    from accelerate.utils import set_seed

    from moleclip.training.hub import describe_backbone, load_backbone, load_processor

    overrides = dict(task=data.task, num_targets=data.n_targets, target_names=list(data.target_names),
                     regression_loss=args.regression_loss, target_mean=None, target_std=None)
    if args.head_hidden_size is not None:
        overrides["head_hidden_size"] = args.head_hidden_size
    if args.head_num_layers is not None:
        overrides["head_num_layers"] = args.head_num_layers
    source = args.init_from or args.model
    if args.init_from and not Path(args.init_from).is_dir():
        raise FileNotFoundError(f"--init-from {args.init_from}: not a checkpoint folder (use the model/ folder a "
                                "previous finetuning wrote)")
    set_seed(args.backbone_seed)
    template = load_backbone(source, MoleCLIPForPropertyPrediction, init_factor=args.init_factor, **overrides)
    template.float()
    processor = load_processor(source, r_groups=True) if args.r_groups else load_processor(source)
    processor.augmentation = "none"  # the saved processor is for inference; training augments explicitly
    backbone = describe_backbone(args.model)
    if args.init_from:
        backbone = f"the encoder of `{args.init_from}` (a MoleCLIP model finetuned before: domain-focused pretraining)"
    return template, processor, backbone


def _load_data(args) -> PropertyDataset:
    data = load_property_dataset(args.dataset, smiles_column=args.smiles_column, target_columns=args.target_columns,
                                 task=args.task, data_dir=args.data_dir)
    if args.limit is not None and args.limit < len(data):
        data = data.subset(np.arange(args.limit))
    return data


def _warn_skipped(skipped, what: str) -> None:
    if skipped:
        from moleclip.processing.molecules import describe_skipped

        warnings.warn(f"{what}: {describe_skipped(skipped)}; these molecules are left out", UserWarning, stacklevel=2)


def finetune(args: argparse.Namespace, hub_api=None) -> dict:
    """Run the whole job described by parsed command-line `args`; returns the results (as written to results.json)."""
    from accelerate import Accelerator

    _check_args(args)
    started = time.perf_counter()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    output_dir = Path(args.output_dir)
    acc = Accelerator(cpu=args.cpu, mixed_precision=args.mixed_precision)
    progress = not args.no_progress and acc.is_local_main_process
    if acc.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
    data = _load_data(args)
    split_kind = args.split or data.default_split
    metric = data.metric
    metrics = list(TASK_METRICS[data.task])
    mode = args.baseline or ("frozen" if args.freeze_encoder else "full")
    dataset_info = {"name": data.name, "source": str(data.source) if data.source else None, "task": data.task,
                    "targets": list(data.target_names), "n_molecules": len(data), "metric": metric,
                    "skipped_rows": [{"line": s.line, "smiles": s.smiles, "reason": s.reason} for s in data.skipped]}

    if mode == "random_forest":
        return _random_forest(args, data, split_kind, metric, metrics, dataset_info, output_dir, acc, started)

    template, processor, backbone = (None, None, "Morgan fingerprints (radius 2, 2048 bits)")
    if mode == "fingerprint":
        features = FingerprintFeatures(data.smiles, data.task, data.target_names, args.regression_loss,
                                       hidden_size=args.head_hidden_size or 512, num_layers=args.head_num_layers or 3,
                                       progress=progress)
        what = "Morgan fingerprints"
    else:
        template, processor, backbone = _build_template(args, data)
        if mode == "frozen":
            features = FrozenFeatures(template, processor, data.smiles, args.eval_batch_size, device=acc.device,
                                      progress=progress, views=args.frozen_views, seed=args.backbone_seed)
        else:
            features = ImageFeatures(template, processor, data.smiles, max_cached=args.max_cached_images,
                                     progress=progress, batch_size=args.eval_batch_size)
        what = "drawing"
    _warn_skipped(features.skipped, what)
    if len(features.kept) != len(data):
        data = data.subset(features.kept)
    dataset_info["n_used"] = len(data)

    splits = {seed: make_split(split_kind, data.smiles, seed=seed, fractions=args.fractions) for seed in args.seeds}
    for seed, split in splits.items():
        if min(split.sizes) == 0:
            raise ValueError(f"the {split_kind} split of {len(data)} molecules with seed {seed} leaves a part empty "
                             f"(sizes {split.sizes}); use more molecules or other --fractions")

    grid = {"head_lr": args.head_lr, "augmentation": args.augmentation}
    if mode == "full":
        grid["encoder_lr"] = args.encoder_lr
    grid["weight_decay"] = args.weight_decay
    if args.head_dropout:
        grid["head_dropout"] = args.head_dropout
    if mode == "fingerprint" and args.augmentation != ["none"]:
        grid["augmentation"] = ["none"]  # fingerprints have no images to augment
    if mode == "frozen":
        union = np.unique(np.concatenate([s.train for s in splits.values()]))
        features.prepare_views(grid["augmentation"], union)
    settings = expand_grid(grid)
    varied = [k for k, v in grid.items() if len(set(v)) > 1]

    options = RunOptions(output_dir=output_dir, metric=metric, select_on=args.select_on, epochs=args.epochs,
                         batch_size=args.batch_size, eval_batch_size=args.eval_batch_size, num_workers=args.num_workers,
                         max_grad_norm=args.max_grad_norm, scheduler=args.scheduler, warmup_steps=args.warmup_steps,
                         progress=progress and len(settings) * len(args.seeds) == 1)

    def runner(keeper: _Keeper, epochs: int, phase: str):
        def train_fn(setting: dict, seed: int) -> dict:
            name = setting_name(setting, varied)
            run_options = copy.copy(options)
            run_options.epochs = epochs
            run_dir = output_dir / "runs" / phase / name / f"seed_{seed}"
            run = train_run(features, data, splits[seed], setting, seed, run_options, acc, run_dir, args.regression_loss)
            keeper.offer(name, setting, run)
            return run
        return train_fn

    # Each run ends with accelerate's free_memory(), whose full garbage collection walks every object alive; with
    # torch, transformers and datasets loaded that is seconds per run. Objects alive now live until the end anyway.
    gc.collect()
    gc.freeze()
    threads = torch.get_num_threads()
    if args.threads is None and mode in ("frozen", "fingerprint") and acc.device.type == "cpu":
        torch.set_num_threads(1)  # measured: the ESOL frozen grid runs 5x faster on one thread than on two
    keeper = _Keeper(options.select_key, options.select_mode)
    search = run_search(settings, args.seeds, runner(keeper, args.epochs, "search"), options.select_key,
                        options.select_mode, on_entry=keeper.entry_done, progress=progress, varied=varied)
    chosen = search["entries"][search["chosen"]]
    final_runs, kept = chosen["runs"], keeper.leader
    if args.final_epochs:
        final_keeper = _Keeper(options.select_key, options.select_mode)
        final = run_search([chosen["setting"]], args.seeds, runner(final_keeper, args.final_epochs, "final"),
                           options.select_key, options.select_mode, on_entry=final_keeper.entry_done,
                           progress=progress, varied=varied)
        final_runs, kept = final["entries"][0]["runs"], final_keeper.leader
    final_summary = summarize_runs(final_runs)
    gc.unfreeze()
    torch.set_num_threads(threads)

    results = {
        "dataset": dataset_info,
        "mode": mode,
        "backbone": backbone,
        "model": args.model if mode != "fingerprint" else None,
        "init_from": args.init_from,
        "protocol": {
            "split": split_kind, "fractions": list(args.fractions), "seeds": list(args.seeds),
            "epochs": args.epochs, "final_epochs": args.final_epochs, "batch_size": args.batch_size,
            "optimizer": "Adam (decoupled weight decay), betas (0.9, 0.98), eps 1e-6", "scheduler": args.scheduler,
            "select_on": args.select_on, "select_key": f"valid_{options.select_key}", "select_mode": options.select_mode,
            "r_groups": bool(args.r_groups), "frozen_views": args.frozen_views if mode == "frozen" else None,
            "regression_loss": args.regression_loss if data.task == "regression" else None,
            "grid": grid, "split_sizes": {str(s): list(v.sizes) for s, v in splits.items()},
        },
        "search": search,
        "chosen_setting": chosen["setting"],
        "chosen_name": chosen["name"],
        "final": {"runs": final_runs, "summary": final_summary},
        "paper": paper_reference(data.name, args.data_dir),
        "processes": acc.num_processes,
        "device": str(acc.device),
    }
    label = {"full": "MoleCLIP (this run)", "frozen": "MoleCLIP, frozen encoder (this run)",
             "fingerprint": "FP-MLP baseline (this run)"}[mode]
    results["final_table"] = final_markdown(final_summary, metrics, label, results["paper"], metric)
    results["search_table"] = search_markdown(search, options.select_key, metric)

    if acc.is_main_process:
        model_dir = output_dir / "model"
        saved = features.restore(kept["_state"], kept["setting"])
        if data.task == "regression":
            saved.set_target_scaling(*kept["_target_scaling"])  # a MoleCLIP model keeps it in its config, not weights
        if mode == "fingerprint":
            saved.save(model_dir)
        results["saved_model"] = {"dir": str(model_dir), "setting": kept["setting"], "seed": kept["run"]["seed"],
                                  "best_epoch": kept["run"]["best_epoch"], "valid": kept["run"]["valid"],
                                  "test": kept["run"]["test"]}
        if not args.no_plots:
            results["plots"] = _plots(output_dir, data, kept, metric)
        results["wall_seconds"] = round(time.perf_counter() - started, 1)
        markdown = _results_markdown(results, data, metric)
        _write_results(output_dir, results, markdown)
        if mode != "fingerprint":
            title = f"moleclip-{data.name}"
            card = {
                "title": title, "dataset": f"{data.name} ({len(data)} molecules)",
                "protocol": _protocol_text(args, data, split_kind, mode, grid, options),
                "results_table": results["final_table"] + "\n\nSearch (mean ± std over seeds; chosen on validation):\n\n"
                + results["search_table"],
                "select_on": options.select_key, "backbone": backbone,
                "model_index": _model_index(args.push_to_hub or title, data, split_kind, final_summary, metrics,
                                            len(args.seeds)),
            }
            if args.push_to_hub:
                card["repo_id"] = args.push_to_hub
            from moleclip.training.hub import push_model_dir, save_model_dir

            save_model_dir(model_dir, saved, processor, card=card,
                           extra_files={"results.json": (output_dir / "results.json").read_text(),
                                        "results.md": markdown})
            if args.push_to_hub:
                results["hub_commit"] = push_model_dir(model_dir, args.push_to_hub, private=args.hub_private or None,
                                                       api=hub_api)
                _write_results(output_dir, results, markdown)
        print(markdown)
    acc.wait_for_everyone()
    return public_view(results)


def _write_results(output_dir: Path, results: dict, markdown: str) -> None:
    (output_dir / "results.json").write_text(json.dumps(public_view(results), indent=2, allow_nan=True))
    (output_dir / "results.md").write_text(markdown + "\n")


def _plots(output_dir: Path, data: PropertyDataset, kept: dict, metric: str) -> dict:
    from moleclip.training import plots

    folder = output_dir / "plots"
    rows = kept["_rows"]["test"]
    pred = kept["_predictions"]["test"]
    if data.task == "classification":
        pred = 1.0 / (1.0 + np.exp(-pred))
    written = {}
    name = "parity_test.png" if data.task == "regression" else "roc_test.png"
    written["test"] = str(plots.plot_predictions(data.task, data.targets[rows], pred, folder / name,
                                                 data.target_names, title=data.name))
    curves = Path(kept["run"]["metrics_csv"])
    if curves.is_file():
        written["learning_curves"] = str(plots.learning_curves(curves, folder / "learning_curves.png", metric=metric,
                                                               best_epoch=kept["run"]["best_epoch"], title=data.name))
    import pandas as pd

    table = pd.DataFrame({"smiles": [data.smiles[i] for i in rows]})
    for j, name in enumerate(data.target_names):
        table[name] = data.targets[rows, j]
        table[f"predicted_{name}"] = pred[:, j]
    table.to_csv(folder / "test_predictions.csv", index=False)
    written["test_predictions"] = str(folder / "test_predictions.csv")
    return written


def _results_markdown(results: dict, data: PropertyDataset, metric: str) -> str:
    p = results["protocol"]
    lines = [
        f"# {data.name}: {results['mode']} finetuning",
        "",
        f"{len(data)} molecules, {p['split']} split {'/'.join(format(f, 'g') for f in p['fractions'])}, seeds "
        f"{', '.join(map(str, p['seeds']))}. Backbone: {results['backbone']}.",
        f"Each run's test score is taken at its best-validation epoch ({p['select_key']}); the setting is chosen on "
        f"{results['search']['selected_by']} - test scores never enter the choice.",
        "",
        f"## Final: {results['chosen_name']}" + (f", {p['final_epochs']} epochs" if p["final_epochs"] else ""),
        "",
        "Test scores, mean ± std [95% confidence interval of the mean] over seeds.",
        "",
        results["final_table"],
        "",
        "## Search",
        "",
        results["search_table"],
    ]
    if "saved_model" in results:
        s = results["saved_model"]
        lines += ["", f"Saved model: `{s['dir']}` ({setting_name(s['setting'], results['search']['varied'])}, seed "
                  f"{s['seed']}, epoch {s['best_epoch']}).", f"Wall time: {results.get('wall_seconds', 0):.0f} s."]
    if results["paper"] and data.name == "phosphines_yield":
        lines.append("Phosphine yields are fractions here and in paper_results.csv; the paper prints them in percent.")
    return "\n".join(lines)


def _random_forest(args, data, split_kind, metric, metrics, dataset_info, output_dir, acc, started) -> dict:
    from moleclip.training.baselines import random_forest_baseline

    per_seed = random_forest_baseline(data, split_kind, args.seeds, fractions=args.fractions,
                                      n_estimators=args.rf_estimators, progress=not args.no_progress)
    runs = [{"seed": s, "valid": r["valid"], "test": r["test"], "split_sizes": r["sizes"]} for s, r in per_seed.items()]
    setting = {"n_estimators": args.rf_estimators}
    summary = summarize_runs(runs)
    search = {"entries": [{"setting": setting, "name": f"n_estimators={args.rf_estimators}", "runs": runs,
                           "summary": summary}], "chosen": 0, "varied": [],
              "selected_by": "fixed hyperparameters (no search)"}
    results = {
        "dataset": dataset_info, "mode": "random_forest", "backbone": "Morgan fingerprints (radius 2, 2048 bits)",
        "protocol": {"split": split_kind, "fractions": list(args.fractions), "seeds": list(args.seeds),
                     "epochs": None, "final_epochs": None, "select_key": "none (fixed hyperparameters)",
                     "n_estimators": args.rf_estimators},
        "search": search, "chosen_setting": setting, "chosen_name": search["entries"][0]["name"],
        "final": {"runs": runs, "summary": summary}, "paper": paper_reference(data.name, args.data_dir),
    }
    results["final_table"] = final_markdown(summary, metrics, "Random forest (this run)", results["paper"], metric)
    results["search_table"] = search_markdown(search, metric, metric)
    results["wall_seconds"] = round(time.perf_counter() - started, 1)
    if acc.is_main_process:
        markdown = _results_markdown(results, data, metric)
        _write_results(output_dir, results, markdown)
        print(markdown)
    return public_view(results)


def main(argv: list[str] | None = None, hub_api=None) -> int:
    args = build_parser().parse_args(argv)
    finetune(args, hub_api=hub_api)
    return 0


if __name__ == "__main__":
    sys.exit(main())

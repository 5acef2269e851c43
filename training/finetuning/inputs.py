"""What a finetuning run reads, behind one small protocol (`TrainingInputs`).

- :class:`ImageInputs` (mode "full"): molecules drawn by the processor, augmented per epoch; encoder and head train.
- :class:`EmbeddingInputs` (mode "frozen"): embeddings computed once by the frozen encoder; only a head trains.
- :class:`FingerprintInputs` (mode "fingerprint"): Morgan bits into the same head, the paper's baseline.

Each is built once per job (the expensive part: drawing, embedding or fingerprinting every molecule) and then serves
every run of the grid. `new_model()` always returns a fresh model, so no run can inherit weights, optimiser hooks or
`accelerate` wrappers from the one before.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from typing import Protocol

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from moleclip import MoleCLIPForPropertyPrediction
from moleclip.processing.augment import AUGMENTATION_PRESETS
from moleclip.processing.fingerprints import morgan_fingerprints
from moleclip.processing.seeding import sample_rng
from moleclip.training.kinds.baselines import FP_BITS, FP_RADIUS, FeatureHeadModel, FingerprintPredictor
from moleclip.training.inference.engine import embed
from moleclip.training.kinds import ImageKind

from .data import KeyedItems, PictureItems, PictureSource, TableItems, pass_batch

__all__ = ["TrainingInputs", "ImageInputs", "EmbeddingInputs", "FingerprintInputs", "ENCODER_ADAM", "HEAD_ADAM"]

# The reference code's two optimisers: the encoder's Adam with CLIP's betas and eps, the head's with PyTorch's defaults
# (both with L2 weight decay). Adam takes betas and eps per parameter group, so one optimiser carries both.
ENCODER_ADAM = {"betas": (0.9, 0.98), "eps": 1e-6}
HEAD_ADAM = {"betas": (0.9, 0.999), "eps": 1e-8}


def _head_group(parameters, setting: dict) -> dict:
    return {"params": list(parameters), "lr": setting["head_lr"], "weight_decay": setting["weight_decay"], **HEAD_ADAM}


class TrainingInputs(Protocol):
    """The protocol every input strategy follows (rows index the job's molecules, after unusable ones were dropped)."""

    kind: str  # "full", "frozen" or "fingerprint"
    kept: np.ndarray  # positions of the usable input molecules
    skipped: list  # SkippedMolecule entries for the others

    def train_dataset(self, rows: np.ndarray, labels: np.ndarray, augmentation: str, seed: int) -> Dataset:
        """Items keyed by (epoch, i) for the training rows."""

    def collate(self, items) -> dict:
        """The DataLoader's collate function."""

    def eval_batches(self, rows: np.ndarray, batch_size: int) -> Iterator[dict]:
        """Model inputs for evaluation, plain (never augmented), in row order."""

    def new_model(self, setting: dict) -> nn.Module:
        """A fresh model for one run, its head newly initialised by the (seeded) global RNG."""

    def param_groups(self, model: nn.Module, setting: dict) -> list[dict]:
        """Optimiser parameter groups with the setting's learning rates and weight decay."""

    def best_state(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """A CPU copy of what training changed (to keep the best epoch's weights)."""

    def restore(self, state: dict[str, torch.Tensor], setting: dict) -> nn.Module:
        """The model to save or use for inference, with `state` loaded."""


def _cpu_copy(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}


def _head_settings(template: MoleCLIPForPropertyPrediction, setting: dict) -> dict:
    config = template.config
    dropout = setting.get("head_dropout")
    return dict(in_features=config.projection_dim, num_targets=config.num_targets, task=config.task,
                regression_loss=config.regression_loss, hidden_size=config.head_hidden_size,
                num_layers=config.head_num_layers, dropout=config.head_dropout if dropout is None else float(dropout),
                target_names=config.target_names)


def _with_fresh_head(template: MoleCLIPForPropertyPrediction, setting: dict) -> MoleCLIPForPropertyPrediction:
    """A copy of the template whose head is newly initialised (with the setting's dropout)."""
    model = copy.deepcopy(template)  # keeps the template's frozen parameters (the unused logit scale) frozen
    if setting.get("head_dropout") is not None:
        model.config.head_dropout = float(setting["head_dropout"])
    model.reset_head()
    return model


class ImageInputs:
    """Molecules drawn by the processor: plain drawings are made once (and kept in memory when there are few enough);
    training pictures are augmented per epoch with a generator seeded by `(run seed, epoch, molecule)`."""

    kind = "full"

    def __init__(self, template: MoleCLIPForPropertyPrediction, processor, smiles: Sequence[str],
                 max_cached: int = 20_000, progress: bool = True, batch_size: int = 64):
        self.template, self.processor = template, processor
        drawn, kept, skipped = [], [], []
        keep_images = len(smiles) <= max_cached
        for start in tqdm(range(0, len(smiles), batch_size), desc="drawing", unit="batch", disable=not progress):
            images, ok, bad = processor.render_images(list(smiles[start:start + batch_size]), augmentation="none",
                                                      on_error="skip")
            kept += [start + i for i in ok]
            skipped += [type(s)(s.index + start, s.smiles, s.reason) for s in bad]
            if keep_images:
                drawn += images
        self.kept, self.skipped = np.asarray(kept, dtype=np.int64), skipped
        smiles_kept = [smiles[i] for i in kept]
        self.source = PictureSource(processor, smiles_kept, np.stack(drawn) if keep_images and drawn else None)
        self.collate = self.source.collate

    def train_dataset(self, rows, labels, augmentation, seed) -> Dataset:
        return KeyedItems(labels, PictureItems(self.source, np.asarray(rows), augmentation, seed))

    def eval_batches(self, rows, batch_size) -> Iterator[dict]:
        for start in range(0, len(rows), batch_size):
            pictures = [self.source.plain(int(r)) for r in rows[start:start + batch_size]]
            yield {"pixel_values": self.source.to_pixel_values(pictures)}

    def new_model(self, setting: dict) -> nn.Module:
        return _with_fresh_head(self.template, setting)

    def param_groups(self, model, setting: dict) -> list[dict]:
        return [{"params": list(model.moleclip.parameters()), "lr": setting["encoder_lr"],
                 "weight_decay": setting["weight_decay"], **ENCODER_ADAM},
                _head_group(model.head.parameters(), setting)]

    def best_state(self, model) -> dict:
        return _cpu_copy(model)

    def restore(self, state: dict, setting: dict) -> nn.Module:
        model = _with_fresh_head(self.template, setting)
        model.load_state_dict(state)
        return model.eval()


class _PrecomputedFeatures:
    """What the two head-only modes share: a table of features computed once (`self.features`, one row per molecule)
    read by whole batches, and one optimiser group for the head."""

    features: torch.Tensor
    collate = staticmethod(pass_batch)

    def eval_batches(self, rows, batch_size) -> Iterator[dict]:
        rows = torch.as_tensor(np.asarray(rows), dtype=torch.long)
        for start in range(0, len(rows), batch_size):
            yield {"features": self.features[rows[start:start + batch_size]]}

    def param_groups(self, model, setting: dict) -> list[dict]:
        return [_head_group(model.parameters(), setting)]


class EmbeddingInputs(_PrecomputedFeatures):
    """Embeddings computed once by the frozen encoder; each run trains a fresh head on them.

    Augmentation presets other than "none" are approximated by `views` augmented embeddings of each training molecule,
    made once before training (`prepare_views`); epoch `e` reads view `e % views`. Validation and test always read the
    plain embedding, as in the full mode. The saved model is the template with the trained head put in.
    """

    kind = "frozen"

    def __init__(self, template: MoleCLIPForPropertyPrediction, processor, smiles: Sequence[str], batch_size: int,
                 device=None, progress: bool = True, views: int = 1, seed: int = 0):
        if views < 1:
            raise ValueError(f"--frozen-views must be >= 1, got {views}")
        self.template, self.processor, self.device = template, processor, device
        self.batch_size, self.progress, self.views, self.seed = batch_size, progress, views, seed
        template.requires_grad_(False)
        embeds, kept, skipped = embed(ImageKind(template, processor), list(smiles), batch_size=batch_size,
                                      device=device, progress=progress, on_error="skip")
        self.kept, self.skipped = np.asarray(kept, dtype=np.int64), skipped
        self.smiles = [smiles[i] for i in kept]
        self.features = torch.as_tensor(embeds, dtype=torch.float32)
        self.augmented: dict[str, torch.Tensor] = {}

    def prepare_views(self, presets: Sequence[str], rows: np.ndarray) -> None:
        """Embed `views` augmented drawings of the molecules at `rows` for each preset (other rows stay zero)."""
        rows = np.unique(np.asarray(rows, dtype=np.int64))
        for p_index, preset in enumerate(AUGMENTATION_PRESETS):
            if preset == "none" or preset not in presets or preset in self.augmented:
                continue
            table = torch.zeros((self.views, *self.features.shape), dtype=torch.float32)
            for view in range(self.views):
                # One generator per (preset, view) walks the molecules in row order: the views depend only on the
                # molecules to embed, never on the run, so every run of the grid reads the same augmented data.
                embeds, kept, _ = embed(ImageKind(self.template, self.processor), [self.smiles[r] for r in rows],
                                        batch_size=self.batch_size, device=self.device, progress=self.progress,
                                        on_error="raise", augmentation=preset, seed=sample_rng(self.seed, p_index, view))
                table[view, torch.as_tensor(rows[kept])] = torch.as_tensor(embeds, dtype=torch.float32)
            self.augmented[preset] = table

    def train_dataset(self, rows, labels, augmentation, seed) -> Dataset:
        rows = torch.as_tensor(np.asarray(rows), dtype=torch.long)
        if augmentation == "none":
            items = TableItems("features", self.features, rows)
        elif augmentation in self.augmented:
            items = TableItems("features", self.augmented[augmentation], rows, views=self.views)
        else:
            raise RuntimeError(f"no augmented embeddings for preset {augmentation!r}: call prepare_views first")
        return KeyedItems(labels, items, whole_batches=True)

    def new_model(self, setting: dict) -> nn.Module:
        return FeatureHeadModel(**_head_settings(self.template, setting))

    def best_state(self, model) -> dict:
        return _cpu_copy(model.head)

    def restore(self, state: dict, setting: dict) -> nn.Module:
        model = _with_fresh_head(self.template, setting)
        model.head.load_state_dict(state)
        return model.eval()


class FingerprintInputs(_PrecomputedFeatures):
    """Morgan fingerprints (radius 2, 2048 bits) for the fixed-representation baseline."""

    kind = "fingerprint"

    def __init__(self, smiles: Sequence[str], task: str, target_names: Sequence[str], regression_loss: str = "l1",
                 hidden_size: int = 512, num_layers: int = 3, dropout: float = 0.0, progress: bool = True,
                 standardize: str = "none", smiles_column: str | None = None):
        # `smiles` were standardised when the table was read (if asked): the saved model only records how, so that
        # predict prepares new molecules the same way.
        result = morgan_fingerprints(list(smiles), radius=FP_RADIUS, n_bits=FP_BITS, progress=progress)
        self.kept, self.skipped = result.kept, result.skipped
        self.features = torch.as_tensor(result.bits, dtype=torch.float32)
        self.model_args = dict(in_features=FP_BITS, num_targets=len(target_names), task=task,
                               regression_loss=regression_loss, hidden_size=hidden_size, num_layers=num_layers,
                               dropout=dropout, target_names=list(target_names), standardize=standardize,
                               smiles_column=smiles_column)

    def train_dataset(self, rows, labels, augmentation, seed) -> Dataset:
        items = TableItems("features", self.features, torch.as_tensor(np.asarray(rows), dtype=torch.long))
        return KeyedItems(labels, items, whole_batches=True)

    def new_model(self, setting: dict) -> nn.Module:
        args = dict(self.model_args)
        if setting.get("head_dropout") is not None:
            args["dropout"] = float(setting["head_dropout"])
        return FingerprintPredictor(**args)

    def best_state(self, model) -> dict:
        return _cpu_copy(model)

    def restore(self, state: dict, setting: dict) -> nn.Module:
        model = self.new_model(setting)
        model.load_state_dict(state)
        return model.eval()

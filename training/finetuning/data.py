"""Training items for a DataLoader, addressed by `(epoch, row)` keys.

The batch sampler is wrapped in `EpochBatches`, which tags each index with the epoch. The items below draw any
randomness (a picture's augmentation) from `sample_rng(run seed, epoch, molecule)`, so an item depends on nothing
else: not on worker processes, not on how far a resumed run had got.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from moleclip.processing.augment import augment
from moleclip.processing.seeding import sample_rng

__all__ = ["KeyedItems", "TableItems", "PictureSource", "PictureItems", "pass_batch"]


class KeyedItems(Dataset):
    """A training set of `n` items whose keys are `(epoch, i)`; `labels[i]` is attached to item `i`.

    `items(epoch, positions)` builds a whole batch when it can (`whole_batches=True`: the DataLoader then calls
    `__getitems__` once per batch and its collate function must pass the batch through); otherwise one item at a time.
    For precomputed embeddings and fingerprints, indexing one tensor beats stacking 64 small dicts. Items are
    picklable objects, not closures, so DataLoader workers work under every start method.
    """

    def __init__(self, labels: np.ndarray, items, whole_batches: bool = False):
        self.labels = torch.as_tensor(labels, dtype=torch.float32)
        self.items, self.whole_batches = items, whole_batches

    def __getattr__(self, name: str):
        # `__getitems__` exists only when whole batches can be built (the DataLoader looks it up with getattr)
        if name == "__getitems__" and self.__dict__.get("whole_batches"):
            return self._getitems
        raise AttributeError(name)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, key: tuple[int, int]) -> dict:
        epoch, i = key
        item = self.items(epoch, i)
        item["labels"] = self.labels[i]
        return item

    def _getitems(self, keys: list[tuple[int, int]]) -> dict:
        epochs = {epoch for epoch, _ in keys}
        if len(epochs) != 1:
            raise RuntimeError("a batch spans two epochs")  # EpochBatches never does this
        positions = torch.as_tensor([i for _, i in keys], dtype=torch.long)
        batch = self.items(epochs.pop(), positions)
        batch["labels"] = self.labels[positions]
        return batch


def pass_batch(batch: dict) -> dict:
    """The collate function of whole-batch items: the batch is already built."""
    return batch


class TableItems:
    """Rows of a precomputed table: `table[rows[i]]`, or with augmented views `table[epoch % views, rows[i]]`."""

    def __init__(self, key: str, table: torch.Tensor, rows: torch.Tensor, views: int | None = None):
        self.key, self.table, self.rows, self.views = key, table, rows, views

    def __call__(self, epoch: int, positions) -> dict:
        rows = self.rows[positions]
        return {self.key: self.table[rows] if self.views is None else self.table[epoch % self.views, rows]}


class PictureSource:
    """What DataLoader workers need to make pictures: the plain drawings (or the SMILES to draw them from) and the
    processor's settings; kept apart from the model so that workers never receive a copy of it."""

    def __init__(self, processor, smiles: list[str], images: np.ndarray | None):
        self.processor, self.smiles, self.images = processor, smiles, images

    def plain(self, row: int) -> np.ndarray:
        if self.images is not None:
            return self.images[row]
        images, _, _ = self.processor.render_images([self.smiles[row]], augmentation="none")
        return images[0]

    def to_pixel_values(self, images: list[np.ndarray]) -> torch.Tensor:
        # The processor's own normalisation (and channel order), without a processor call per picture.
        return self.processor.pictures_to_pixel_values(images)

    def collate(self, items: list[dict]) -> dict:
        """uint8 pictures to one normalised batch; runs in the DataLoader workers."""
        return {"pixel_values": self.to_pixel_values([item["pixel_values"] for item in items]),
                "labels": torch.stack([item["labels"] for item in items])}


class PictureItems:
    """One training picture: the plain drawing, augmented with a generator seeded by (run seed, epoch, molecule)."""

    def __init__(self, source: PictureSource, rows: np.ndarray, augmentation: str, seed: int):
        self.source, self.rows, self.augmentation, self.seed = source, rows, augmentation, seed

    def __call__(self, epoch: int, i: int) -> dict:
        row = int(self.rows[i])
        picture = self.source.plain(row)
        if self.augmentation != "none":
            picture = augment(picture, self.augmentation, sample_rng(self.seed, epoch, row))
        return {"pixel_values": picture}

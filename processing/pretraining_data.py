"""The pretraining data pipeline: two views of every molecule, drawn in DataLoader workers, reproducible per sample.

View 1 is the plain RDKit drawing, view 2 a drawing with a random style (line width, font, font size, bond length,
multiple-bond offset, rotation); both then go through the same classical augmentation preset (`default` in the paper).

Reproducibility: every random choice for a sample comes from a generator seeded by ``(seed, epoch, index)``, never
from a worker's global state. A run resumed mid-epoch, or run with a different number of workers, therefore draws
exactly the same pictures. The epoch travels with each index: :class:`moleclip.training.samplers.EpochBatches` wraps the batch sampler and
yields ``(epoch, index)`` keys, so the dataset holds no mutable epoch that worker copies could disagree on.

Drawing: both views are drawn by the model's image processor (`MoleCLIPImageProcessor.render_images`), the one
drawing path of finetuning, inference and screening too, so its drawing settings (``r_groups``, ``drawing_backend``)
shape the pretraining pictures exactly as they shape the pictures the model is later fed.

Cost: computing 2D coordinates is the slow part of drawing (about 3x a Cairo draw). Each worker's processor keeps its
own coordinate cache, so the two views of a sample share one layout and a molecule seen again in a later epoch by the
same worker skips it too (bounded by ``coordinate_cache_size`` molecules per worker).

Where drawing cannot keep up with the accelerator, :func:`prerender` draws every molecule once ahead of time (the
plain drawing and ``n_variants`` random-style drawings) into a :class:`PrerenderedImages` store: Parquet shards of PNG
pictures, a ``datasets`` dataset (see ``prerendered_store``). Training then only decodes and augments; the random-style
view of a sample is one of the stored variants, chosen by the same per-sample generator. PNG keeps the store about 15x
smaller than raw pixels (about 10 kB instead of 150 kB per 224 px drawing), which is what makes a ChEMBL-sized store
fit on one disk.

Images leave the workers as uint8 ``[B, 3, H, W]`` tensors (4x less inter-process traffic than float32); the
processor's `normalize_pixels` turns them into the model's pixel values on the accelerator.

Flat relative imports only, like the rest of ``processing/``.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from .augment import AUGMENTATION_PRESETS, augment
from .augment_batched import sample_seed
from .image_processing_moleclip import MoleCLIPImageProcessor
from .molecules import quiet_rdkit
# The store lives in its own module; these names stay importable from here.
from .prerendered_store import PRERENDER_FORMAT, PrerenderedImages, prerender, smiles_digest
from .seeding import sample_rng

__all__ = [
    "PackedStrings",
    "TwoViewDataset",
    "FixedBatches",
    "collate_two_views",
    "PrerenderedImages",
    "prerender",
    "smiles_digest",
    "PRERENDER_FORMAT",
    "VALID_STREAM",
    "TRAIN_STREAM",
]

# Separate random streams for training samples and the fixed validation views, so the two can never coincide.
TRAIN_STREAM = 0
VALID_STREAM = 1


# The last coordinate of a sample's generators: its drawing-style draws and its augmentation draws come from separate
# generators, so a sample's augmentation does not depend on how its drawings were obtained (drawn now or read from a
# pre-rendered store).
STYLE_DRAWS, AUGMENT_DRAWS = 0, 1
# Undrawable molecules in a row, with none drawn before them, after which TwoViewDataset stops (see __getitem__).
_FAILURES_BEFORE_GIVING_UP = 50
# Where the classical augmentation of pretraining runs (see TwoViewDataset's `augment_on`).
AUGMENT_ON = ("workers", "device")


class PackedStrings(Sequence):
    """A read-only list of strings stored as one byte buffer plus offsets.

    Millions of Python strings, forked into every DataLoader worker, are slowly copied page by page as reference
    counts change; two numpy arrays are shared for good.
    """

    def __init__(self, strings: Sequence[str]):
        encoded = [s.encode("utf-8") for s in strings]
        self._offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
        np.cumsum([len(b) for b in encoded], out=self._offsets[1:])
        self._data = np.frombuffer(b"".join(encoded), dtype=np.uint8) if encoded else np.zeros(0, dtype=np.uint8)

    def __len__(self) -> int:
        return len(self._offsets) - 1

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} strings")
        return self._data[self._offsets[index] : self._offsets[index + 1]].tobytes().decode("utf-8")


def _to_chw(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))


class TwoViewDataset(Dataset):
    """Molecules as pairs of pictures plus their pseudo-labels.

    Args:
        smiles: the molecules.
        labels: ``[n, n_label_sets]`` integer pseudo-labels (None: no classification targets).
        seed: base of the per-sample seeds.
        size: picture side in pixels.
        augmentation: classical augmentation preset applied to both views (`default` in the paper).
        stream: ``TRAIN_STREAM`` or ``VALID_STREAM`` (validation uses fixed views: pass epoch 0 always).
        ids: an id per molecule returned with each sample (default: its position), e.g. the row in the input file.
        coordinate_cache_size: molecules whose 2D layout each worker keeps (about 70 KiB each).
        prerendered: a :class:`PrerenderedImages` store to read drawings from instead of drawing.
        augment_on: ``"workers"`` augments each picture here (numpy/PIL, the fastest on a CPU); ``"device"`` returns
            the pictures un-augmented with ``augment_seeds`` (one seed per view, a pure function of the sample's
            coordinates) so that the training step augments the whole batch on the accelerator
            (`augment_batched.augment_batch`), and the workers only draw or decode.
        store_slots: for each molecule, its slot in ``prerendered`` (-1: not in the store, draw it); default: the
            store holds exactly these molecules in this order.
        processor: the image processor that draws both views (the model's: its drawing settings apply; default: a
            default processor of side ``size``). Molecules are drawn as given: the table is prepared (standardised)
            before it gets here.
        styled_view: draw the randomly styled second view (False: the classification task alone, which reads only
            the plain drawing; items then have no ``augmented_pixel_values``).

    Items are dicts of ``pixel_values`` / ``augmented_pixel_values`` (uint8 ``[3, H, W]``), ``pseudo_labels``
    (int64 ``[n_label_sets]``, when labels are given), ``index`` and, with ``augment_on="device"``, ``augment_seeds``
    (int64 ``[2]``). Keys are ``(epoch, index)`` pairs (see
    :class:`moleclip.training.samplers.EpochBatches`) or plain indices (epoch 0). A molecule that cannot be drawn comes back as two white pictures
    with pseudo-labels -100 (ignored by the cross-entropy), with a warning, so that batches keep their size.
    """

    def __init__(
        self,
        smiles: Sequence[str],
        labels: np.ndarray | None = None,
        seed: int = 0,
        size: int = 224,
        augmentation: str = "default",
        stream: int = TRAIN_STREAM,
        ids: np.ndarray | None = None,
        coordinate_cache_size: int = 10_000,
        prerendered: "PrerenderedImages | None" = None,
        store_slots: np.ndarray | None = None,
        augment_on: str = "workers",
        processor: MoleCLIPImageProcessor | None = None,
        styled_view: bool = True,
    ):
        self.styled_view = bool(styled_view)
        if augment_on not in AUGMENT_ON:
            raise ValueError(f"augment_on must be one of {list(AUGMENT_ON)}, got {augment_on!r}")
        self.augment_on = augment_on
        if augmentation not in AUGMENTATION_PRESETS:
            raise ValueError(f"unknown augmentation preset {augmentation!r}; choose one of {list(AUGMENTATION_PRESETS)}")
        self.smiles = smiles if isinstance(smiles, PackedStrings) else PackedStrings(list(smiles))
        n = len(self.smiles)
        if labels is not None:
            labels = np.asarray(labels, dtype=np.int64)
            if labels.ndim == 1:
                labels = labels[:, None]
            if labels.shape[0] != n:
                raise ValueError(f"{labels.shape[0]} label rows for {n} molecules")
        self.labels = labels
        self.ids = np.arange(n, dtype=np.int64) if ids is None else np.asarray(ids, dtype=np.int64)
        if len(self.ids) != n:
            raise ValueError(f"{len(self.ids)} ids for {n} molecules")
        self.seed, self.size, self.augmentation, self.stream = int(seed), int(size), augmentation, int(stream)
        self.coordinate_cache_size = int(coordinate_cache_size)
        if self.coordinate_cache_size < 1:
            # checked here: the cache is built at the first drawing, where an error would read as "cannot be drawn"
            # for every molecule, each replaced by a blank picture
            raise ValueError(f"coordinate_cache_size must be at least 1 molecule, got {coordinate_cache_size}")
        self.prerendered = prerendered
        if prerendered is not None:
            if prerendered.n_variants < 1:
                # its second view would be the plain drawing again: the contrastive task would lose its style change
                raise ValueError(f"the pre-rendered store at {prerendered.path} holds no random-style drawings; "
                                 "re-run `moleclip prerender` with --variants 1 or more")
            if prerendered.size != self.size:
                raise ValueError(f"the pre-rendered store at {prerendered.path} holds {prerendered.size} px drawings; "
                                 f"the model reads {self.size} px")
            if store_slots is None:
                if len(prerendered) != n:
                    raise ValueError(f"the pre-rendered store holds {len(prerendered)} molecules, the data {n}: "
                                     "pass store_slots (see PrerenderedImages.slots_for)")
                store_slots = np.arange(n, dtype=np.int64)
            store_slots = np.asarray(store_slots, dtype=np.int64)
            if len(store_slots) != n:
                raise ValueError(f"{len(store_slots)} store slots for {n} molecules")
        self.store_slots = store_slots
        if processor is None:
            processor = MoleCLIPImageProcessor(size=self.size)
        elif processor.size["height"] != self.size:
            raise ValueError(f"the processor draws {processor.size['height']} px pictures, the model reads {self.size} px")
        if prerendered is not None and prerendered.drawing != processor.drawing_settings():
            raise ValueError(f"the pre-rendered store at {prerendered.path} was drawn with {prerendered.drawing}, the "
                             f"model's processor draws with {processor.drawing_settings()}: re-run `moleclip prerender` "
                             "with --model set to the backbone")
        # each worker's copy keeps its own cache of 2D layouts, of this run's size
        self.processor = processor.with_cache_size(self.coordinate_cache_size)
        self._warned = False
        self._drawn = self._failed = 0  # in this process (each DataLoader worker counts its own)

    def __len__(self) -> int:
        return len(self.smiles)

    @property
    def n_label_sets(self) -> int:
        return 0 if self.labels is None else self.labels.shape[1]

    def _stored_pair(self, index: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray] | None:
        """The molecule's drawings from the pre-rendered store; None when the store lacks them (then they are drawn).

        A store that cannot be read (a shard gone, truncated or damaged) raises: that is not a molecule that cannot be
        drawn, and turning every molecule of a damaged shard into a blank picture would train on nothing, silently.
        """
        if self.prerendered is None or self.store_slots[index] < 0:
            return None
        return self.prerendered.read_pair(int(self.store_slots[index]), rng)

    def _draw_pair(self, index: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        smiles = self.smiles[index]
        # augmentation is this dataset's (both views, after drawing); the table's SMILES are already prepared
        views = [self.processor.render_images(smiles, randomize_drawing=randomize, augmentation="none",
                                              standardize="none", seed=rng)[0][0]
                 for randomize in ((False, True) if self.styled_view else (False,))]
        return views[0], views[-1] if self.styled_view else None

    def __getitem__(self, key) -> dict[str, torch.Tensor | int]:
        epoch, index = key if isinstance(key, tuple) else (0, key)
        index = int(index)
        # Pure functions of the sample's coordinates: the same pictures in any process, worker or resumed run.
        style_rng = sample_rng(self.seed, self.stream, epoch, index, STYLE_DRAWS)
        augment_rng = sample_rng(self.seed, self.stream, epoch, index, AUGMENT_DRAWS)
        labels = None if self.labels is None else self.labels[index]
        pair = self._stored_pair(index, style_rng)
        if pair is None:
            try:
                with quiet_rdkit():
                    pair = self._draw_pair(index, style_rng)
            except Exception as err:  # RDKit raises assorted C++ errors; one bad molecule must not end a long run
                self._failed += 1
                if self._drawn == 0 and self._failed >= _FAILURES_BEFORE_GIVING_UP:
                    # not bad molecules but a drawing that does not work here (fonts, Cairo, settings): training on
                    # blank pictures would finish with exit status 0 and a useless model
                    raise RuntimeError(f"none of the first {self._failed} molecules could be drawn, the last "
                                       f"{self.smiles[index]!r}: {err}") from err
                if not self._warned:
                    warnings.warn(f"molecule {int(self.ids[index])} ({self.smiles[index]!r}) could not be drawn "
                                  f"({err}); it is replaced by a blank picture with ignored labels (further failures "
                                  "not reported)")
                    self._warned = True
                labels = None if labels is None else np.full_like(labels, -100)
        if pair is None:
            view1 = view2 = np.full((self.size, self.size, 3), 255, dtype=np.uint8)
        else:
            self._drawn += 1
            if self.augment_on == "workers":
                view1 = augment(pair[0], self.augmentation, augment_rng)
                view2 = augment(pair[1], self.augmentation, augment_rng) if self.styled_view else None
            else:
                view1, view2 = pair
        item = {"pixel_values": _to_chw(view1), "index": int(self.ids[index])}
        if self.styled_view:
            item["augmented_pixel_values"] = _to_chw(view2)
        if self.augment_on == "device":
            # each view its own stream of the sample's coordinates, so the two views never share their choices
            item["augment_seeds"] = torch.tensor(
                [sample_seed(self.seed, self.stream, epoch, index, AUGMENT_DRAWS, view) for view in (0, 1)])
        if labels is not None:
            item["pseudo_labels"] = torch.from_numpy(np.array(labels, dtype=np.int64))
        return item


def collate_two_views(items: list[dict]) -> dict[str, torch.Tensor]:
    """Stack samples of :class:`TwoViewDataset` into a batch (uint8 pictures; ``indices`` for bookkeeping)."""
    batch = {
        "pixel_values": torch.stack([it["pixel_values"] for it in items]),
        "indices": torch.tensor([it["index"] for it in items], dtype=torch.int64),
    }
    for key in ("augmented_pixel_values", "pseudo_labels", "augment_seeds"):
        if key in items[0]:
            batch[key] = torch.stack([it[key] for it in items])
    return batch


class FixedBatches:
    """The same batches every time (validation): ``indices`` cut into this process's equal-sized batches.

    Every process gets the same number of batches of the same size, which the global-batch contrastive loss needs
    (an all-gather of unequal shapes would hang). Leftover molecules that cannot fill a batch on every process are
    dropped.
    """

    def __init__(self, indices: Sequence[int], batch_size: int, num_replicas: int = 1, rank: int = 0):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        indices = list(indices)
        global_size = batch_size * num_replicas
        n_batches = len(indices) // global_size
        self.batches = [
            indices[b * global_size + rank * batch_size : b * global_size + (rank + 1) * batch_size] for b in range(n_batches)
        ]

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        return iter([list(b) for b in self.batches])

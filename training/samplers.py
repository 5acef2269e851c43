"""Batch samplers that shard global batches across processes themselves and resume mid-epoch without replaying.

Both samplers here work the same way: every process computes the same epoch order from ``(seed, epoch)``, cuts it
into *global* batches, and yields only its own contiguous slice of each global batch (``global_batch //
num_replicas`` indices). Together the processes cover every global batch exactly once, so a contrastive loss
gathered across processes sees the batch the sampler built. They are meant to be used as a DataLoader's
``batch_sampler`` without ``accelerator.prepare`` re-sharding the loader (see ``training/loop.py``).

``set_epoch(epoch, start_batch)`` reshuffles for that epoch and makes the next iteration start at batch
``start_batch``: a resumed run continues with exactly the batches the interrupted run had not yet seen, and the skipped
ones are never built. ``len()`` is always the number of batches in a whole epoch.

- :class:`GroupedClassBatchSampler`: MoleCLIP pretraining batches, groups of molecules of the same (fine) pseudo-class.
- :class:`ShuffledBatchSampler`: a plain shuffled sampler (finetuning).
- :class:`EpochBatches`: wraps either and tags every index with its epoch, `(epoch, i)`, so datasets can seed each
  item's random choices by (seed, epoch, item) without holding a mutable epoch that worker copies could disagree on.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from moleclip.processing.seeding import sample_rng

__all__ = ["EpochBatches", "GroupedClassBatchSampler", "ShuffledBatchSampler"]


class _ShardedEpochBatches:
    """Shared machinery: an epoch order (from the subclass), cut into global batches, sliced per process."""

    def __init__(self, n: int, global_batch_size: int, num_replicas: int, rank: int, seed: int, drop_last: bool):
        if global_batch_size < 1:
            raise ValueError(f"the batch size must be positive, got {global_batch_size}")
        if num_replicas < 1:
            raise ValueError(f"num_replicas must be at least 1, got {num_replicas}")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank must be in 0..{num_replicas - 1}, got {rank}")
        if global_batch_size % num_replicas:
            raise ValueError(
                f"the global batch of {global_batch_size} cannot be split evenly over {num_replicas} processes; "
                "choose a batch size divisible by the number of processes"
            )
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        if n == 0:
            raise ValueError("cannot sample batches from an empty dataset")
        if drop_last and n < global_batch_size:
            raise ValueError(
                f"{n} items cannot fill one batch of {global_batch_size} with drop_last=True; use a smaller batch"
            )
        self.n = int(n)
        self.global_batch_size = int(global_batch_size)
        self.local_batch_size = self.global_batch_size // num_replicas
        self.num_replicas = int(num_replicas)
        self.rank = int(rank)
        self.seed = int(seed)
        self.drop_last = bool(drop_last)
        self.epoch = 0
        self.start_batch = 0

    def _epoch_order(self, rng: np.random.Generator) -> np.ndarray:
        """All indices in this epoch's order, whole batches first (the last, partial batch at the end)."""
        raise NotImplementedError

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Use epoch ``epoch``'s order from now on, and start the next iteration at batch ``start_batch``.

        ``start_batch`` stays in force for every iteration until the next ``set_epoch`` call.
        """
        if epoch < 0:
            raise ValueError(f"epoch must be non-negative, got {epoch}")
        if not 0 <= start_batch <= len(self):
            raise ValueError(f"start_batch must be in 0..{len(self)} (batches per epoch), got {start_batch}")
        self.epoch = int(epoch)
        self.start_batch = int(start_batch)

    def __len__(self) -> int:
        if self.drop_last:
            return self.n // self.global_batch_size
        return -(-self.n // self.global_batch_size)

    def global_batches(self, epoch: int | None = None) -> list[np.ndarray]:
        """Every global batch of an epoch (all processes' indices), for inspection and tests."""
        order = self._order(self.epoch if epoch is None else epoch)
        return [self._global_batch(order, b) for b in range(len(self))]

    def _order(self, epoch: int) -> np.ndarray:
        # The generator depends on (seed, epoch) only, so every process, and every resumed run, builds the same order.
        return self._epoch_order(sample_rng(self.seed, epoch))

    def _global_batch(self, order: np.ndarray, b: int) -> np.ndarray:
        size = self.global_batch_size
        batch = order[b * size : (b + 1) * size]
        short = -len(batch) % self.num_replicas
        if short:
            # Only the last batch with drop_last=False: padded from the start of the epoch order so that every
            # process gets as many items as the others (an all-gather of unequal shapes would hang).
            batch = np.concatenate([batch, np.resize(order, short)])
        return batch

    def __iter__(self) -> Iterator[list[int]]:
        order = self._order(self.epoch)
        for b in range(self.start_batch, len(self)):
            batch = self._global_batch(order, b)
            local = len(batch) // self.num_replicas
            yield batch[self.rank * local : (self.rank + 1) * local].tolist()


class GroupedClassBatchSampler(_ShardedEpochBatches):
    """MoleCLIP's pretraining batches: ``groups_per_batch`` groups of ``group_size`` molecules of one class each.

    Each epoch, from ``(seed, epoch)``:

    1. molecules are shuffled within their class and the classes are laid out one after the other in a shuffled order;
    2. that sequence is cut into consecutive groups of ``group_size``;
    3. the groups are shuffled, and consecutive runs of ``groups_per_batch`` groups form the global batches
       (256 molecules with the defaults).

    Class boundaries: a class whose size is not a multiple of ``group_size`` shares one group with the next class in
    the layout, and a class smaller than ``group_size`` always shares its group with its neighbours (several tiny
    classes may fill one group). So at most ``n_classes - 1`` groups are mixed; all others hold one class. Nothing is
    padded or repeated to make groups pure, and since the class order and the order within classes are redrawn every
    epoch, which molecules fall into mixed groups changes from epoch to epoch.

    Leftovers: with ``drop_last=True`` (the default) only whole global batches are formed; the molecules left over (fewer
    than one global batch) are those of the last groups after shuffling, so they differ from epoch to epoch. With
    ``drop_last=False`` they form a final, smaller batch (the incomplete group, if any, at its end), padded to a
    multiple of ``num_replicas`` from the start of the epoch order.

    Sharding: every process computes the same global batches and yields only the ``rank``-th contiguous slice of
    ``global_batch // num_replicas`` indices. With the defaults and 2, 4 or 8 processes each process gets whole groups.

    Args:
        labels: the class of each item (any integers, e.g. the fine K-means pseudo-label); index ``i`` is item ``i``.
        group_size: items per group (32 in the paper).
        groups_per_batch: groups per global batch (8 in the paper).
        num_replicas: number of processes sharing each global batch.
        rank: this process.
        seed: seed of the shuffles; the order depends on ``(seed, epoch)`` only.
        drop_last: drop the items that do not fill a whole global batch.
    """

    def __init__(
        self,
        labels: Sequence[int],
        group_size: int = 32,
        groups_per_batch: int = 8,
        num_replicas: int = 1,
        rank: int = 0,
        seed: int = 0,
        drop_last: bool = True,
    ):
        labels = np.asarray(labels)
        if labels.ndim != 1:
            raise ValueError(f"labels must be one class per item (1-D), got shape {labels.shape}")
        if len(labels) and not np.issubdtype(labels.dtype, np.integer):
            raise TypeError(f"labels must be integer classes, got dtype {labels.dtype}")
        if group_size < 1 or groups_per_batch < 1:
            raise ValueError(f"group_size and groups_per_batch must be positive, got {group_size} and {groups_per_batch}")
        super().__init__(len(labels), group_size * groups_per_batch, num_replicas, rank, seed, drop_last)
        self.group_size = int(group_size)
        self.groups_per_batch = int(groups_per_batch)
        # Dense class codes 0..C-1; the smallest dtype that fits keeps the per-epoch gather and sort cheap.
        classes, codes = np.unique(labels, return_inverse=True)
        self.n_classes = len(classes)
        self._codes = codes.astype(np.min_scalar_type(max(self.n_classes - 1, 0)))

    def _epoch_order(self, rng: np.random.Generator) -> np.ndarray:
        class_position = rng.permutation(self.n_classes)
        shuffled = rng.permutation(self.n)
        # A stable sort by the (shuffled) class position keeps the random order inside each class.
        laid_out = shuffled[np.argsort(class_position[self._codes[shuffled]], kind="stable")]
        n_groups = self.n // self.group_size
        groups = laid_out[: n_groups * self.group_size].reshape(n_groups, self.group_size)
        order = groups[rng.permutation(n_groups)].reshape(-1)
        if not self.drop_last:
            order = np.concatenate([order, laid_out[n_groups * self.group_size :]])
        return order

    def group_purity(self, epoch: int | None = None) -> float:
        """Fraction of this epoch's whole groups whose members all share one class (diagnostics)."""
        order = self._order(self.epoch if epoch is None else epoch)
        n_groups = self.n // self.group_size
        codes = self._codes[order[: n_groups * self.group_size]].reshape(n_groups, self.group_size)
        return float((codes == codes[:, :1]).all(axis=1).mean()) if n_groups else 1.0


class ShuffledBatchSampler(_ShardedEpochBatches):
    """Plain shuffled batches of ``range(n)``, reshuffled from ``(seed, epoch)`` and sharded like the grouped sampler.

    ``batch_size`` is the global batch; each of ``num_replicas`` processes yields its ``batch_size // num_replicas``
    slice. With ``drop_last=False`` the last batch is smaller (padded to a multiple of ``num_replicas`` from the start
    of the epoch order when several processes share it).
    """

    def __init__(
        self, n: int, batch_size: int, seed: int = 0, drop_last: bool = False, num_replicas: int = 1, rank: int = 0
    ):
        super().__init__(int(n), batch_size, num_replicas, rank, seed, drop_last)

    def _epoch_order(self, rng: np.random.Generator) -> np.ndarray:
        return rng.permutation(self.n)


class EpochBatches:
    """Wraps a batch sampler that has ``set_epoch(epoch, start_batch)`` and tags every index with the epoch.

    The training loop talks to this object as it would to the wrapped sampler; the dataset receives ``(epoch, i)``.
    """

    def __init__(self, sampler):
        if not hasattr(sampler, "set_epoch"):
            raise TypeError("the wrapped batch sampler needs set_epoch(epoch, start_batch)")
        self.sampler = sampler
        self.epoch = 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch = int(epoch)
        self.sampler.set_epoch(epoch, start_batch=start_batch)

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        epoch = self.epoch
        for batch in self.sampler:
            yield [(epoch, int(i)) for i in batch]

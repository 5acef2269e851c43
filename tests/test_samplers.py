"""Batch samplers: class-pure groups, sharding that covers each global batch once, determinism, resuming, length."""

from __future__ import annotations

import numpy as np
import pytest

from moleclip.training.samplers import GroupedClassBatchSampler, ShuffledBatchSampler


def _labels(sizes, seed=0) -> np.ndarray:
    """Class labels with the given class sizes, in a shuffled order (so index and class are unrelated)."""
    labels = np.repeat(np.arange(len(sizes)) * 7 + 3, sizes)  # class ids that are not 0..C-1
    return np.random.default_rng(seed).permutation(labels)


def _groups(batch, group_size):
    return [batch[i : i + group_size] for i in range(0, len(batch), group_size)]


def test_groups_are_class_pure_when_classes_fill_whole_groups():
    labels = _labels([32 * 3] * 10 + [32 * 5] * 4)
    sampler = GroupedClassBatchSampler(labels, group_size=32, groups_per_batch=4)
    for epoch in range(3):
        sampler.set_epoch(epoch)
        for batch in sampler:
            assert len(batch) == 128
            for group in _groups(batch, 32):
                assert len(set(labels[group])) == 1
    assert sampler.group_purity() == 1.0


def test_large_uneven_classes_give_at_most_one_mixed_group_per_boundary():
    sizes = [211, 97, 305, 64, 150, 33, 260]
    labels = _labels(sizes)
    sampler = GroupedClassBatchSampler(labels, group_size=32, groups_per_batch=2, drop_last=True)
    mixed = sum(len(set(labels[g])) > 1 for batch in sampler for g in _groups(batch, 32))
    assert mixed <= len(sizes) - 1
    n_groups = sum(sizes) // 32
    assert sampler.group_purity() >= 1 - (len(sizes) - 1) / n_groups


def test_tiny_classes_share_groups_and_nothing_is_lost():
    labels = _labels([3] * 40 + [5] * 10)  # 170 molecules, every class smaller than a group
    sampler = GroupedClassBatchSampler(labels, group_size=8, groups_per_batch=2, drop_last=False)
    seen = np.concatenate([np.asarray(b) for b in sampler])
    assert sorted(seen.tolist()) == list(range(len(labels)))  # each molecule exactly once
    # A tiny class is never split over more than two groups (it sits inside, or across one group boundary).
    order = np.concatenate(sampler.global_batches())
    group_of = np.empty(len(labels), dtype=int)
    group_of[order] = np.arange(len(order)) // 8
    for c in np.unique(labels):
        assert len(set(group_of[labels == c])) <= 2


@pytest.mark.parametrize("num_replicas", [1, 2, 4, 8])
def test_all_ranks_together_cover_each_global_batch_exactly_once(num_replicas):
    labels = _labels([300, 500, 200, 1000])
    samplers = [
        GroupedClassBatchSampler(labels, group_size=32, groups_per_batch=8, num_replicas=num_replicas, rank=r, seed=5)
        for r in range(num_replicas)
    ]
    for s in samplers:
        s.set_epoch(2)
    per_rank = [list(s) for s in samplers]
    reference = samplers[0].global_batches()
    assert all(len(batches) == len(reference) == len(samplers[0]) for batches in per_rank)
    for b, global_batch in enumerate(reference):
        joined = np.concatenate([per_rank[r][b] for r in range(num_replicas)])
        np.testing.assert_array_equal(joined, global_batch)
        assert all(len(per_rank[r][b]) == 256 // num_replicas for r in range(num_replicas))
    every = np.concatenate(reference)
    assert len(np.unique(every)) == len(every) == len(samplers[0]) * 256  # no molecule twice in an epoch


def test_deterministic_for_seed_and_epoch_and_different_across_epochs():
    labels = _labels([400, 300, 350])

    def batches(seed, epoch):
        sampler = GroupedClassBatchSampler(labels, group_size=16, groups_per_batch=4, seed=seed)
        sampler.set_epoch(epoch)
        return list(sampler)

    assert batches(0, 1) == batches(0, 1)
    assert batches(0, 1) != batches(0, 2)
    assert batches(0, 1) != batches(1, 1)
    sampler = GroupedClassBatchSampler(labels, group_size=16, groups_per_batch=4, seed=0)
    assert list(sampler) == batches(0, 0)  # epoch 0 without a set_epoch call
    assert list(sampler) == list(sampler)  # iterating again repeats the epoch


@pytest.mark.parametrize("num_replicas,rank", [(1, 0), (4, 3)])
def test_start_batch_skips_like_slicing(num_replicas, rank):
    labels = _labels([500, 700, 300])
    sampler = GroupedClassBatchSampler(labels, num_replicas=num_replicas, rank=rank, seed=3)
    sampler.set_epoch(4)
    whole = list(sampler)
    for start in (0, 1, len(whole) - 1, len(whole)):
        sampler.set_epoch(4, start_batch=start)
        assert list(sampler) == whole[start:]
    sampler.set_epoch(5)  # a new epoch starts from its beginning again
    assert len(list(sampler)) == len(sampler)
    with pytest.raises(ValueError, match="start_batch"):
        sampler.set_epoch(4, start_batch=len(whole) + 1)


@pytest.mark.parametrize("n", [256, 300, 511, 512, 1000])
def test_length(n):
    labels = np.arange(n) % 7
    dropping = GroupedClassBatchSampler(labels, group_size=32, groups_per_batch=8, drop_last=True)
    keeping = GroupedClassBatchSampler(labels, group_size=32, groups_per_batch=8, drop_last=False)
    assert len(dropping) == n // 256 == len(list(dropping))
    assert len(keeping) == -(-n // 256) == len(list(keeping))
    assert sorted(np.concatenate(list(keeping)).tolist()) == list(range(n))


def test_last_batch_is_padded_evenly_over_ranks_without_drop_last():
    labels = np.arange(300) % 5
    samplers = [GroupedClassBatchSampler(labels, group_size=32, groups_per_batch=8, num_replicas=4, rank=r,
                                         drop_last=False) for r in range(4)]
    last = [list(s)[-1] for s in samplers]
    assert len({len(b) for b in last}) == 1  # 44 leftovers padded to 44 = 4 x 11
    assert len(last[0]) == 11
    covered = set(np.concatenate([np.concatenate(list(s)) for s in samplers]).tolist())
    assert covered == set(range(300))


def test_bad_arguments_are_refused():
    labels = np.zeros(1000, dtype=int)
    with pytest.raises(ValueError, match="split evenly"):
        GroupedClassBatchSampler(labels, num_replicas=3)
    with pytest.raises(ValueError, match="rank"):
        GroupedClassBatchSampler(labels, num_replicas=2, rank=2)
    with pytest.raises(ValueError, match="cannot fill one batch"):
        GroupedClassBatchSampler(labels[:100])
    with pytest.raises(TypeError, match="integer"):
        GroupedClassBatchSampler(np.zeros(1000, dtype=float))
    with pytest.raises(ValueError, match="seed"):
        GroupedClassBatchSampler(labels, seed=-1)


def test_works_as_a_dataloader_batch_sampler():
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    labels = _labels([100, 100, 100])
    data = TensorDataset(torch.arange(len(labels)))
    sampler = GroupedClassBatchSampler(labels, group_size=8, groups_per_batch=4, num_replicas=2, rank=1)
    loaded = [batch[0].tolist() for batch in DataLoader(data, batch_sampler=sampler)]
    assert loaded == list(sampler)


def test_shuffled_sampler_shards_and_resumes():
    samplers = [ShuffledBatchSampler(103, 8, seed=1, drop_last=False, num_replicas=2, rank=r) for r in range(2)]
    assert len(samplers[0]) == 13
    for s in samplers:
        s.set_epoch(1)
    per_rank = [list(s) for s in samplers]
    assert [len(b) for b in per_rank[0]] == [len(b) for b in per_rank[1]]
    assert set(np.concatenate(per_rank[0] + per_rank[1]).tolist()) == set(range(103))
    samplers[0].set_epoch(1, start_batch=5)
    assert list(samplers[0]) == per_rank[0][5:]
    samplers[0].set_epoch(2)
    assert list(samplers[0]) != per_rank[0]
    dropping = ShuffledBatchSampler(103, 8, drop_last=True)
    assert len(dropping) == 12 and all(len(b) == 8 for b in dropping)

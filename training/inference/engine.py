"""The one engine that runs models over molecules: batched, with a progress bar, the kind's preparation (drawing) in
DataLoader worker processes where it pays, the forward pass in this process on the device `devices.choose_device`
picks.

It speaks to models only through `training.kinds.ModelKind`, so every kind runs here the same way. `embed`,
`predict` (and through them `moleclip embed`/`predict`, the app, explain, search queries and the frozen-encoder
finetuning) and :class:`EmbeddingChunks` (screening's chunks) use :func:`run`. Several models given together (an
ensemble) share the preparation of each batch when they prepare alike, and the work one kind leaves for another
(an encoder two heads share).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from moleclip.processing.molecules import InvalidMoleculeError, SkippedMolecule
from moleclip.training.inference.devices import choose_device
from moleclip.training.kinds import ModelKind
from moleclip.training.outputs import embedding_columns, standardized_column

__all__ = ["EmbeddingChunks", "RunResult", "embed", "predict", "run"]


@dataclass
class RunResult:
    """One model's outputs over the whole input, in input order: `values` [n, targets] and `embeddings` [n, d] in
    the precision the model computes in, with NaN rows for the molecules that could not be used (None when not asked for or the kind has
    none), and those molecules (`skipped`, by input position)."""

    values: np.ndarray | None = None
    embeddings: np.ndarray | None = None
    skipped: list[SkippedMolecule] = field(default_factory=list)


class _Batches(torch.utils.data.Dataset):
    """The input in batches, each prepared where the DataLoader runs it (a worker process, or this one)."""

    def __init__(self, prepare, smiles: Sequence, batch_size: int):
        self.prepare, self.smiles, self.batch_size = prepare, smiles, batch_size

    def __len__(self) -> int:
        return -(-len(self.smiles) // self.batch_size)

    def __getitem__(self, i: int):
        start = i * self.batch_size
        prepared = self.prepare(self.smiles[start:start + self.batch_size])
        skipped = [(s.index + start, s.smiles, s.reason) for s in prepared.skipped]  # plain tuples travel well
        return prepared.inputs, prepared.kept + start, skipped


def _numpy(x) -> np.ndarray:
    """A batch's outputs as numpy, in the precision the model computed them (float32 for a network, a forest's
    float64), with room for NaN."""
    x = x.float().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    return x.astype(np.promote_types(x.dtype, np.float32), copy=False)


def _unchanged(item):
    """The DataLoader's collate: a prepared batch travels as the kind made it (numpy stays numpy)."""
    return item


@torch.no_grad()
def run(kinds: Sequence[ModelKind], smiles: Sequence, *, batch_size: int = 64, device=None, num_workers: int = 0,
        progress: bool = True, desc: str = "predicting", logits: bool | Sequence[bool] = False,
        embeddings: bool | Sequence[bool] = False, options: dict | None = None) -> list[RunResult]:
    """Run every model of `kinds` over `smiles`; one :class:`RunResult` each, in order.

    `logits`: per model (or one for all), raw logits instead of probabilities for classification. `embeddings`: per
    model (or one for all), keep the kind's embeddings too. `options`: the preparation settings (a MoleCLIP model's drawing settings, e.g.
    `r_groups=True`). `num_workers` processes prepare the batches of a kind whose preparation pays for them.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    device, options, smiles = choose_device(device), dict(options or {}), list(smiles)
    flags, keep = (_per_model(flag, len(kinds)) for flag in (logits, embeddings))
    kinds = [kind.to(device) for kind in kinds]
    results = [RunResult() for _ in kinds]
    groups: dict = {}
    for i, kind in enumerate(kinds):  # models that prepare alike share each batch's preparation
        groups.setdefault(kind.preparation(), []).append(i)
    for members in groups.values():
        lead = kinds[members[0]]
        prepare = lead.preparer(**options)
        workers = num_workers if getattr(prepare, "parallel", False) else 0
        loader = torch.utils.data.DataLoader(_Batches(prepare, smiles, batch_size), batch_size=None,
                                             num_workers=workers, prefetch_factor=2 if workers else None,
                                             collate_fn=_unchanged)
        skipped = []
        for inputs, kept, batch_skipped in tqdm(loader, desc=desc, unit="batch", disable=not progress):
            skipped += [SkippedMolecule(int(i), s, r) for i, s, r in batch_skipped]
            kept = np.asarray(kept, dtype=np.int64)
            if not len(kept):
                continue
            inputs = lead.to_device(inputs, device, **options)
            shared: dict = {}
            for i in members:
                out = kinds[i].forward(inputs, logits=flags[i], shared=shared)
                if out.values is not None:
                    results[i].values = _store(results[i].values, out.values, kept, len(smiles))
                if keep[i] and out.embeddings is not None:
                    results[i].embeddings = _store(results[i].embeddings, out.embeddings, kept, len(smiles))
        for i in members:
            result, kind = results[i], kinds[i]
            result.skipped = list(skipped)
            if result.values is None and kind.has_predictions:  # nothing could be used: the same columns, empty
                result.values = np.full((len(smiles), len(kind.target_names)), np.nan, dtype=np.float32)
            if keep[i] and result.embeddings is None and kind.embedding_width is not None:
                result.embeddings = np.full((len(smiles), kind.embedding_width), np.nan, dtype=np.float32)
    return results


def _per_model(flag, n: int) -> list[bool]:
    return [bool(flag)] * n if isinstance(flag, bool) else [bool(f) for f in flag]


def _store(table: np.ndarray | None, batch, kept: np.ndarray, n: int) -> np.ndarray:
    batch = _numpy(batch)
    if table is None:
        table = np.full((n, batch.shape[1]), np.nan, dtype=batch.dtype)
    table[kept] = batch
    return table


def _compact(full: np.ndarray, skipped: list) -> tuple[np.ndarray, np.ndarray, list]:
    bad = {s.index for s in skipped}
    kept = np.asarray([i for i in range(len(full)) if i not in bad], dtype=np.int64)
    return full[kept], kept, skipped


def embed(kind: ModelKind, smiles: Sequence, batch_size: int = 64, device=None, progress: bool = True,
          num_workers: int = 0, on_error: str = "skip", **options) -> tuple[np.ndarray, np.ndarray, list]:
    """(embeddings [n_kept, d] float32, the input positions kept, the skipped entries). `options` go to the kind's
    preparation (a MoleCLIP model's drawing: `r_groups=True`, `augmentation="default", seed=0`, ...).
    `on_error="raise"`: the first molecule that cannot be used is an error."""
    if kind.embedding_width is None:
        raise ValueError(f"a {kind.describe()} model has no embeddings")
    result = run([kind], smiles, batch_size=batch_size, device=device, num_workers=num_workers, progress=progress,
                 desc="embedding", embeddings=True, options=options)[0]
    _raise_on_skipped(result.skipped, on_error)
    return _compact(result.embeddings, result.skipped)


def predict(kind: ModelKind, smiles: Sequence, batch_size: int = 64, device=None, progress: bool = True,
            num_workers: int = 0, on_error: str = "skip", logits: bool = False,
            **options) -> tuple[np.ndarray, np.ndarray, list]:
    """(predictions [n_kept, targets]: regression values in the targets' units, probabilities for classification or
    with `logits=True` the logits; the input positions kept; the skipped entries)."""
    result = run([kind], smiles, batch_size=batch_size, device=device, num_workers=num_workers, progress=progress,
                 logits=logits, options=options)[0]
    _raise_on_skipped(result.skipped, on_error)
    return _compact(result.values, result.skipped)


def _raise_on_skipped(skipped: list, on_error: str) -> None:
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    if on_error == "raise" and skipped:
        first = skipped[0]
        raise InvalidMoleculeError(first.smiles, first.index, first.reason)


class EmbeddingChunks:
    """Screening's `compute` for `moleclip embed`: a chunk's embedding columns `emb_0..` (NaN rows for molecules that
    could not be used), its skipped entries and its standardised SMILES."""

    def __init__(self, kind: ModelKind, batch_size: int = 64, num_workers: int = 0, device=None,
                 options: dict | None = None):
        self.kind, self.batch_size, self.num_workers = kind, batch_size, num_workers
        self.device, self.options = choose_device(device), dict(options or {})
        self.width = kind.embedding_width

    def __call__(self, chunk) -> tuple[dict, list, list | None]:
        result = run([self.kind], chunk.smiles, batch_size=self.batch_size, device=self.device,
                     num_workers=self.num_workers, progress=False, embeddings=True, options=self.options)[0]
        return (embedding_columns(result.embeddings), result.skipped,
                standardized_column(chunk.smiles, self.kind.standardize))

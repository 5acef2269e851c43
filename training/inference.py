"""Batched inference over lists of SMILES: embeddings and property predictions, with progress bars.

Used by `moleclip embed`, `moleclip predict` and the frozen-encoder finetuning mode, so molecules are drawn and
encoded the same way everywhere.
"""

from __future__ import annotations

import functools

import contextlib
import logging
from collections.abc import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from moleclip import MoleCLIPForPropertyPrediction, MoleCLIPImageProcessor
from moleclip.processing.molecules import SkippedMolecule
from moleclip.tasks import predictions_from_logits
from moleclip.training.devices import choose_device

__all__ = ["embed_smiles", "predict_smiles", "property_outputs"]


@torch.no_grad()
def _run(model, processor, smiles, batch_size, device, progress, fn, width, desc, on_error, **render_kwargs):
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    device = choose_device(device)
    seed = render_kwargs.get("seed")
    if seed is not None and not isinstance(seed, np.random.Generator):
        # One generator for the whole input: the processor would seed an int afresh for every batch, so the molecules
        # at one position in each batch would get the same random drawing style and augmentation, and the numbers
        # would change with batch_size.
        render_kwargs["seed"] = np.random.default_rng(seed)
    model = model.to(device).eval()
    outputs, kept, skipped = [], [], []
    with _quiet(type(processor).__module__):
        for start in tqdm(range(0, len(smiles), batch_size), desc=desc, unit="batch", disable=not progress):
            batch = processor(list(smiles[start : start + batch_size]), return_tensors="pt", on_error=on_error,
                              **render_kwargs)
            skipped += [SkippedMolecule(s.index + start, s.smiles, s.reason) for s in batch.skipped]
            if len(batch["kept_indices"]) == 0:
                continue
            kept += (batch["kept_indices"] + start).tolist()
            pixel_values = batch["pixel_values"].to(device=device, dtype=next(model.parameters()).dtype)
            outputs.append(fn(model, pixel_values).float().cpu().numpy())
    # `width` columns also when nothing could be drawn, so the result stacks with other calls' results
    stacked = np.concatenate(outputs) if outputs else np.zeros((0, width), dtype=np.float32)
    return stacked, np.asarray(kept, dtype=np.int64), skipped


@contextlib.contextmanager
def _quiet(logger_name: str):
    """The processor warns about each batch's skipped molecules by their position in that batch; here the caller
    gets them all, by their position in the whole input, and reports them once."""
    log = logging.getLogger(logger_name)
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


def embed_smiles(
    model, processor: MoleCLIPImageProcessor, smiles: Sequence[str], batch_size: int = 64, device=None,
    progress: bool = True, on_error: str = "skip", **render_kwargs,
) -> tuple[np.ndarray, np.ndarray, list[SkippedMolecule]]:
    """Projected MoleCLIP embeddings (n_kept, projection_dim), the input positions kept, and the skipped entries.

    `model` is a MoleCLIPModel or MoleCLIPForPropertyPrediction (its encoder is used). Extra keyword arguments go to
    the processor (e.g. `r_groups=True`, `augmentation="default", seed=0`).
    """
    encoder = model.moleclip if isinstance(model, MoleCLIPForPropertyPrediction) else model
    return _run(encoder, processor, smiles, batch_size, device, progress,
                lambda m, x: m(pixel_values=x).image_embeds, encoder.config.projection_dim, "embedding", on_error,
                **render_kwargs)


def predict_smiles(
    model: MoleCLIPForPropertyPrediction, processor: MoleCLIPImageProcessor, smiles: Sequence[str],
    batch_size: int = 64, device=None, progress: bool = True, on_error: str = "skip", logits: bool = False,
    **render_kwargs,
) -> tuple[np.ndarray, np.ndarray, list[SkippedMolecule]]:
    """Model outputs: regression values in the targets' units, probabilities for classification (sigmoid per target),
    or the raw logits with `logits=True`; with the kept input positions and skipped
    entries."""
    outputs = functools.partial(property_outputs, logits=True) if logits else property_outputs
    return _run(model, processor, smiles, batch_size, device, progress, outputs, model.config.num_targets,
                "predicting", on_error, **render_kwargs)


def property_outputs(model: MoleCLIPForPropertyPrediction, pixel_values: torch.Tensor | None = None,
                     return_embeds: bool = False, image_embeds: torch.Tensor | None = None, logits: bool = False):
    """A property model's outputs for a batch of pixel values (or of the encoder's `image_embeds`, which skips the
    encoder): regression values in the targets' units, sigmoid probabilities per target (classification), or with `logits=True` the raw logits (what an ensemble combines and calibration reads: a
    probability rounded to 1.0 in float32 has lost its logit); with `return_embeds`, also the encoder embeddings the
    head read (one forward pass for both)."""
    output = model(pixel_values=pixel_values, image_embeds=image_embeds)
    values = output.logits if logits else predictions_from_logits(output.logits, model.config.task)
    return (values, output.image_embeds) if return_embeds else values

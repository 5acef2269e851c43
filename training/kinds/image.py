"""MoleCLIP: molecules drawn by the processor, read by the vision encoder (and its property head, if it has one)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from moleclip import MoleCLIPForPropertyPrediction, MoleCLIPImageProcessor
from moleclip.tasks import predictions_from_logits
from moleclip.training.kinds.base import ModelKind, Outputs, Prepared, register_kind
from moleclip.training.serving.hub import load_backbone, load_processor, read_model_config, save_model_dir

__all__ = ["ImageKind"]

# Processor settings that act while drawing; the others act when uint8 pictures become pixel values (on the device).
_DRAWING_OPTIONS = ("seed", "randomize_drawing", "r_groups", "augmentation")


class _Drawing:
    """A batch of SMILES (or pictures) -> uint8 pictures [b, H, W, C], where the engine runs it (worker processes,
    each with its own copy of the processor). Its layout cache holds one molecule: a single pass never draws a
    molecule twice, so a large cache would only hold memory."""

    def __init__(self, processor: MoleCLIPImageProcessor, options: dict):
        self.processor = processor.with_cache_size(1)
        self.options = dict(options)
        seed = self.options.get("seed")
        if seed is not None and not isinstance(seed, np.random.Generator):
            # One generator for the whole input: the processor would seed an int afresh for every batch, so the
            # molecules at one position in each batch would get the same random style, and the numbers would change
            # with the batch size.
            self.options["seed"] = np.random.default_rng(seed)
        # a generator walks the molecules in order: worker processes would each copy it and repeat its draws
        self.parallel = self.options.get("seed") is None

    def __call__(self, smiles: Sequence) -> Prepared:
        pictures, kept, skipped = self.processor.render_images(list(smiles), on_error="skip", **self.options)
        pixels = torch.from_numpy(np.stack(pictures)) if pictures else torch.zeros(0, dtype=torch.uint8)
        return Prepared(pixels, np.asarray(kept, dtype=np.int64), skipped)


@register_kind("image")
class ImageKind(ModelKind):
    """A MoleCLIP encoder (`MoleCLIPModel`: embeddings only) or property model (`MoleCLIPForPropertyPrediction`:
    predictions and the embeddings its head read) with its processor. Preparation options are the processor's
    per-call settings (`r_groups`, `augmentation`, `randomize_drawing`, `seed`, and those applied after drawing)."""

    def __init__(self, model, processor: MoleCLIPImageProcessor, options: dict | None = None):
        super().__init__(model)
        self.processor = processor
        self._options = dict(options or {})

    @classmethod
    def recognises(cls, spec: str) -> bool:
        path = Path(spec).expanduser()
        return (path / "config.json").is_file() if path.is_dir() else True  # a Hub name: its config decides

    @classmethod
    def load(cls, spec: str, trust_pickle: bool = False) -> "ImageKind":
        """A finetuned MoleCLIP property model. A pretrained encoder without a trained head is refused: its
        "predictions" would come from random weights."""
        architectures = read_model_config(spec).get("architectures") or []
        if "MoleCLIPForPropertyPrediction" not in architectures:
            raise ValueError(
                f"{spec} is not a finetuned property model (architectures: {architectures or 'none recorded'}); "
                "finetune it first with `moleclip finetune` and pass its model/ folder"
            )
        model = load_backbone(spec, MoleCLIPForPropertyPrediction, new_heads=False)  # every weight from the checkpoint
        return cls(model.eval(), load_processor(spec))

    def save(self, folder: str | Path) -> Path:
        return save_model_dir(folder, self.model, self.processor)

    @property
    def encoder(self):
        return self.model.moleclip if isinstance(self.model, MoleCLIPForPropertyPrediction) else self.model

    # ------------------------------------------------------------------------------------------ running
    def preparer(self, **options) -> _Drawing:
        options = {**self._options, **options}
        return _Drawing(self.processor, {k: v for k, v in options.items() if k in _DRAWING_OPTIONS})

    def preparation(self):
        """Models whose processors draw alike share the drawings."""
        return ("image", json.dumps(self.processor.to_dict(), sort_keys=True, default=str),
                json.dumps(self._options, sort_keys=True, default=str))

    def to_device(self, inputs, device, **options):
        options = {**self._options, **options}
        settings = {k: v for k, v in options.items() if k not in _DRAWING_OPTIONS}
        pixels = self.processor.normalize_pixels(inputs.to(device, non_blocking=True), **settings)
        return pixels.to(next(self.model.parameters()).dtype)

    def forward(self, inputs, logits: bool = False, shared: dict | None = None) -> Outputs:
        encoder = self.encoder
        shared = {} if shared is None else shared
        key = ("image_embeds", id(encoder))
        if key not in shared:  # heads on one encoder module (the frozen mode's ensemble) encode each batch once
            shared[key] = encoder(pixel_values=inputs).image_embeds
        embeds = shared[key]
        if not isinstance(self.model, MoleCLIPForPropertyPrediction):
            return Outputs(None, embeds)
        out = self.model(image_embeds=embeds).logits
        return Outputs(out if logits else predictions_from_logits(out, self.model.config.task), embeds)

    # ------------------------------------------------------------------------------------------ facts
    @property
    def settings(self) -> dict:
        config = self.model.config
        if not isinstance(self.model, MoleCLIPForPropertyPrediction):
            return {"task": None, "num_targets": 0, "standardize": self.processor.standardize,
                    "smiles_column": getattr(config, "smiles_column", None)}
        return {"task": config.task, "num_targets": config.num_targets, "target_names": config.target_names,
                "standardize": self.processor.standardize, "smiles_column": getattr(config, "smiles_column", None)}

    @property
    def embedding_width(self) -> int:
        return int(self.encoder.config.projection_dim)

    def describe(self) -> str:
        return "MoleCLIP (drawings)"

    def picture(self, smiles: str):
        return self.processor.to_pil(smiles), "the drawing the model sees"

"""The MoleCLIP image processor: SMILES (or RDKit molecules, or ready images) in, CLIP-normalised `pixel_values` out.

It travels to the Hugging Face Hub as remote code together with `rendering.py`, `augment.py` and `molecules.py`
(flat relative imports only), so `AutoImageProcessor.from_pretrained(repo, trust_remote_code=True)` works where this
package is not installed (RDKit is still needed to draw).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image
from rdkit import Chem
from transformers.image_processing_utils import BaseImageProcessor, BatchFeature

from .augment import AUGMENTATION_PRESETS, CLIP_MEAN, CLIP_STD, augment, normalize
from .molecules import InvalidMoleculeError, SkippedMolecule, describe_skipped
from .rendering import CoordinateCache, DrawingStyle, random_style, render

__all__ = ["MoleCLIPImageProcessor"]


def _is_image(item) -> bool:
    return isinstance(item, Image.Image) or (isinstance(item, np.ndarray) and item.ndim in (2, 3))


class MoleCLIPImageProcessor(BaseImageProcessor):
    r"""Draws molecules with RDKit (Cairo) at `size` x `size` RGB on white and normalises them with CLIP statistics.

    Args:
        size (`int`, 224): image side in pixels.
        image_mean / image_std: per-channel RGB normalisation (OpenAI CLIP's by default).
        augmentation (`str`, "none"): classical augmentation preset applied after drawing: "none", "default", "intense".
        randomize_drawing (`bool`, False): draw each image with a random style (line width, font, font size, bond length,
            multiple-bond offset, rotation), the paper's "generation-level" augmentation.
        r_groups (`bool`, False): draw terminal C, O, N, S, F, Cl, Br, I atoms as R1..R8 labels.
        cache_size (`int`, 100000): molecules whose 2D coordinates are kept, so repeated drawing skips the costly layout.

    Call with a SMILES string, a list of SMILES, RDKit molecules or PIL images / HxWx3 uint8 arrays (which are resized,
    then augmented and normalised like drawings). `seed` (int or `numpy.random.Generator`) makes random drawing and
    augmentation reproducible. `on_error="skip"` leaves out molecules that cannot be parsed or drawn and reports them in
    `outputs.skipped` (with `outputs["kept_indices"]`); the default raises an error naming the SMILES and its position.
    """

    model_input_names = ["pixel_values"]

    def __init__(
        self,
        size: int = 224,
        image_mean: Sequence[float] = CLIP_MEAN,
        image_std: Sequence[float] = CLIP_STD,
        augmentation: str = "none",
        randomize_drawing: bool = False,
        r_groups: bool = False,
        cache_size: int = 100_000,
        **kwargs,
    ):
        if isinstance(size, dict):  # tolerate the {"height": h, "width": w} form other processors write
            size = int(size.get("height", size.get("shortest_edge", 224)))
        super().__init__(**kwargs)
        self._check_preset(augmentation)
        self.size = int(size)
        self.image_mean = [float(v) for v in image_mean]
        self.image_std = [float(v) for v in image_std]
        self.augmentation = augmentation
        self.randomize_drawing = bool(randomize_drawing)
        self.r_groups = bool(r_groups)
        self.cache_size = int(cache_size)
        self._coordinates = CoordinateCache(max_size=self.cache_size)

    @staticmethod
    def _check_preset(preset: str) -> None:
        if preset not in AUGMENTATION_PRESETS:
            raise ValueError(f"unknown augmentation preset {preset!r}; choose one of {list(AUGMENTATION_PRESETS)}")

    def to_dict(self) -> dict:
        # Only the settings are saved (preprocessor_config.json); the coordinate cache is rebuilt on load.
        output = {k: v for k, v in self.__dict__.items() if not k.startswith("_")}
        output["image_processor_type"] = type(self).__name__
        if getattr(self, "_auto_class", None) is not None or "auto_map" in self.__dict__:
            output.setdefault("auto_map", self.__dict__.get("auto_map"))
        return {k: v for k, v in output.items() if v is not None}

    # ---------------------------------------------------------------- drawing
    def render_images(
        self,
        molecules,
        randomize_drawing: bool | None = None,
        r_groups: bool | None = None,
        augmentation: str | None = None,
        seed: int | np.random.Generator | None = None,
        on_error: str = "raise",
    ) -> tuple[list[np.ndarray], list[int], list[SkippedMolecule]]:
        """Draw (and augment) a batch; returns (uint8 HxWx3 RGB images, kept input positions, skipped entries)."""
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        randomize = self.randomize_drawing if randomize_drawing is None else randomize_drawing
        r_groups = self.r_groups if r_groups is None else r_groups
        preset = self.augmentation if augmentation is None else augmentation
        self._check_preset(preset)
        rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        items = [molecules] if isinstance(molecules, (str, Chem.Mol)) or _is_image(molecules) else list(molecules)
        if not items:
            raise ValueError("no molecules given")

        images, kept, skipped = [], [], []
        for index, item in enumerate(items):
            try:
                if _is_image(item):
                    image = self._prepare_image(item)
                else:
                    mol = self._coordinates.get(item, index=index)
                    style = random_style(rng) if randomize else DrawingStyle()
                    try:
                        image = render(mol, size=self.size, style=style, r_groups=r_groups)
                    except (RuntimeError, ValueError) as err:
                        # RDKit's C++ drawing errors arrive as these; anything else is a bug and must not be
                        # turned into a quietly skipped molecule.
                        shown = item if isinstance(item, str) else Chem.MolToSmiles(item)
                        raise InvalidMoleculeError(shown, index, f"could not be drawn ({err})") from err
                images.append(augment(image, preset, rng))
                kept.append(index)
            except InvalidMoleculeError as err:
                if on_error == "raise":
                    raise
                skipped.append(SkippedMolecule(index, err.smiles, err.reason))
        return images, kept, skipped

    def _prepare_image(self, image) -> np.ndarray:
        if isinstance(image, np.ndarray):
            if image.dtype != np.uint8:
                raise ValueError("image arrays must be uint8 HxWx3 (or HxW) in 0..255")
            image = Image.fromarray(image)
        image = image.convert("RGB")
        if image.size != (self.size, self.size):
            image = image.resize((self.size, self.size), Image.Resampling.BICUBIC)
        return np.asarray(image, dtype=np.uint8)

    # ---------------------------------------------------------------- the processor call
    def __call__(self, images=None, *args, **kwargs) -> BatchFeature:
        return self.preprocess(images, *args, **kwargs)

    def preprocess(
        self,
        images=None,
        smiles=None,
        return_tensors: str | None = "pt",
        augmentation: str | None = None,
        randomize_drawing: bool | None = None,
        r_groups: bool | None = None,
        seed: int | np.random.Generator | None = None,
        on_error: str = "raise",
        **kwargs,
    ) -> BatchFeature:
        """Turn molecules or images into `pixel_values` (batch, 3, size, size). See the class docstring."""
        if kwargs:
            raise TypeError(f"unexpected arguments: {sorted(kwargs)}")
        inputs = smiles if smiles is not None else images
        if inputs is None:
            raise ValueError("give SMILES (or RDKit molecules, or images) to process")
        pictures, kept, skipped = self.render_images(
            inputs, randomize_drawing=randomize_drawing, r_groups=r_groups, augmentation=augmentation, seed=seed,
            on_error=on_error,
        )
        data: dict = {}
        if pictures:
            pixel_values = normalize(np.stack(pictures), mean=self.image_mean, std=self.image_std)
            data["pixel_values"] = pixel_values if return_tensors == "pt" else pixel_values.numpy()
        else:
            data["pixel_values"] = np.zeros((0, 3, self.size, self.size), dtype=np.float32)
        data["kept_indices"] = np.asarray(kept, dtype=np.int64)
        encoding = BatchFeature(data=data, tensor_type=return_tensors)
        encoding.skipped = skipped
        if skipped:
            import logging

            logging.getLogger(__name__).warning(describe_skipped(skipped))
        return encoding

    def to_pil(self, molecule, **kwargs) -> Image.Image:
        """One drawing as a PIL image (what the model sees before normalisation), e.g. to save a PNG."""
        images, _, _ = self.render_images([molecule], **kwargs)
        return Image.fromarray(images[0])

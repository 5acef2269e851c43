"""The paper's classical image augmentation presets and CLIP normalisation, on uint8 RGB arrays (numpy and PIL only).

``augment(image, preset, rng)`` applies one preset to one picture, with every random choice drawn from ``rng`` per
picture (the reference code drew the shrink size once per pipeline, a bug not repeated here):

``none``
    the picture unchanged.
``default`` (used for both pretraining views)
    1. downscale by a factor uniform in [0.70, 0.85] (area averaging) and back up (nearest neighbour), p 0.75;
    2. shrink so the longest side is uniform in [0.6, 1] x the picture size (134..224 px at 224; area averaging,
       where the reference's unfiltered bilinear let thin bonds alias) and pad back to the original size with white
       at a uniformly random position, p 0.5;
    3. pixel dropout 1 % to white, p 0.3, then pixel dropout 1 % to black, p 0.3 (the reference applied the first
       one to the inverted picture, so its dropped pixels come out white: ink disappears; the second adds specks);
    4. 3 x 3 box blur, p 0.3;
    5. gaussian noise, p 0.3: per pixel and channel, standard deviation uniform in [sqrt(10), sqrt(50)] ~ 3.2..7.1
       grey levels per picture (albumentations' default variance range 10..50, which the reference used); the
       standard normal draws are read from a fixed bank at a random offset (fresh draws cost more than a drawing);
    6. grayscale (ITU-R 601 luma copied to the three channels), p 0.25.
``intense``
    rotation uniform in [0, 360) degrees about the centre, corners filled white (bilinear), always; shrink to
    [0.5, 1] x size (112..224 px) and pad, p 0.75; pixel dropout 5 % to white then to black, p 0.5 each; blur p 0.5;
    noise p 0.5; grayscale p 0.25. (No downscale: the reference had it commented out.)

No cropping, no flipping: both would change what the molecule is (flips swap stereo wedges' handedness).

The CLIP statistics live here; the image processor normalises with them (`pictures_to_pixel_values`,
`normalize_pixels`).

Only flat relative imports: this file travels as Hugging Face remote code next to the image processor.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

__all__ = ["AUGMENTATION_PRESETS", "CLIP_MEAN", "CLIP_STD", "augment"]

# The classical augmentation levels (see the module docstring); the image processor's `augmentation` setting.
AUGMENTATION_PRESETS = ("none", "default", "intense")
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

# Probabilities and amounts of each step, per preset (see the module docstring).
_SETTINGS = {
    "default": dict(p_downscale=0.75, p_shrink=0.5, shrink_min=0.6, dropout=0.01, p_dropout=0.3, p_blur=0.3,
                    p_noise=0.3, p_gray=0.25, rotate=False),
    "intense": dict(p_downscale=0.0, p_shrink=0.75, shrink_min=0.5, dropout=0.05, p_dropout=0.5, p_blur=0.5,
                    p_noise=0.5, p_gray=0.25, rotate=True),
}
DOWNSCALE_RANGE = (0.70, 0.85)
NOISE_VARIANCE_RANGE = (10.0, 50.0)


def _check_image(image) -> None:
    if not isinstance(image, np.ndarray):
        raise TypeError(f"augment expects a numpy array, got {type(image).__name__}")
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"augment expects a uint8 array of shape (H, W, 3), got {image.dtype} {image.shape}")


def augment(image: np.ndarray, preset: str, rng: np.random.Generator) -> np.ndarray:
    """Apply augmentation ``preset`` ("none", "default" or "intense") to a uint8 (H, W, 3) RGB picture.

    Returns a new uint8 (H, W, 3) array (for "none", the input itself). All randomness comes from ``rng``, so a
    seeded generator reproduces the result exactly.
    """
    if preset not in AUGMENTATION_PRESETS:
        raise ValueError(f"unknown augmentation preset {preset!r}; choose one of {list(AUGMENTATION_PRESETS)}")
    _check_image(image)
    if preset == "none":
        return image
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator (np.random.default_rng(seed)), got {type(rng).__name__}")
    s = _SETTINGS[preset]
    height, width = image.shape[:2]
    picture = None  # PIL copy, made only when a geometric step runs

    if s["rotate"]:
        picture = _rotate(Image.fromarray(image), 360.0 * rng.random())
    if rng.random() < s["p_downscale"]:
        picture = _downscale(picture or Image.fromarray(image), rng.uniform(*DOWNSCALE_RANGE))
    if rng.random() < s["p_shrink"]:
        longest = max(height, width)
        target = int(rng.integers(int(round(s["shrink_min"] * longest)), longest + 1))
        new_size = (max(1, round(width * target / longest)), max(1, round(height * target / longest)))
        left = int(rng.integers(0, width - new_size[0] + 1))
        top = int(rng.integers(0, height - new_size[1] + 1))
        picture = _shrink_and_pad(picture or Image.fromarray(image), new_size, (left, top))
    out = np.array(picture) if picture is not None else image.copy()

    for value in (255, 0):  # the reference's first dropout whitens pixels (ink drops out), the second blackens them
        if rng.random() < s["p_dropout"]:
            _dropout(out, s["dropout"], value, rng)
    if rng.random() < s["p_blur"]:
        out = _box_blur_3x3(out)
    if rng.random() < s["p_noise"]:
        out = _add_noise(out, float(np.sqrt(rng.uniform(*NOISE_VARIANCE_RANGE))), rng)
    if rng.random() < s["p_gray"]:
        out = _to_gray(out)
    return out


def _rotate(picture: Image.Image, angle: float) -> Image.Image:
    """Rotate about the centre, same size, corners filled white."""
    return picture.rotate(angle, resample=Image.Resampling.BILINEAR, fillcolor=(255, 255, 255))


def _downscale(picture: Image.Image, factor: float) -> Image.Image:
    """Area-average down by ``factor``, nearest-neighbour back up: the reference's INTER_AREA / INTER_NEAREST pair."""
    size = picture.size
    small = (max(1, round(size[0] * factor)), max(1, round(size[1] * factor)))
    return picture.resize(small, Image.Resampling.BOX).resize(size, Image.Resampling.NEAREST)


def _shrink_and_pad(picture: Image.Image, new_size: tuple[int, int], corner: tuple[int, int]) -> Image.Image:
    """Resize to ``new_size`` and paste at ``corner`` onto a white picture of the original size."""
    if new_size == picture.size:
        return picture
    # Area averaging (BOX) rather than the reference's unfiltered bilinear: thin bonds do not alias away.
    shrunk = picture.resize(new_size, Image.Resampling.BOX)
    padded = Image.new("RGB", picture.size, (255, 255, 255))
    padded.paste(shrunk, corner)
    return padded


def _dropout(image: np.ndarray, rate: float, value: int, rng: np.random.Generator) -> None:
    """Set a ``rate`` fraction of the pixels (all three channels) to ``value``, in place.

    A binomial count then uniform positions: the per-pixel Bernoulli draw at a fraction of the cost (two positions
    coincide about once in a hundred pictures at 1 %).
    """
    flat = image.reshape(-1, 3)
    count = int(rng.binomial(flat.shape[0], rate))
    flat[rng.integers(0, flat.shape[0], count)] = value


def _to_gray(image: np.ndarray) -> np.ndarray:
    """ITU-R 601-2 luma (0.299 R + 0.587 G + 0.114 B, as cv2 and PIL compute it) in all three channels."""
    return np.array(Image.fromarray(image).convert("L").convert("RGB"))


def _box_blur_3x3(image: np.ndarray) -> np.ndarray:
    """Mean over each pixel's 3 x 3 neighbourhood, edges replicated, rounded (cv2.blur's kernel)."""
    h, w, _ = image.shape
    padded = np.empty((h + 2, w + 2, 3), dtype=np.uint16)
    padded[1:-1, 1:-1] = image
    padded[0, 1:-1] = image[0]
    padded[-1, 1:-1] = image[-1]
    padded[:, 0] = padded[:, 1]
    padded[:, -1] = padded[:, -2]
    rows = padded[:, :-2] + padded[:, 1:-1]
    rows += padded[:, 2:]
    total = rows[:-2] + rows[1:-1]
    total += rows[2:]
    total += 4  # round to nearest
    out = np.empty((h, w, 3), dtype=np.uint8)
    np.floor_divide(total, 9, out=out, casting="unsafe")
    return out


_NOISE_BANK_SIZE = 1 << 21
_noise_bank: np.ndarray | None = None


def _add_noise(image: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Add N(0, sigma^2) noise per pixel and channel, rounded and clipped to 0..255.

    The standard normal draws come from a fixed bank of 2M samples read at a random offset chosen by ``rng``:
    drawing 150k normals afresh costs more than drawing the molecule. Within a picture the noise is i.i.d.; two
    pictures share values only where their windows overlap, which does not matter for augmentation.
    """
    global _noise_bank
    if _noise_bank is None:
        _noise_bank = np.random.default_rng(20240601).standard_normal(_NOISE_BANK_SIZE, dtype=np.float32)
    n = image.size
    if n > _NOISE_BANK_SIZE:  # pictures beyond ~835 x 835: draw afresh
        window = rng.standard_normal(n, dtype=np.float32)
    else:
        offset = int(rng.integers(0, _NOISE_BANK_SIZE - n + 1))
        window = _noise_bank[offset : offset + n]
    noisy = window.reshape(image.shape) * np.float32(sigma)
    noisy += image
    np.clip(noisy, 0, 255, out=noisy)
    return np.rint(noisy, out=noisy).astype(np.uint8)

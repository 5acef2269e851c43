"""The paper's augmentation presets and CLIP normalisation."""

import numpy as np
import pytest
import torch
from PIL import Image

from moleclip.processing import augment as aug
from moleclip.processing.augment import AUGMENTATION_PRESETS, augment


def drawing(height=224, width=224) -> np.ndarray:
    """A white picture with black and red strokes, like a molecule drawing."""
    image = np.full((height, width, 3), 255, dtype=np.uint8)
    image[height // 4 : height // 4 + 3, width // 8 : -width // 8] = 0
    image[height // 8 : -height // 8, width // 2 : width // 2 + 3] = (220, 20, 20)
    return image


def test_presets_and_errors():
    assert AUGMENTATION_PRESETS == ("none", "default", "intense")
    with pytest.raises(ValueError, match="'none', 'default', 'intense'"):
        augment(drawing(), "strong", np.random.default_rng(0))
    with pytest.raises(ValueError):
        augment(drawing().astype(np.float32), "default", np.random.default_rng(0))
    with pytest.raises(ValueError):
        augment(drawing()[..., 0], "default", np.random.default_rng(0))
    with pytest.raises(TypeError):
        augment(Image.fromarray(drawing()), "default", np.random.default_rng(0))
    with pytest.raises(TypeError, match="default_rng"):
        augment(drawing(), "default", 0)


def test_none_is_identity():
    image = drawing()
    assert augment(image, "none", np.random.default_rng(0)) is image


@pytest.mark.parametrize("preset", ["default", "intense"])
def test_seeded_shapes_dtype_and_input_untouched(preset):
    for shape in ((224, 224), (100, 150)):
        image = drawing(*shape)
        keep = image.copy()
        outs = [augment(image, preset, np.random.default_rng(seed)) for seed in range(20)]
        again = [augment(image, preset, np.random.default_rng(seed)) for seed in range(20)]
        assert all(np.array_equal(a, b) for a, b in zip(outs, again))
        assert all(o.shape == image.shape and o.dtype == np.uint8 and o.flags.c_contiguous for o in outs)
        assert np.array_equal(image, keep)
        changed = sum(not np.array_equal(o, image) for o in outs)
        assert changed == 20 if preset == "intense" else changed >= 15  # default does nothing ~2 % of the time
        assert len({o.tobytes() for o in outs}) >= 15  # sizes, positions and pixels are drawn per picture


def count_calls(monkeypatch, name):
    calls = []
    original = getattr(aug, name)

    def spy(*args, **kwargs):
        calls.append(args)
        return original(*args, **kwargs)

    monkeypatch.setattr(aug, name, spy)
    return calls


@pytest.mark.parametrize("preset", ["default", "intense"])
def test_step_probabilities(preset, monkeypatch):
    steps = ["_rotate", "_downscale", "_shrink_and_pad", "_dropout", "_box_blur_3x3", "_add_noise", "_to_gray"]
    calls = {name: count_calls(monkeypatch, name) for name in steps}
    n = 2000
    rng = np.random.default_rng(0)
    image = drawing(24, 24)  # small: the probabilities, not the pixels, are under test
    for _ in range(n):
        augment(image, preset, rng)
    s = aug._SETTINGS[preset]
    expected = {"_rotate": 1.0 if s["rotate"] else 0.0, "_downscale": s["p_downscale"], "_shrink_and_pad": s["p_shrink"],
                "_dropout": 2 * s["p_dropout"], "_box_blur_3x3": s["p_blur"], "_add_noise": s["p_noise"],
                "_to_gray": s["p_gray"]}
    for name, p in expected.items():
        assert abs(len(calls[name]) / n - p) < 0.05, (name, len(calls[name]) / n, p)
    whiten = sum(1 for args in calls["_dropout"] if args[2] == 255)
    assert abs(whiten / n - s["p_dropout"]) < 0.05  # one whitening and one blackening pass, independently
    assert all(args[1] == s["dropout"] for args in calls["_dropout"])


def test_step_amounts(monkeypatch):
    downscale = count_calls(monkeypatch, "_downscale")
    shrink = count_calls(monkeypatch, "_shrink_and_pad")
    noise = count_calls(monkeypatch, "_add_noise")
    rng = np.random.default_rng(1)
    image = drawing(224, 224)
    for _ in range(300):
        augment(image, "default", rng)
    factors = [args[1] for args in downscale]
    assert 0.70 <= min(factors) < 0.72 and 0.83 < max(factors) <= 0.85
    longest = [max(args[1]) for args in shrink]
    assert 134 <= min(longest) < 145 and 215 < max(longest) <= 224
    sigmas = [args[1] for args in noise]
    assert np.sqrt(10) <= min(sigmas) < 4 and 6.5 < max(sigmas) <= np.sqrt(50)


def test_downscale_keeps_size_and_pixelates():
    image = np.random.default_rng(8).integers(0, 256, (224, 224, 3), dtype=np.uint8)
    out = np.asarray(aug._downscale(Image.fromarray(image), 0.8))
    assert out.shape == image.shape and not np.array_equal(out, image)
    # Nearest-neighbour upscaling repeats every 5th row and column of the 179 px picture.
    repeats = (out[1:] == out[:-1]).all(axis=(1, 2)).sum()
    assert 40 <= repeats <= 50


def test_shrink_pads_with_white_at_the_given_corner():
    image = np.zeros((224, 224, 3), dtype=np.uint8)  # all ink, so the pasted area is easy to find
    out = np.asarray(aug._shrink_and_pad(Image.fromarray(image), (134, 134), (10, 70)))
    ys, xs = np.nonzero(out.max(-1) < 128)
    assert (ys.min(), ys.max(), xs.min(), xs.max()) == (70, 70 + 133, 10, 10 + 133)
    assert (out[:70] == 255).all() and (out[:, :10] == 255).all()


def test_rotation_fills_corners_white():
    out = np.asarray(aug._rotate(Image.fromarray(np.zeros((64, 64, 3), dtype=np.uint8)), 45.0))
    assert (out[0, 0] == 255).all() and (out[32, 32] == 0).all()


def test_dropout_rate_and_value():
    rng = np.random.default_rng(2)
    image = np.full((224, 224, 3), 128, dtype=np.uint8)
    aug._dropout(image, 0.05, 255, rng)
    dropped = (image == 255).all(-1).mean()
    assert 0.045 < dropped < 0.055
    assert set(np.unique(image)) == {128, 255}


def test_blur_is_a_3x3_mean():
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    padded = np.pad(image.astype(float), ((1, 1), (1, 1), (0, 0)), mode="edge")
    expected = sum(padded[dy : dy + 20, dx : dx + 30] for dy in range(3) for dx in range(3)) / 9
    assert np.abs(aug._box_blur_3x3(image) - expected).max() <= 0.5 + 1e-9


def test_noise_has_the_requested_spread():
    image = np.full((224, 224, 3), 128, dtype=np.uint8)
    out = aug._add_noise(image, 5.0, np.random.default_rng(4)).astype(float) - 128
    assert abs(out.mean()) < 0.1 and abs(out.std() - 5.0) < 0.1
    other = aug._add_noise(image, 5.0, np.random.default_rng(5))
    assert not np.array_equal(out + 128, other)
    clipped = aug._add_noise(np.zeros((8, 8, 3), dtype=np.uint8), 7.0, np.random.default_rng(6))
    assert clipped.min() == 0 and clipped.dtype == np.uint8


def test_gray_uses_luma_weights():
    image = np.zeros((4, 4, 3), dtype=np.uint8)
    image[0, 0] = (255, 0, 0)
    image[0, 1] = (0, 255, 0)
    image[0, 2] = (0, 0, 255)
    out = aug._to_gray(image)
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()
    assert list(out[0, :3, 0]) == [76, 150, 29]  # 0.299, 0.587, 0.114 of 255

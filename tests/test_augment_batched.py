"""The batched (torch, accelerator) augmentation against the per-image numpy/PIL reference."""

import numpy as np
import pytest
import torch

from moleclip.processing import augment as aug
from moleclip.processing.augment_batched import augment_batch, sample_parameters, sample_seed

SIZE = 32  # small pictures: the choices, not the pixels, are under test in the distribution test


def drawing(height=SIZE, width=SIZE) -> np.ndarray:
    """White with a black stroke, a red stroke and a black frame touching every edge (ink that must not be lost)."""
    image = np.full((height, width, 3), 255, dtype=np.uint8)
    image[height // 4 : height // 4 + 3, width // 8 : -width // 8] = 0
    image[height // 8 : -height // 8, width // 2 : width // 2 + 3] = (220, 20, 20)
    image[:2], image[-2:], image[:, :2], image[:, -2:] = 0, 0, 0, 0
    return image


def seeds(n, epoch=0):
    return [sample_seed(7, 0, epoch, i, 1) for i in range(n)]


def record_reference(preset: str, n: int, monkeypatch) -> dict:
    """Run the reference ``augment`` n times, recording each step's call and the amounts it was given."""
    rec = {k: [] for k in ("angle", "factor", "longest", "left", "top", "white", "black", "blur", "sigma", "gray")}
    spies = {
        "_rotate": lambda picture, angle: rec["angle"].append(angle),
        "_downscale": lambda picture, factor: rec["factor"].append(factor),
        "_shrink_and_pad": lambda picture, size, corner: (rec["longest"].append(max(size)),
                                                          rec["left"].append(corner[0]), rec["top"].append(corner[1])),
        "_box_blur_3x3": lambda image: rec["blur"].append(1),
        "_add_noise": lambda image, sigma, rng: rec["sigma"].append(sigma),
        "_to_gray": lambda image: rec["gray"].append(1),
    }
    for name, spy in spies.items():
        original = getattr(aug, name)
        monkeypatch.setattr(aug, name, lambda *a, _o=original, _s=spy: (_s(*a), _o(*a))[1])
    original_dropout = aug._dropout

    def dropout(image, rate, value, rng):
        # Peek at the binomial count the step is about to draw, then restore the state: the run is unchanged.
        state = rng.bit_generator.state
        count = int(rng.binomial(image.shape[0] * image.shape[1], rate))
        rng.bit_generator.state = state
        rec["white" if value == 255 else "black"].append(count)
        return original_dropout(image, rate, value, rng)

    monkeypatch.setattr(aug, "_dropout", dropout)
    image, rng = drawing(), np.random.default_rng(123)
    for _ in range(n):
        aug.augment(image, preset, rng)
    return rec


def assert_same_rate(k_ref, k_new, p, n, name):
    tolerance = 5 * np.sqrt(2 * p * (1 - p) / n) + 1e-9  # five standard errors of the difference of two estimates
    assert abs(k_ref / n - p) <= tolerance, (name, "reference", k_ref / n, p)
    assert abs(k_new / n - p) <= tolerance, (name, "batched", k_new / n, p)
    assert abs(k_ref - k_new) / n <= tolerance, (name, k_ref / n, k_new / n)


def assert_same_amounts(ref, new, name, low, high, fills=True):
    ref, new = np.asarray(ref, dtype=float), np.asarray(new, dtype=float)
    assert len(ref) > 30 and len(new) > 30, name
    assert low <= ref.min() and ref.max() <= high and low <= new.min() and new.max() <= high, (name, low, high)
    se = np.sqrt(ref.var() / len(ref) + new.var() / len(new))
    assert abs(ref.mean() - new.mean()) <= 5 * se + 1e-9, (name, ref.mean(), new.mean(), se)
    # Uniform amounts fill their range: the extremes are within 10 % of its ends.
    span = high - low
    for values in (ref, new) if fills else ():
        assert values.min() <= low + 0.1 * span and values.max() >= high - 0.1 * span, (name, values.min(), values.max())


@pytest.mark.parametrize("preset", ["default", "intense"])
def test_same_distributions_as_the_reference(preset, monkeypatch):
    n = 3000
    ref = record_reference(preset, n, monkeypatch)
    new = sample_parameters(preset, n, seeds(n), SIZE, SIZE)
    s = aug._SETTINGS[preset]
    rates = {"angle": (1.0 if s["rotate"] else 0.0, None), "factor": (s["p_downscale"], "downscale"),
             "longest": (s["p_shrink"], "shrink"), "white": (s["p_dropout"], "white"),
             "black": (s["p_dropout"], "black"), "blur": (s["p_blur"], "blur"), "sigma": (s["p_noise"], "noise"),
             "gray": (s["p_gray"], "gray")}
    for name, (p, flag) in rates.items():
        k_new = int(new[flag].sum()) if flag else (n if s["rotate"] else 0)
        assert_same_rate(len(ref[name]), k_new, p, n, name)

    fired = new["shrink"]
    longest = torch.maximum(new["new_h"], new["new_w"])[fired]
    low = int(round(s["shrink_min"] * SIZE))
    assert_same_amounts(ref["longest"], longest, "shrink size", low, SIZE)
    assert_same_amounts(ref["left"], new["left"][fired], "shrink left", 0, SIZE - low)
    assert_same_amounts(ref["top"], new["top"][fired], "shrink top", 0, SIZE - low)
    lo_sd, hi_sd = np.sqrt(aug.NOISE_VARIANCE_RANGE)
    assert_same_amounts(ref["sigma"], new["sigma"][new["noise"]], "noise sd", lo_sd, hi_sd)
    for name in ("white", "black"):
        counts = [len(t) for t, f in zip(new[f"{name}_positions"], new[name]) if f]
        mean = SIZE * SIZE * s["dropout"]
        assert_same_amounts(ref[name], counts, f"{name} dropout count", 0, mean + 6 * np.sqrt(mean), fills=False)
        # Binomial counts: both spreads near the binomial's (a fixed count would pass the mean check).
        for values in (ref[name], counts):
            assert 0.7 < np.var(values) / (mean * (1 - s["dropout"])) < 1.3, (name, np.var(values), mean)
    if s["rotate"]:
        assert_same_amounts(ref["angle"], new["angle"], "angle", 0, 360)
    if s["p_downscale"]:
        assert_same_amounts(ref["factor"], new["factor"][new["downscale"]], "downscale factor", *aug.DOWNSCALE_RANGE)


def batch_of_drawings(n):
    rng = np.random.default_rng(0)
    images = np.stack([drawing() for _ in range(n)])
    for image in images:  # each picture different, so a mix-up between samples shows
        r, c = rng.integers(4, SIZE - 8, 2)
        image[r : r + 4, c : c + 4] = rng.integers(0, 255, 3)
    return torch.from_numpy(images)


@pytest.mark.parametrize("preset", ["default", "intense"])
def test_per_sample_determinism(preset):
    images, s = batch_of_drawings(16), seeds(16)
    whole = augment_batch(images, preset, s)
    assert torch.equal(whole, augment_batch(images, preset, s))
    alone = torch.cat([augment_batch(images[i : i + 1], preset, [s[i]]) for i in range(16)])
    assert torch.equal(whole, alone)
    order = torch.randperm(16, generator=torch.Generator().manual_seed(3))
    shuffled = augment_batch(images[order], preset, [s[int(i)] for i in order])
    assert torch.equal(shuffled, whole[order])
    # Generators instead of seeds, and channels first instead of last: the same pictures.
    gens = [torch.Generator().manual_seed(x) for x in s]
    first = augment_batch(images.permute(0, 3, 1, 2).contiguous(), preset, gens)
    assert torch.equal(first.permute(0, 2, 3, 1), whole)
    # Another epoch's seeds give other pictures.
    assert not torch.equal(whole, augment_batch(images, preset, seeds(16, epoch=1)))


def test_none_identity_dtype_shape_range_and_errors():
    images = batch_of_drawings(4)
    assert augment_batch(images, "none", seeds(4)) is images
    for preset in ("default", "intense"):
        out = augment_batch(images, preset, seeds(4))
        assert out.dtype == torch.uint8 and out.shape == images.shape
        assert not torch.equal(out, images)
        first = augment_batch(images.permute(0, 3, 1, 2), preset, seeds(4))
        assert first.shape == (4, 3, SIZE, SIZE)
    with pytest.raises(ValueError, match="preset"):
        augment_batch(images, "strong", seeds(4))
    with pytest.raises(ValueError, match="uint8"):
        augment_batch(images.float(), "default", seeds(4))
    with pytest.raises(ValueError, match="one generator"):
        augment_batch(images, "default", seeds(3))
    with pytest.raises(TypeError):
        augment_batch(images, "default", [0.5] * 4)


@pytest.mark.parametrize("preset", ["default", "intense"])
def test_white_stays_white_unless_ink_is_added(preset):
    n = 64
    white = torch.full((n, SIZE, SIZE, 3), 255, dtype=torch.uint8)
    out = augment_batch(white, preset, seeds(n))
    p = sample_parameters(preset, n, seeds(n), SIZE, SIZE)
    adds_ink = p["noise"] | p["black"]
    assert 0 < int(adds_ink.sum()) < n
    assert bool((out[~adds_ink] == 255).all())
    assert bool((out[adds_ink] < 255).any())


def test_shrink_and_pad_keeps_all_the_ink_and_pads_white():
    # Samples where only shrink-and-pad fires, found from their drawn parameters.
    candidates = seeds(1500)
    p = sample_parameters("default", 1500, candidates, SIZE, SIZE)
    others = p["downscale"] | p["white"] | p["black"] | p["blur"] | p["noise"] | p["gray"]
    only = (p["shrink"] & ~others & (p["new_h"] < SIZE - 4)).nonzero().flatten()[:8]
    assert len(only) == 8
    image = torch.from_numpy(drawing()).expand(8, -1, -1, -1).contiguous()
    out = augment_batch(image, "default", [candidates[int(i)] for i in only]).numpy().astype(float)
    ink_in = (255.0 - image[0].numpy().astype(float)).sum()
    for k, i in enumerate(only.tolist()):
        top, left, nh, nw = (int(p[key][i]) for key in ("top", "left", "new_h", "new_w"))
        inside = np.zeros((SIZE, SIZE), dtype=bool)
        inside[top : top + nh, left : left + nw] = True
        assert (out[k][~inside] == 255).all()  # white padding, nothing spills out
        # Area averaging keeps the ink in proportion to the area (up to rounding, half a level a pixel).
        ink = (255.0 - out[k]).sum()
        expected = ink_in * nh * nw / SIZE**2
        assert abs(ink - expected) <= 0.5 * 3 * nh * nw, (ink, expected)
        # The frame that touches every edge of the input is on every edge of the pasted picture: none cut off.
        region = out[k][top : top + nh, left : left + nw]
        assert region[0].mean() < 128 and region[-1].mean() < 128
        assert region[:, 0].mean() < 128 and region[:, -1].mean() < 128


def test_blur_and_gray_match_the_reference_integers():
    # Same input, same kernels: the blur and the luma give the reference's integers exactly. Samples where only one
    # of the two fires are picked from their drawn parameters (per-sample determinism lets them run on their own).
    candidates = seeds(1500)
    p = sample_parameters("default", 1500, candidates, SIZE, SIZE)
    geometric_or_ink = p["downscale"] | p["shrink"] | p["white"] | p["black"] | p["noise"]
    image = torch.from_numpy(drawing())
    checked = 0
    for mask, step in ((p["blur"] & ~p["gray"], aug._box_blur_3x3), (p["gray"] & ~p["blur"], aug._to_gray)):
        chosen = (mask & ~geometric_or_ink).nonzero().flatten()[:4].tolist()
        assert len(chosen) == 4
        out = augment_batch(image.expand(4, -1, -1, -1), "default", [candidates[i] for i in chosen]).numpy()
        for picture in out:
            np.testing.assert_array_equal(picture, step(drawing()))
            checked += 1
    assert checked == 8


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("preset", ["default", "intense"])
def test_on_cuda_per_sample_and_close_to_cpu(preset):
    images, s = batch_of_drawings(16), seeds(16)
    whole = augment_batch(images, preset, s, device="cuda")
    assert whole.device.type == "cuda" and whole.dtype == torch.uint8 and whole.shape == images.shape
    assert torch.equal(whole, augment_batch(images.cuda(), preset, s))
    alone = torch.cat([augment_batch(images[i : i + 1], preset, [s[i]], device="cuda") for i in range(16)])
    assert torch.equal(whole, alone)
    # Same choices as on the CPU; pixels may differ by a rounding step where kernels accumulate differently.
    cpu = augment_batch(images, preset, s, device="cpu")
    difference = (whole.cpu().int() - cpu.int()).abs()
    assert (difference > 1).float().mean() < 0.01

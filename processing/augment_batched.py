"""The classical augmentation presets of ``augment.py`` as one batched torch operation, for the accelerator.

``augment_batch(images, preset, generators, device)`` takes a whole uint8 batch ([B, H, W, 3] or [B, 3, H, W]) and
applies the same steps, with the same probabilities and amounts (``augment._SETTINGS``, ``DOWNSCALE_RANGE``,
``NOISE_VARIANCE_RANGE``), as the per-image numpy/PIL reference. Workers then only decode; the device augments.

Randomness: every choice of sample ``b`` comes from its own CPU ``torch.Generator`` (``generators[b]``, or a seed
that becomes one; ``sample_seed(seed, stream, epoch, index, ...)`` derives one from the same coordinates as
``seeding.sample_rng``). The draws of a sample are a fixed sequence of that generator only, so a sample's result
does not depend on what else is in its batch or in which order, and a resumed run is bit-exact on the same device.
The choices are drawn on the CPU (a few small tensors a sample) and applied on the device in one pass per step.

Not pixel-identical to the reference (same distributions, different kernels):
  * downscale-and-back and shrink-and-pad are one pair of batched matrix products per batch (rows, then columns),
    with exact fractional-overlap area weights (PIL's BOX weighs whole pixels whose centres fall in the footprint)
    and PIL's nearest-neighbour index rule for the way back up; the two steps are composed before rounding once,
    where the reference rounds to uint8 after each;
  * the rotation (``intense``) is ``grid_sample`` bilinear about the centre (PIL's bilinear rotate differs in edge
    sampling); the angle is uniform on the whole circle, so its direction does not matter;
  * noise is read from a fixed bank of torch normals (not numpy's) at a per-sample random offset, in channel-first
    order; the blur (3 x 3 mean, edges replicated, rounded) and the grayscale (PIL's fixed-point ITU-R 601 luma)
    give the reference's integers exactly on the same input.

Only flat relative imports: this file may travel as Hugging Face remote code next to ``augment.py``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from .augment import _SETTINGS, AUGMENTATION_PRESETS, DOWNSCALE_RANGE, NOISE_VARIANCE_RANGE
from .seeding import sample_rng

__all__ = ["augment_batch", "sample_parameters", "sample_seed"]

# The fixed-length block of uniforms every sample draws first, one per decision (whether or not the step fires, so
# the later draws of a sample never shift with another step's outcome).
_U_ANGLE, _U_DOWN, _U_FACTOR, _U_SHRINK, _U_TARGET, _U_LEFT, _U_TOP, _U_WHITE, _U_BLACK, _U_BLUR, _U_NOISE, \
    _U_SIGMA, _U_OFFSET, _U_GRAY = range(14)
_N_UNIFORMS = 14

_NOISE_BANK_SIZE = 1 << 21
_noise_banks: dict[str, torch.Tensor] = {}


def sample_seed(*coordinates: int) -> int:
    """A 63-bit seed for a sample's torch.Generator, a pure function of ``sample_rng``'s coordinates."""
    return int(sample_rng(*coordinates).integers(0, 2**63 - 1))


def _as_generator(g) -> torch.Generator:
    if isinstance(g, torch.Generator):
        return g
    if isinstance(g, bool) or not isinstance(g, int) or g < 0:
        raise TypeError(f"expected a torch.Generator or a non-negative int seed per sample, got {g!r}")
    return torch.Generator().manual_seed(g)


def _uniform_int(u: float, low: int, high: int) -> int:
    """An integer uniform in [low, high] from a uniform u in [0, 1)."""
    return low + min(int(u * (high - low + 1)), high - low)


def sample_parameters(preset: str, n: int, generators: Sequence, height: int = 224, width: int = 224) -> dict:
    """Every random choice of ``n`` samples, drawn per sample from ``generators`` (CPU torch.Generators or seeds).

    Returns CPU tensors of length n: ``angle`` (degrees), ``downscale`` (bool), ``factor``, ``small_h``/``small_w``
    (downscaled size), ``shrink`` (bool), ``new_h``/``new_w``, ``top``/``left``, ``white``/``black`` (bool),
    ``blur``, ``noise`` (bool), ``sigma``, ``noise_offset``, ``gray`` (bool); and ``white_positions`` /
    ``black_positions``: one int64 tensor of flat pixel indices per sample (empty when the step does not fire).
    Values of steps that do not fire are drawn anyway (see _N_UNIFORMS) and ignored.
    """
    if preset not in _SETTINGS:
        raise ValueError(f"sample_parameters takes a preset with random steps {sorted(_SETTINGS)}, got {preset!r}")
    if len(generators) != n:
        raise ValueError(f"need one generator or seed per sample: {n} samples, {len(generators)} given")
    s = _SETTINGS[preset]
    longest, pixels = max(height, width), height * width
    lo_var, hi_var = NOISE_VARIANCE_RANGE
    rows = {k: [] for k in ("angle", "downscale", "factor", "small_h", "small_w", "shrink", "new_h", "new_w", "top",
                            "left", "white", "black", "blur", "noise", "sigma", "noise_offset", "gray")}
    positions = {"white_positions": [], "black_positions": []}
    for g in generators:
        g = _as_generator(g)
        u = torch.rand(_N_UNIFORMS, generator=g, dtype=torch.float64).tolist()
        rows["angle"].append(360.0 * u[_U_ANGLE] if s["rotate"] else 0.0)
        factor = DOWNSCALE_RANGE[0] + (DOWNSCALE_RANGE[1] - DOWNSCALE_RANGE[0]) * u[_U_FACTOR]
        rows["downscale"].append(u[_U_DOWN] < s["p_downscale"])
        rows["factor"].append(factor)
        # The reference's size rules (PIL sizes, Python's round) so the sizes match integer for integer.
        rows["small_w"].append(max(1, round(width * factor)))
        rows["small_h"].append(max(1, round(height * factor)))
        target = _uniform_int(u[_U_TARGET], int(round(s["shrink_min"] * longest)), longest)
        new_w, new_h = max(1, round(width * target / longest)), max(1, round(height * target / longest))
        rows["shrink"].append(u[_U_SHRINK] < s["p_shrink"])
        rows["new_w"].append(new_w)
        rows["new_h"].append(new_h)
        rows["left"].append(_uniform_int(u[_U_LEFT], 0, width - new_w))
        rows["top"].append(_uniform_int(u[_U_TOP], 0, height - new_h))
        for name, key in (("white", _U_WHITE), ("black", _U_BLACK)):
            fires = u[key] < s["p_dropout"]
            rows[name].append(fires)
            if fires:  # a binomial count then uniform positions, as the reference
                count = int(torch.binomial(torch.tensor([float(pixels)], dtype=torch.float64),
                                           torch.tensor([s["dropout"]], dtype=torch.float64), generator=g).item())
                positions[f"{name}_positions"].append(torch.randint(0, pixels, (count,), generator=g))
            else:
                positions[f"{name}_positions"].append(torch.empty(0, dtype=torch.int64))
        rows["blur"].append(u[_U_BLUR] < s["p_blur"])
        rows["noise"].append(u[_U_NOISE] < s["p_noise"])
        rows["sigma"].append((lo_var + (hi_var - lo_var) * u[_U_SIGMA]) ** 0.5)
        rows["noise_offset"].append(_uniform_int(u[_U_OFFSET], 0, max(0, _NOISE_BANK_SIZE - 3 * pixels)))
        rows["gray"].append(u[_U_GRAY] < s["p_gray"])
    floats, flags = ("angle", "factor", "sigma"), ("downscale", "shrink", "white", "black", "blur", "noise", "gray")
    out = {key: torch.tensor(values, dtype=torch.float64 if key in floats else torch.bool if key in flags else torch.int64)
           for key, values in rows.items()}
    out.update(positions)
    return out


def _noise_bank(device: torch.device) -> torch.Tensor:
    key = str(device)
    if key not in _noise_banks:
        # Fixed seed: the bank is the same on every run and device, so only the offsets are random.
        bank = torch.randn(_NOISE_BANK_SIZE, generator=torch.Generator().manual_seed(20240601), dtype=torch.float32)
        _noise_banks[key] = bank.to(device)
    return _noise_banks[key]


def _area_rows(n_in: int, n_out: torch.Tensor, offset: torch.Tensor, n_total: int, device) -> torch.Tensor:
    """[B, n_total, n_in]: row r averages the input interval of output pixel r - offset of an n_in -> n_out resize.

    Exact fractional overlaps (rows sum to 1); rows outside [offset, offset + n_out) are zero.
    """
    n_out = n_out.to(device=device, dtype=torch.float64).view(-1, 1, 1)
    i = torch.arange(n_total, device=device, dtype=torch.float64).view(1, -1, 1) - offset.to(device).view(-1, 1, 1)
    j = torch.arange(n_in, device=device, dtype=torch.float64).view(1, 1, -1)
    scale = n_in / n_out
    overlap = (torch.minimum((i + 1) * scale, j + 1) - torch.maximum(i * scale, j)).clamp_(min=0) / scale
    return (overlap * ((i >= 0) & (i < n_out))).float()


def _nearest_up(n_small: torch.Tensor, n_out: int, n_max: int, device) -> torch.Tensor:
    """[B, n_out, n_max]: nearest-neighbour resize n_small -> n_out, PIL's index rule floor((k + 0.5) n_small / n_out)."""
    k = torch.arange(n_out, device=device, dtype=torch.float64).view(1, -1)
    src = torch.floor((k + 0.5) * n_small.to(device=device, dtype=torch.float64).view(-1, 1) / n_out).long()
    return F.one_hot(src, n_max).float()


def _axis_matrix(params: dict, axis: str, n: int, device) -> torch.Tensor:
    """[B, n, n]: the composed downscale-and-back then shrink-and-pad along one axis (identity where neither fires)."""
    b = params["downscale"].shape[0]
    eye = torch.eye(n, device=device).expand(b, n, n)
    small = params[f"small_{axis}"]
    down = _nearest_up(small, n, n, device) @ _area_rows(n, small, torch.zeros_like(small), n, device)
    down = torch.where(params["downscale"].to(device).view(-1, 1, 1), down, eye)
    corner = params["top" if axis == "h" else "left"]
    shrink = _area_rows(n, params[f"new_{axis}"], corner, n, device)
    shrink = torch.where(params["shrink"].to(device).view(-1, 1, 1), shrink, eye)
    return shrink @ down


def _rotate(x: torch.Tensor, angle_deg: torch.Tensor) -> torch.Tensor:
    """Bilinear rotation about the centre, same size; what comes from outside the picture is white."""
    _, _, h, w = x.shape
    a = torch.deg2rad(angle_deg.to(device=x.device, dtype=torch.float32))
    cos, sin = torch.cos(a), torch.sin(a)
    # affine_grid works in [-1, 1] coordinates per axis: the aspect ratio enters the off-diagonal terms.
    theta = torch.stack([torch.stack([cos, -sin * h / w, torch.zeros_like(a)], -1),
                         torch.stack([sin * w / h, cos, torch.zeros_like(a)], -1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    # Rotate ink (x - 255, zero on white) with zero padding: the corners come out exactly white.
    return F.grid_sample(x - 255.0, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + 255.0


def augment_batch(
    images: torch.Tensor, preset: str, generators: Sequence, device=None, channels_last: bool | None = None
) -> torch.Tensor:
    """Apply ``preset`` ("none", "default", "intense") to a uint8 batch, every choice drawn per sample.

    ``images``: uint8 [B, H, W, 3] or [B, 3, H, W] (``channels_last`` says which when both dims are 3; by default a
    last dim of 3 means channels last). ``generators``: one CPU torch.Generator or non-negative int seed per sample
    (see ``sample_seed``). ``device``: where to compute (default: the images' device). Returns a uint8 tensor of the
    input's layout on ``device``; for "none" the input itself (moved to ``device``).
    """
    if preset not in AUGMENTATION_PRESETS:
        raise ValueError(f"unknown augmentation preset {preset!r}; choose one of {list(AUGMENTATION_PRESETS)}")
    if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.ndim != 4:
        got = f"{images.dtype} {tuple(images.shape)}" if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"augment_batch expects a uint8 tensor [B, H, W, 3] or [B, 3, H, W], got {got}")
    if channels_last is None:
        channels_last = images.shape[-1] == 3
    if images.shape[-1 if channels_last else 1] != 3:
        raise ValueError(f"augment_batch expects three RGB channels, got shape {tuple(images.shape)}")
    device = torch.device(device) if device is not None else images.device
    images = images.to(device)
    if preset == "none":
        return images
    b = images.shape[0]
    x = (images.permute(0, 3, 1, 2) if channels_last else images).float().contiguous()
    _, _, h, w = x.shape
    p = sample_parameters(preset, b, generators, h, w)
    if b == 0:
        return images

    if _SETTINGS[preset]["rotate"]:
        x = _rotate(x, p["angle"]).round_().clamp_(0, 255)
    if bool(p["downscale"].any() or p["shrink"].any()):
        rows, cols = _axis_matrix(p, "h", h, device), _axis_matrix(p, "w", w, device)
        # Transform the ink (x - 255): rows of each matrix sum to 1 or 0, so padding comes out exactly white.
        x = (rows.unsqueeze(1) @ (x - 255.0) @ cols.transpose(1, 2).unsqueeze(1) + 255.0).round_().clamp_(0, 255)

    flat = x.view(b, 3, h * w)
    for name, value in (("white", 255.0), ("black", 0.0)):
        pos = p[f"{name}_positions"]
        counts = torch.tensor([len(t) for t in pos], dtype=torch.int64)
        if int(counts.sum()):
            which = torch.repeat_interleave(torch.arange(b), counts).to(device)
            flat[which, :, torch.cat(pos).to(device)] = value

    fired = p["blur"].to(device)
    if bool(fired.any()):
        # Exact 3 x 3 sums of integers (avg_pool's mean times 9, rounded), then the reference's (sum + 4) // 9.
        sums = (F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1) * 9.0).round_()
        x = torch.where(fired.view(-1, 1, 1, 1), torch.div(sums + 4.0, 9.0, rounding_mode="floor"), x)

    idx = p["noise"].nonzero().flatten()
    if len(idx):
        n = 3 * h * w
        if n <= _NOISE_BANK_SIZE:
            window = p["noise_offset"][idx].to(device).view(-1, 1) + torch.arange(n, device=device).view(1, -1)
            normals = _noise_bank(device)[window]
        else:  # pictures beyond ~835 x 835: fresh draws from each sample's own generator
            normals = torch.stack([torch.randn(n, generator=_as_generator(generators[int(i)])) for i in idx]).to(device)
        sigma = p["sigma"][idx].to(device=device, dtype=torch.float32).view(-1, 1, 1, 1)
        dev_idx = idx.to(device)
        x[dev_idx] = (x[dev_idx] + normals.view(-1, 3, h, w) * sigma).clamp_(0, 255).round_()

    fired = p["gray"].to(device)
    if bool(fired.any()):
        # PIL's fixed-point luma, (19595 R + 38470 G + 7471 B + 2^15) >> 16: exact in float32 (all below 2^24).
        luma = torch.floor((19595.0 * x[:, 0] + 38470.0 * x[:, 1] + 7471.0 * x[:, 2] + 32768.0) / 65536.0)
        x = torch.where(fired.view(-1, 1, 1, 1), luma.unsqueeze(1).expand(-1, 3, -1, -1), x)

    out = x.to(torch.uint8)
    return out.permute(0, 2, 3, 1).contiguous() if channels_last else out

"""The one device picker: where models run for embedding, predicting, explaining, searching and the app.

Training under `accelerate launch` takes its device from accelerate (each process its own accelerator); everything
that only runs a model asks `choose_device`.
"""

from __future__ import annotations

import os

import torch

__all__ = ["choose_device", "process_rank"]


def process_rank() -> tuple[int, int]:
    """(rank, world size) as `accelerate launch` / torchrun set them; (0, 1) for a plain run."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def _mps_available() -> bool:
    return getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()


def choose_device(device=None) -> torch.device:
    """The torch device to compute on: `device` (--device) when this machine has it, else, under `accelerate launch`,
    this process's accelerator, else the best one available (CUDA, then Apple's MPS, then the CPU). A device that is
    not here is a ValueError saying so, before any model is loaded (torch's own is an AssertionError, "Torch not
    compiled with CUDA enabled")."""
    if device is not None:
        try:
            chosen = torch.device(device)
        except (RuntimeError, TypeError):
            raise ValueError(f"--device {device}: not a device name torch knows; use cpu, cuda, cuda:1, mps... or leave "
                             "it out for the best available") from None
        if chosen.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"--device {device}: no CUDA device is available here; use --device cpu, or leave it "
                             "out for the best available")
        if chosen.type == "cuda" and chosen.index is not None and chosen.index >= torch.cuda.device_count():
            raise ValueError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s), "
                             f"cuda:0 to cuda:{torch.cuda.device_count() - 1}")
        if chosen.type == "mps" and not _mps_available():
            raise ValueError(f"--device {device}: MPS (Apple GPU) is not available here; use --device cpu")
        return chosen
    rank, world = process_rank()
    if torch.cuda.is_available():
        if world > 1:  # one accelerator per process of the launch
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", rank)) % torch.cuda.device_count())
        return torch.device("cuda")
    return torch.device("mps") if _mps_available() else torch.device("cpu")

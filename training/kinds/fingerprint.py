"""The fingerprint MLP baseline: Morgan bits into the paper's head (`training.baselines.FingerprintPredictor`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from moleclip.processing.fingerprints import morgan_fingerprints
from moleclip.tasks import predictions_from_logits
from moleclip.training.kinds.base import ModelKind, Outputs, Prepared, register_kind
from moleclip.training.kinds.baselines import FingerprintPredictor

__all__ = ["FingerprintKind", "MorganBits"]


class MorganBits:
    """A batch of SMILES -> Morgan bits [b, n_bits] (float32), molecules standardised first as the training ones were.
    Cheap next to drawing: computed in the main process."""

    parallel = False

    def __init__(self, radius: int, n_bits: int, standardize: str = "none", **options):
        if options:
            raise ValueError(f"a fingerprint model has no drawing settings ({', '.join(sorted(options))}): it reads "
                             "Morgan bits")
        self.radius, self.n_bits, self.standardize = int(radius), int(n_bits), standardize or "none"

    def key(self) -> tuple:
        return ("morgan", self.radius, self.n_bits, self.standardize)

    def __call__(self, smiles: Sequence[str]) -> Prepared:
        result = morgan_fingerprints(list(smiles), radius=self.radius, n_bits=self.n_bits, n_jobs=1, progress=False,
                                     standardize=self.standardize)
        return Prepared(result.bits, np.asarray(result.kept, dtype=np.int64), list(result.skipped))


class BitsKind(ModelKind):
    """What the Morgan-bit kinds share: their preparation, read from the saved settings, and their folder: the
    `network` class's CONFIG_FILE names the kind, and the network saves and loads itself."""

    network: ClassVar[type]

    @classmethod
    def recognises(cls, spec: str) -> bool:
        return (Path(spec).expanduser() / cls.network.CONFIG_FILE).is_file()

    @classmethod
    def load(cls, spec: str, trust_pickle: bool = False) -> "BitsKind":
        return cls(cls.network.load(Path(spec).expanduser()))

    def save(self, folder: str | Path) -> Path:
        return self.model.save(folder)

    def preparer(self, **options) -> MorganBits:
        s = self.settings
        return MorganBits(s["radius"], s["in_features"], s.get("standardize", "none"), **options)

    def preparation(self):
        return self.preparer().key()

    @property
    def settings(self) -> dict:
        return self.model.settings


@register_kind("fingerprint")
class FingerprintKind(BitsKind):
    """A :class:`~moleclip.training.kinds.baselines.FingerprintPredictor` folder (`fingerprint_mlp.json`)."""

    network = FingerprintPredictor

    def to_device(self, inputs, device, **options):
        return torch.as_tensor(inputs, dtype=torch.float32, device=device)

    def forward(self, inputs, logits: bool = False, shared: dict | None = None) -> Outputs:
        out = self.model(features=inputs).logits
        return Outputs(out if logits else predictions_from_logits(out, self.task))

    def describe(self) -> str:
        return "fingerprint baseline (Morgan bits)"

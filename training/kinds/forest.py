"""The random-forest baseline on Morgan bits (`training.baselines.ForestPredictor`); loading it runs pickle."""

from __future__ import annotations

from pathlib import Path

from moleclip.tasks import is_classification
from moleclip.training.kinds.base import Outputs, register_kind
from moleclip.training.kinds.baselines import ForestPredictor
from moleclip.training.kinds.fingerprint import BitsKind
from moleclip.training.trust.uncertainty import probability_logits

__all__ = ["ForestKind"]


@register_kind("forest")
class ForestKind(BitsKind):
    """A :class:`~moleclip.training.kinds.baselines.ForestPredictor` folder (`random_forest.json` + joblib). It runs on the
    CPU whatever the device: the bits stay numpy arrays."""

    network = ForestPredictor

    @classmethod
    def load(cls, spec: str, trust_pickle: bool = False) -> "ForestKind":
        return cls(ForestPredictor.load(Path(spec).expanduser(), trust_pickle=trust_pickle))

    def to(self, device) -> "ForestKind":
        return self

    def forward(self, inputs, logits: bool = False, shared: dict | None = None) -> Outputs:
        values = self.model.predict(inputs)  # values, or positive-class probabilities, already
        if logits and is_classification(self.task):
            values = probability_logits(values)  # as finetune takes a forest's probabilities into an ensemble
        return Outputs(values)

    def describe(self) -> str:
        return "random forest baseline (Morgan bits)"

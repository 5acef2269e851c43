"""One interface for every kind of model, and the registry that finds a saved folder's kind.

A *kind* is what a model reads and how it is saved: MoleCLIP reads drawings (`image.py`), the fingerprint MLP and
the random forest read Morgan bits (`fingerprint.py`, `forest.py`). Everything that runs a model (the engine in
`training/inference/engine.py`, and through it predict, embed, the app, explain, search and the frozen-encoder finetuning)
talks to a :class:`ModelKind` only, so a new kind is one module with a class registered by :func:`register_kind`.

The pieces of the interface:

* :meth:`ModelKind.recognises` / :meth:`ModelKind.load` / :meth:`ModelKind.save`: a model folder (or a Hub name).
* :meth:`ModelKind.preparer`: SMILES -> the model's inputs (:class:`Prepared`), as a picklable callable that holds no
  model, so that the engine may run it in DataLoader worker processes where that pays (drawing).
* :meth:`ModelKind.to_device` and :meth:`ModelKind.forward`: prepared inputs -> :class:`Outputs` (predictions or
  logits; embeddings where the kind has them), in the main process, on the device.
* :meth:`ModelKind.describe`, and the facts a prediction table needs (`task`, `target_names`, `standardize`,
  `smiles_column`).
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
from rdkit.Chem import Draw

from moleclip.processing.molecules import SkippedMolecule, to_mol
from moleclip.tasks import default_target_names
from moleclip.training.serving.hub import PRESETS, read_model_config

__all__ = ["KINDS", "ModelKind", "Outputs", "Prepared", "kind_of_folder", "load_kind", "register_kind"]


@dataclass
class Prepared:
    """One batch made ready for a model: `inputs` for the kept molecules (CPU data a worker process can send),
    their positions in the batch, and the molecules that could not be used (positions in the batch)."""

    inputs: object
    kept: np.ndarray
    skipped: list[SkippedMolecule] = field(default_factory=list)


@dataclass
class Outputs:
    """A forward pass: `values` [b, targets] (predictions, or logits when asked; None for a kind without a head) and
    `embeddings` [b, d] (None for a kind without them); torch tensors or numpy arrays."""

    values: object = None
    embeddings: object = None


class ModelKind(abc.ABC):
    """A loaded model of one kind; see the module docstring. `model` is the network (or estimator) it wraps."""

    name: ClassVar[str] = ""

    def __init__(self, model):
        self.model = model

    # ------------------------------------------------------------------------------------------ folders
    @classmethod
    @abc.abstractmethod
    def recognises(cls, spec: str) -> bool:
        """Whether `spec` (a local folder, or a Hub name) holds a model of this kind."""

    @classmethod
    @abc.abstractmethod
    def load(cls, spec: str, trust_pickle: bool = False) -> "ModelKind":
        """The model saved at `spec`, ready to predict; `trust_pickle` allows files that run pickle when read."""

    @abc.abstractmethod
    def save(self, folder: str | Path) -> Path:
        """Write the model to `folder`, where :meth:`load` reads it back."""

    # ------------------------------------------------------------------------------------------ running
    @abc.abstractmethod
    def preparer(self, **options) -> Callable[[Sequence[str]], Prepared]:
        """A picklable callable turning a batch of SMILES into :class:`Prepared` inputs; `options` are the kind's
        preparation settings for this call (a kind refuses those it has not). An attribute `parallel = True` on it
        says that preparing is worth worker processes."""

    def preparation(self) -> Hashable:
        """What decides :meth:`preparer`'s output: kinds that prepare alike (an ensemble's members) share one
        preparation of each batch. The default shares with no other model."""
        return (type(self).__name__, id(self))

    def to_device(self, inputs, device, **options):
        """Prepared inputs on `device`, as :meth:`forward` takes them (default: as they are); `options` as for
        :meth:`preparer`."""
        return inputs

    @abc.abstractmethod
    def forward(self, inputs, logits: bool = False, shared: dict | None = None) -> Outputs:
        """The model on one batch of inputs from :meth:`to_device`. `logits`: raw logits for classification (what
        an ensemble combines) instead of probabilities. `shared`: a dict the engine gives every model run on the same
        batch, where a kind may keep work another model can reuse (the embeddings of an encoder two heads share)."""

    def to(self, device) -> "ModelKind":
        """Move the model to `device` for inference (default: a torch module is moved and put in eval mode)."""
        if hasattr(self.model, "to"):
            self.model = self.model.to(device).eval()
        return self

    # ------------------------------------------------------------------------------------------ facts
    @property
    @abc.abstractmethod
    def settings(self) -> dict:
        """The saved settings the facts below are read from (task, num_targets, target_names, standardize,
        smiles_column)."""

    @property
    def task(self) -> str | None:
        return self.settings.get("task")

    @property
    def target_names(self) -> list[str]:
        return default_target_names(self.settings.get("target_names"), self.settings["num_targets"])

    @property
    def standardize(self) -> str:
        """How molecules are prepared before the model sees them (the training molecules' preparation)."""
        return self.settings.get("standardize") or "none"

    @property
    def smiles_column(self) -> str | None:
        """The SMILES column of the table the model was finetuned on, when the user named it."""
        return self.settings.get("smiles_column")

    @property
    def embedding_width(self) -> int | None:
        """The size of the kind's embeddings; None when it has none."""
        return None

    @property
    def has_predictions(self) -> bool:
        return self.task is not None

    @abc.abstractmethod
    def describe(self) -> str:
        """One line for reports and the app: what the model is and what it reads."""

    def picture(self, smiles: str):
        """(a picture of the molecule, its caption) for the app. By default RDKit's drawing, which shows which
        molecule it is; a kind that reads pictures shows the one it sees."""
        return (Draw.MolToImage(to_mol(smiles), size=(224, 224)),
                f"the molecule (this model, a {self.describe()}, sees no picture)")


# ---------------------------------------------------------------------------------------------- registry
KINDS: dict[str, type[ModelKind]] = {}


def register_kind(name: str):
    """Class decorator: register a :class:`ModelKind` under `name`. Kinds are asked in registration order whether
    they recognise a folder, so a kind that takes any checkpoint (MoleCLIP's config.json) registers last."""

    def decorate(cls: type[ModelKind]) -> type[ModelKind]:
        if name in KINDS and KINDS[name] is not cls:
            raise ValueError(f"a model kind named {name!r} is registered already ({KINDS[name].__qualname__})")
        cls.name = name
        KINDS[name] = cls
        return cls

    return decorate


def kind_of_folder(spec: str) -> type[ModelKind] | None:
    """The registered kind that recognises `spec`, or None."""
    for kind in KINDS.values():
        if kind.recognises(str(spec)):
            return kind
    return None


def load_kind(spec: str, trust_pickle: bool = False) -> ModelKind:
    """The finetuned model saved at `spec` (a folder or a Hub name), loaded by the kind that recognises it."""
    if str(spec) in PRESETS:
        raise ValueError(f"{spec!r} is a randomly initialised preset, not a finetuned model: pass the model/ folder "
                         "that `moleclip finetune` wrote, or a Hub repository of one")
    kind = kind_of_folder(spec)
    if kind is None:
        read_model_config(str(spec))  # a path that is not there, or a run folder holding model/: its own message
        raise ValueError(f"{spec} holds no model this package knows (kinds: {', '.join(KINDS)}); pass the model/ "
                         "folder that `moleclip finetune` wrote")
    return kind.load(str(spec), trust_pickle=trust_pickle)

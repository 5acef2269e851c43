"""The property head of [`MoleCLIPForPropertyPrediction`] and the one home of regression-target scaling.

* [`PropertyHead`]: the paper's MLP, `num_layers x [Linear, ReLU, Dropout]` then a linear output, with PyTorch's default
  `nn.Linear` initialisation and no dropout by default, as the reference code had.
* [`TargetScaling`]: regression targets are standardised with the training part's mean and std; the head predicts
  standardised values and the model returns them in the targets' units.
* [`scaled_property_outputs`] / [`loss_from_predictions`]: a head's outputs and loss, and the same loss over a whole
  set of predictions (validation), computed one way everywhere.

This file travels to the Hugging Face Hub as remote code next to `modeling_moleclip.py`: flat relative imports only.
"""

import math

import numpy as np
import torch
from torch import nn

from .tasks import get_task, property_loss

__all__ = ["PropertyHead", "TargetScaling", "loss_from_predictions", "scaled_property_outputs"]


def _float_list(values, count: int, default: float, what: str) -> list[float]:
    """``values`` (None, one number, or ``count`` numbers) as ``count`` Python floats."""
    if values is None:
        return [default] * count
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().reshape(-1).tolist()
    elif isinstance(values, (int, float)):
        values = [values] * count
    values = [float(v) for v in np.asarray(values, dtype=np.float64).reshape(-1)]
    if len(values) != count:
        raise ValueError(f"{what} has {len(values)} values for {count} targets")
    return values


class TargetScaling(nn.Module):
    """Standardisation of regression targets: the one place it is defined.

    A regression head learns ``(y - mean) / std`` with the training split's mean and standard deviation, so the loss
    and the learning rates mean the same for properties measured in different units; its outputs are turned back into
    the targets' units with :meth:`unstandardize`. The training loss is taken on the standardised scale
    (`scaled_property_outputs`), and so is the loss of a whole set of predictions (`loss_from_predictions`).

    The two buffers are not saved with the weights: a MoleCLIP model keeps the numbers in its config
    (`target_mean`, `target_std`), so the two cannot disagree. A standard deviation of 0 (a constant target) is
    taken as 1.

    Args:
        mean, std: one number per target (a Python sequence, array or tensor; one number is used for every target).
        num_targets: how many targets; taken from ``mean`` when not given.
    """

    def __init__(self, mean=None, std=None, num_targets: int | None = None):
        super().__init__()
        if num_targets is None:
            if mean is None:
                raise ValueError("give mean (and std), or num_targets for the identity scaling")
            num_targets = int(np.asarray(mean.detach().cpu() if isinstance(mean, torch.Tensor) else mean).size)
        mean_values = _float_list(mean, num_targets, 0.0, "mean")
        std_values = [s if s != 0 else 1.0 for s in _float_list(std, num_targets, 1.0, "std")]
        if not all(math.isfinite(m) for m in mean_values):
            raise ValueError(f"target means must be finite, got {mean_values}")
        if not all(math.isfinite(s) and s > 0 for s in std_values):
            raise ValueError(f"target standard deviations must be positive and finite, got {std_values}")
        self.register_buffer("mean", torch.tensor(mean_values, dtype=torch.float32), persistent=False)
        self.register_buffer("std", torch.tensor(std_values, dtype=torch.float32), persistent=False)

    @classmethod
    def identity(cls, num_targets: int) -> "TargetScaling":
        """Mean 0, std 1: no scaling."""
        return cls(num_targets=num_targets)

    @classmethod
    def from_labels(cls, labels) -> "TargetScaling":
        """Statistics of training labels ``[N]`` or ``[N, T]`` (NaN = missing), per target.

        The standard deviation is the population one (ddof 0). A target without any label gets mean 0 and std 1,
        a constant one std 1.
        """
        values = np.asarray(labels.detach().cpu() if isinstance(labels, torch.Tensor) else labels, dtype=np.float64)
        if values.ndim == 1:
            values = values[:, None]
        if values.ndim != 2:
            raise ValueError(f"labels must be [N] or [N, T], got shape {values.shape}")
        labelled = ~np.isnan(values)
        count = labelled.sum(axis=0)
        filled = np.where(labelled, values, 0.0)
        mean = filled.sum(axis=0) / np.maximum(count, 1)
        var = (np.where(labelled, values - mean, 0.0) ** 2).sum(axis=0) / np.maximum(count, 1)
        std = np.where(count > 0, np.sqrt(var), 1.0)
        return cls(mean, std)

    @classmethod
    def from_config(cls, config) -> "TargetScaling":
        """The scaling recorded in a [`MoleCLIPConfig`] (identity when it records none)."""
        return cls(config.target_mean, config.target_std, num_targets=config.num_targets)

    @property
    def num_targets(self) -> int:
        return self.mean.numel()

    def statistics(self) -> tuple[list[float], list[float]]:
        """``(mean, std)`` as Python lists, e.g. for a config or a JSON file."""
        return self.mean.tolist(), self.std.tolist()

    def copy_from(self, other: "TargetScaling") -> None:
        """Take over another scaling's statistics, in place (the buffers keep their device)."""
        if other.num_targets != self.num_targets:
            raise ValueError(f"a scaling of {other.num_targets} targets given for {self.num_targets}")
        with torch.no_grad():
            self.mean.copy_(other.mean)
            self.std.copy_(other.std)

    def _stats_like(self, values):
        if isinstance(values, torch.Tensor):
            dtype = values.dtype if values.is_floating_point() else torch.float32
            return self.mean.to(values.device, dtype), self.std.to(values.device, dtype)
        return self.mean.detach().cpu().double().numpy(), self.std.detach().cpu().double().numpy()

    def _as_values(self, values):
        if isinstance(values, torch.Tensor):
            return values if values.is_floating_point() else values.float()
        return np.asarray(values, dtype=np.float64)

    def standardize(self, values):
        """``(values - mean) / std`` over the last axis; tensors stay tensors (their device and float dtype), anything
        else becomes a float64 array. NaN stays NaN."""
        values = self._as_values(values)
        mean, std = self._stats_like(values)
        return (values - mean) / std

    def unstandardize(self, values):
        """``values * std + mean``: standardised values back in the targets' units."""
        values = self._as_values(values)
        mean, std = self._stats_like(values)
        return values * std + mean

    def extra_repr(self) -> str:
        return f"num_targets={self.num_targets}"


def scaled_property_outputs(
    raw: torch.Tensor,
    labels: torch.Tensor | None,
    task: str,
    regression_loss: str,
    scaling: TargetScaling | torch.Tensor | None = None,
    target_std: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(logits, loss)`` from a head's raw outputs: the one definition of a property head's outputs and loss.

    A regression head's raw outputs are standardised predictions (see [`TargetScaling`]); its logits are returned in
    the targets' units and its loss is taken on the standardised scale. Classification logits are the raw outputs.
    Used by [`MoleCLIPForPropertyPrediction`] and by the fingerprint baseline's head.

    ``scaling`` may also be given the old way, as two tensors ``(target_mean, target_std)``.
    """
    if isinstance(scaling, torch.Tensor):
        scaling = TargetScaling(scaling, target_std)
    regression = get_task(task).standardized_targets
    if regression and scaling is None:
        raise ValueError("a regression head needs its TargetScaling")
    logits = scaling.unstandardize(raw) if regression else raw
    if labels is None:
        return logits, None
    labels = labels.to(raw.device)
    if regression:
        labels = scaling.standardize(labels.to(raw.dtype).reshape(raw.shape))
    return logits, property_loss(raw, labels, task, regression_loss)


def loss_from_predictions(
    predictions, labels, task: str, regression_loss: str = "l1", scaling: TargetScaling | None = None
) -> float:
    """The training loss of a whole set of predictions, computed as the model computes it in training.

    ``predictions`` are what the model returns (`logits`: regression values in the targets' units, classification
    logits) and ``labels`` the raw targets, both ``[N]`` or ``[N, T]`` arrays or tensors with NaN for missing labels.
    Regression values are standardised with ``scaling`` (the one the model was trained with) before the loss, so a
    validation loss here is on the same scale as the training loss. Computed in float64.
    """
    p = torch.as_tensor(np.asarray(predictions, dtype=np.float64) if not isinstance(predictions, torch.Tensor)
                        else predictions.detach().cpu().double())
    y = torch.as_tensor(np.asarray(labels, dtype=np.float64) if not isinstance(labels, torch.Tensor)
                        else labels.detach().cpu().double())
    if p.ndim == 1:
        p = p[:, None]
    y = y.reshape(p.shape)
    if get_task(task).standardized_targets:
        if scaling is None:
            raise ValueError("a regression loss needs the TargetScaling the model was trained with")
        p, y = scaling.standardize(p), scaling.standardize(y)
    return float(property_loss(p, y, task, regression_loss))


class PropertyHead(nn.Module):
    """`num_layers x [Linear(., hidden), ReLU, Dropout]` then `Linear(hidden, out_features)`: the paper's head.

    Used on the 512-d MoleCLIP embedding and, unchanged, on 2048-bit fingerprints for the baseline.

    Its defaults are the paper's settings, as its reference code trained them: dropout 0, and PyTorch's default
    `nn.Linear` initialisation (Kaiming-uniform weights, uniform biases in +-1/sqrt(fan_in)), not the
    normal(std=fan_in**-0.5), zero-bias scheme used for the pretraining heads. A MoleCLIP model's `_init_weights`
    calls :meth:`reset_parameters`, so a head built by `from_pretrained` without weights gets the same scheme.
    """

    def __init__(self, in_features: int, out_features: int, hidden_size: int = 512, num_layers: int = 3, dropout: float = 0.0):
        super().__init__()
        layers: list[nn.Module] = []
        width = in_features
        for _ in range(num_layers):
            layers += [nn.Linear(width, hidden_size), nn.ReLU(), nn.Dropout(dropout)]
            width = hidden_size
        layers.append(nn.Linear(width, out_features))
        self.layers = nn.Sequential(*layers)

    @classmethod
    def from_config(cls, config) -> "PropertyHead":
        """The head a [`MoleCLIPConfig`] describes, freshly initialised."""
        return cls(config.projection_dim, config.num_targets, hidden_size=config.head_hidden_size,
                   num_layers=config.head_num_layers, dropout=config.head_dropout)

    def reset_parameters(self) -> None:
        """PyTorch's default initialisation of every layer, drawn from the global RNG."""
        for layer in self.layers:
            if isinstance(layer, nn.Linear):
                layer.reset_parameters()

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.layers(features)

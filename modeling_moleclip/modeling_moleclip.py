"""MoleCLIP models: a CLIP vision tower that reads pictures of molecules.

* [`MoleCLIPModel`]: the encoder (CLIP vision transformer + bias-free visual projection to the 512-d `image_embeds`
  that OpenAI CLIP's `encode_image` returns) plus the pretraining objective of the paper: a symmetric contrastive loss
  between a plain and an augmented rendering, and one structural classification head per K-means label set.
* [`MoleCLIPForPropertyPrediction`]: the encoder plus an MLP head for regression or classification (task types,
  losses and metrics: `tasks.py`), with [`TargetScaling`] as the one home of regression-target standardisation.

Names of the embeddings, as in transformers 5's CLIP: `image_embeds` (in [`MoleCLIPOutput`]) and
`get_image_features(...).pooler_output` are the same projected embedding (`projection_dim`, 512 for ViT-B/16), the
molecule representation; `vision_pooler_output` is the CLIP tower's pooled output before the projection (its
`hidden_size`, 768 for ViT-B/16).

This file travels to the Hugging Face Hub as remote code: flat relative imports only.
"""


import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import CLIPVisionModel, CLIPVisionModelWithProjection, PreTrainedModel
from transformers import initialization as init
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.utils import ModelOutput

from .configuration_moleclip import MoleCLIPConfig
from .property_head import PropertyHead, TargetScaling, loss_from_predictions, scaled_property_outputs
from .tasks import get_task, property_loss

__all__ = [
    "MoleCLIPPreTrainedModel",
    "MoleCLIPModel",
    "MoleCLIPForPropertyPrediction",
    "MoleCLIPOutput",
    "MoleCLIPPropertyOutput",
    "PropertyHead",
    "TargetScaling",
    "contrastive_loss",
    "loss_from_predictions",
    "property_loss",
    "scaled_property_outputs",
]


@dataclass
class MoleCLIPOutput(ModelOutput):
    """Output of [`MoleCLIPModel`].

    loss: contrastive_loss + sum(classification_losses), when both views or pseudo-labels are given.
    contrastive_loss: symmetric cross-entropy between the two views' embeddings (global batch under data parallelism).
    classification_losses: one cross-entropy per pseudo-label set, shape (n_label_sets,).
    image_embeds: projected embedding of `pixel_values` (view 1), (batch, projection_dim), not normalised.
    augmented_image_embeds: projected embedding of `augmented_pixel_values` (view 2), when given.
    logits_per_view: (batch, global batch) contrastive logits of view 1 against view 2.
    label_logits: one (batch, K) tensor per pseudo-label set, computed on view 1.
    vision_pooler_output: the CLIP tower's pooled output on view 1, before the projection, (batch, hidden_size).
        (Not called `pooler_output`: `get_image_features(...).pooler_output` is the projected embedding, as in
        transformers 5's `CLIPModel`.)
    last_hidden_state / hidden_states / attentions: from the CLIP vision tower on view 1.
    """

    loss: torch.FloatTensor | None = None
    contrastive_loss: torch.FloatTensor | None = None
    classification_losses: torch.FloatTensor | None = None
    image_embeds: torch.FloatTensor | None = None
    augmented_image_embeds: torch.FloatTensor | None = None
    logits_per_view: torch.FloatTensor | None = None
    label_logits: tuple[torch.FloatTensor, ...] | None = None
    vision_pooler_output: torch.FloatTensor | None = None
    last_hidden_state: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


@dataclass
class MoleCLIPPropertyOutput(ModelOutput):
    """Output of [`MoleCLIPForPropertyPrediction`].

    loss: masked L1/MSE (regression, on standardised targets) or masked BCE (classification).
    logits: (batch, num_targets). Regression: predictions in the targets' original units. Classification: one logit per
        target (sigmoid gives the probability).
    image_embeds: the 512-d encoder embedding the head read.
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    image_embeds: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


class _GatherRows(torch.autograd.Function):
    """All processes' rows, concatenated, with gradients: the backward pass sums every process's gradient for the
    global batch (all-reduce) and hands each process the rows it owns. (torch's own functional all_gather does the
    same, and is deprecated from torch 2.13 on.)"""

    @staticmethod
    def forward(ctx, rows: torch.Tensor) -> torch.Tensor:
        ctx.rank, ctx.n = torch.distributed.get_rank(), rows.shape[0]
        parts = [torch.empty_like(rows) for _ in range(torch.distributed.get_world_size())]
        torch.distributed.all_gather(parts, rows)
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()
        torch.distributed.all_reduce(grad, op=torch.distributed.ReduceOp.SUM)
        return grad[ctx.rank * ctx.n:(ctx.rank + 1) * ctx.n]


def _gather_with_grad(embeds: torch.Tensor) -> tuple[torch.Tensor, int]:
    """All embeddings of the global batch, keeping the autograd graph, and this process's offset in it.

    `accelerate.gather` (and `dist.all_gather`) cut gradients; :class:`_GatherRows` passes them back to the process
    that owns each row, so the other processes' rows act as real negatives. Every process must hold as many rows.
    """
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return embeds, 0
    world = torch.distributed.get_world_size()
    if world == 1:
        return embeds, 0
    rank = torch.distributed.get_rank()
    return _GatherRows.apply(embeds.contiguous()), rank * embeds.shape[0]


def contrastive_loss(
    view1: torch.Tensor, view2: torch.Tensor, logit_scale: torch.Tensor | float, gather: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric InfoNCE between two views: row i of `view1` should match row i of `view2` among the whole batch.

    Embeddings are L2-normalised and compared by cosine times `logit_scale` (15 in the paper). Under
    `torch.distributed`, each process scores its own rows against the gathered global batch, so negatives come from
    every process, and gradients reach every process's encoder. Returns (loss, logits of view1 vs the global view2).
    """
    view1 = F.normalize(view1, dim=-1)
    view2 = F.normalize(view2, dim=-1)
    if gather:
        all1, offset = _gather_with_grad(view1)
        all2, _ = _gather_with_grad(view2)
    else:
        all1, all2, offset = view1, view2, 0
    targets = torch.arange(view1.shape[0], device=view1.device) + offset
    logits_1to2 = logit_scale * view1 @ all2.t()
    logits_2to1 = logit_scale * view2 @ all1.t()
    loss = 0.5 * (F.cross_entropy(logits_1to2, targets) + F.cross_entropy(logits_2to1, targets))
    return loss, logits_1to2


# The pseudo-label of a molecule without a class (one that could not be drawn); the cross-entropy skips it.
NO_PSEUDO_LABEL = -100


def _pseudo_label_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the molecules that have a class. A batch without any gives 0 with a graph: the mean
    cross-entropy of nothing is NaN, and its gradients would turn every weight into NaN (under data parallelism, on
    every process)."""
    known = (labels != NO_PSEUDO_LABEL).sum()
    return F.cross_entropy(logits, labels, ignore_index=NO_PSEUDO_LABEL, reduction="sum") / known.clamp(min=1)


def _output_flags(config, output_attentions: bool | None, output_hidden_states: bool | None) -> dict:
    """The `output_*` keyword arguments to hand to the CLIP tower.

    An explicit `None` would override the tower's own config (transformers reads the keyword first), so a flag left
    unset is either taken from the MoleCLIP config when that asks for it, or not passed at all so that the tower's
    `vision_config` decides.
    """
    flags = {}
    for name, value in (("output_attentions", output_attentions), ("output_hidden_states", output_hidden_states)):
        if value is None and getattr(config, name, False):
            value = True
        if value is not None:
            flags[name] = value
    return flags


def _use_return_dict(config, return_dict: bool | None) -> bool:
    return return_dict if return_dict is not None else getattr(config, "return_dict", True)


class MoleCLIPPreTrainedModel(PreTrainedModel):
    config: MoleCLIPConfig
    base_model_prefix = "moleclip"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    supports_gradient_checkpointing = True
    _no_split_modules = ["CLIPEncoderLayer", "CLIPVisionEmbeddings"]
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True

    @classmethod
    def is_custom_code(cls) -> bool:
        # transformers assumes a model defined outside the library may have an `_init_weights` that overwrites loaded
        # tensors, and so, when it fills in missing weights, skips every module with no parameters of its own. That
        # also skips CLIP's attention and MLP blocks, whose init sets their child projections, so a tower built by
        # `from_pretrained` without its weights (meta-device loading, a partial checkpoint) got the generic 0.02 std
        # instead of CLIP's scheme, unlike `MoleCLIPModel(config)`. Our `_init_weights` only uses the guarded
        # `transformers.initialization` functions, which leave loaded tensors alone, so the safeguard is not needed.
        return False

    @torch.no_grad()
    def _init_weights(self, module):
        # The CLIP tower is a PreTrainedModel of its own and initialises itself; this covers our added layers, each
        # from the module that owns it (transformers applies this method children first, so a generic nn.Linear
        # branch would also reach the property head's layers, which keep PyTorch's own scheme).
        # `transformers.initialization` functions, and `torch.nn.init` while transformers initialises, skip tensors
        # that were loaded from a checkpoint.
        factor = self.config.initializer_factor
        if isinstance(module, MoleCLIPModel):
            init.normal_(module.visual_projection.weight, std=module.vision_model.config.hidden_size**-0.5 * factor)
            init.constant_(module.logit_scale, math.log(self.config.logit_scale_init_value))
            for head in module.label_heads:  # the pretraining heads: CLIP-style projection init
                init.normal_(head.weight, std=head.in_features**-0.5 * factor)
                init.zeros_(head.bias)
        elif isinstance(module, PropertyHead):
            module.reset_parameters()
        elif isinstance(module, TargetScaling):
            # Non-persistent buffers are not in the checkpoint; from_pretrained builds on the meta device and relies
            # on this method to give them values, from the config.
            from_config = TargetScaling.from_config(self.config)
            init.copy_(module.mean, from_config.mean)
            init.copy_(module.std, from_config.std)

    @classmethod
    def from_clip(cls, name_or_path: str = "openai/clip-vit-base-patch16", **config_overrides):
        """Build a MoleCLIP model whose vision tower and visual projection come from a CLIP checkpoint.

        Accepts a full `CLIPModel` checkpoint (text weights are ignored) or a vision-only one, by Hub name or local
        path. Extra keyword arguments set fields of [`MoleCLIPConfig`] (e.g. `pseudo_label_classes=[300, 3000]`,
        or the head settings for [`MoleCLIPForPropertyPrediction`]). Heads are freshly initialised.
        """
        clip, info = CLIPVisionModelWithProjection.from_pretrained(name_or_path, output_loading_info=True, dtype=torch.float32)
        if any(key.startswith("visual_projection") for key in info.get("missing_keys", [])):
            raise ValueError(
                f"{name_or_path!r} has no trained visual projection (a vision tower saved without it). MoleCLIP's "
                "embedding is the projected one; start from a full CLIP checkpoint such as openai/clip-vit-base-patch16."
            )
        vision_config = clip.config.to_dict()
        config = MoleCLIPConfig(
            vision_config=vision_config, projection_dim=clip.config.projection_dim, **config_overrides
        )
        model = cls(config)
        encoder = model if isinstance(model, MoleCLIPModel) else model.moleclip
        encoder.vision_model.load_state_dict(clip.vision_model.state_dict())
        encoder.visual_projection.load_state_dict(clip.visual_projection.state_dict())
        model.config._name_or_path = str(name_or_path)
        return model


class MoleCLIPModel(MoleCLIPPreTrainedModel):
    """The MoleCLIP encoder with its pretraining heads. `AutoModel` maps `moleclip` checkpoints here.

    `model(pixel_values).image_embeds` is the molecule embedding. Given a second view (`augmented_pixel_values`) and/or
    `pseudo_labels` (batch, n_label_sets), it also returns the pretraining loss and its parts.
    """

    _keys_to_ignore_on_load_unexpected = [r"^head\."]

    def __init__(self, config: MoleCLIPConfig, with_pretraining_heads: bool = True):
        super().__init__(config)
        self.vision_model = CLIPVisionModel._from_config(config.vision_config)
        self.visual_projection = nn.Linear(config.vision_config.hidden_size, config.projection_dim, bias=False)
        classes = config.pseudo_label_classes if with_pretraining_heads else []
        self.label_heads = nn.ModuleList([nn.Linear(config.projection_dim, k) for k in classes])
        # Stored as a log so a learnable scale stays positive; fixed (no gradient) by default as in the paper.
        self.logit_scale = nn.Parameter(
            torch.tensor(math.log(config.logit_scale_init_value)), requires_grad=config.learnable_logit_scale
        )
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.vision_model.embeddings.patch_embedding

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.vision_model.embeddings.patch_embedding = value

    def get_image_features(
        self,
        pixel_values: torch.Tensor,
        interpolate_pos_encoding: bool = False,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPooling | tuple:
        """The CLIP tower's output with `pooler_output` replaced by the projected embedding (OpenAI CLIP's
        `encode_image`), as `CLIPModel.get_image_features` returns it in transformers 5: the embedding is
        `model.get_image_features(pixel_values).pooler_output`, the same tensor as `model(pixel_values).image_embeds`.
        The tower's own pooled output, before the projection, is `model(pixel_values).vision_pooler_output`.
        """
        tower = self.vision_model(
            pixel_values=pixel_values,
            interpolate_pos_encoding=interpolate_pos_encoding,
            return_dict=True,
            **_output_flags(self.config, output_attentions, output_hidden_states),
            **kwargs,
        )
        output = BaseModelOutputWithPooling(
            last_hidden_state=tower.last_hidden_state,
            pooler_output=self.visual_projection(tower.pooler_output),
            hidden_states=tower.hidden_states,
            attentions=tower.attentions,
        )
        return output if _use_return_dict(self.config, return_dict) else output.to_tuple()

    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        augmented_pixel_values: torch.Tensor | None = None,
        pseudo_labels: torch.Tensor | None = None,
        return_loss: bool | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        interpolate_pos_encoding: bool = False,
        return_dict: bool | None = None,
        **kwargs,
    ) -> MoleCLIPOutput | tuple:
        if pixel_values is None:
            raise ValueError("pixel_values is required (use MoleCLIPImageProcessor to turn SMILES into pixel_values)")
        tower = self.vision_model(
            pixel_values=pixel_values,
            interpolate_pos_encoding=interpolate_pos_encoding,
            return_dict=True,
            **_output_flags(self.config, output_attentions, output_hidden_states),
            **kwargs,
        )
        image_embeds = self.visual_projection(tower.pooler_output)

        augmented_embeds = logits_per_view = contrastive = None
        if augmented_pixel_values is not None:
            # Only the embedding of the second view is needed: no attentions or hidden states for it.
            augmented = self.vision_model(
                pixel_values=augmented_pixel_values,
                interpolate_pos_encoding=interpolate_pos_encoding,
                return_dict=True,
                output_attentions=False,
                output_hidden_states=False,
                **kwargs,
            )
            augmented_embeds = self.visual_projection(augmented.pooler_output)
            contrastive, logits_per_view = contrastive_loss(image_embeds, augmented_embeds, self.logit_scale.exp())

        label_logits = tuple(head(image_embeds) for head in self.label_heads) or None
        classification = None
        if pseudo_labels is not None:
            if not self.label_heads:
                raise ValueError("pseudo_labels were given but this model has no pseudo-label heads (pseudo_label_classes=[])")
            pseudo_labels = pseudo_labels.reshape(pseudo_labels.shape[0], -1).long()
            if pseudo_labels.shape[1] != len(self.label_heads):
                raise ValueError(
                    f"pseudo_labels has {pseudo_labels.shape[1]} label sets, the model has {len(self.label_heads)} heads "
                    f"(pseudo_label_classes={self.config.pseudo_label_classes})"
                )
            classification = torch.stack(
                [_pseudo_label_loss(logits, pseudo_labels[:, i]) for i, logits in enumerate(label_logits)]
            )

        loss = None
        if return_loss is not False and (contrastive is not None or classification is not None):
            loss = (contrastive if contrastive is not None else 0.0) + (
                classification.sum() if classification is not None else 0.0
            )
        output = MoleCLIPOutput(
            loss=loss,
            contrastive_loss=contrastive,
            classification_losses=classification,
            image_embeds=image_embeds,
            augmented_image_embeds=augmented_embeds,
            logits_per_view=logits_per_view,
            label_logits=label_logits,
            vision_pooler_output=tower.pooler_output,
            last_hidden_state=tower.last_hidden_state,
            hidden_states=tower.hidden_states,
            attentions=tower.attentions,
        )
        return output if _use_return_dict(self.config, return_dict) else output.to_tuple()


class MoleCLIPForPropertyPrediction(MoleCLIPPreTrainedModel):
    """MoleCLIP encoder + MLP head for molecular property prediction (`AutoModelForImageClassification`).

    Loading from a [`MoleCLIPModel`] checkpoint keeps the encoder and initialises a fresh head (the pretraining heads
    are dropped); a [`MoleCLIPModel`] can be loaded back from this model's checkpoint. Pass `image_embeds` instead of
    `pixel_values` to train or run the head alone on precomputed embeddings (the frozen-encoder mode).
    """

    _keys_to_ignore_on_load_unexpected = [r"label_heads\."]

    def __init__(self, config: MoleCLIPConfig):
        super().__init__(config)
        self.moleclip = MoleCLIPModel(config, with_pretraining_heads=False)
        self.head = PropertyHead.from_config(config)
        # Its buffers are not saved: the config is the single source of the scaling, so it cannot disagree with the
        # weights.
        self.target_scaling = TargetScaling.from_config(config)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.moleclip.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.moleclip.set_input_embeddings(value)

    @property
    def target_mean(self) -> torch.Tensor:
        """Mean of each regression target (a buffer of `target_scaling`)."""
        return self.target_scaling.mean

    @property
    def target_std(self) -> torch.Tensor:
        """Standard deviation of each regression target (a buffer of `target_scaling`)."""
        return self.target_scaling.std

    def set_target_scaling(self, scaling: "TargetScaling | Sequence[float]", std: Sequence[float] | None = None) -> None:
        """Record the regression targets' scaling (from the training split) in the config and the model.

        Give a [`TargetScaling`] (e.g. `TargetScaling.from_labels(train_labels)`), or the means and standard
        deviations as two sequences.
        """
        if not get_task(self.config.task).standardized_targets:
            raise ValueError(f"a {self.config.task} model has no target scaling (only regression targets are scaled)")
        if not isinstance(scaling, TargetScaling):
            scaling = TargetScaling(scaling, std)
        self.target_scaling.copy_from(scaling)
        self.config.target_mean, self.config.target_std = self.target_scaling.statistics()

    def reset_head(self) -> PropertyHead:
        """Replace the head by a freshly initialised one built from the config, and return it.

        Its weights are drawn from the global RNG with the head's default (PyTorch) initialisation, so seed before
        calling for a reproducible run; set `config.head_dropout` (or the other head settings) first to change them.
        The new head is put on the encoder's device and floating dtype.
        """
        reference = next(self.moleclip.parameters())
        self.head = PropertyHead.from_config(self.config).to(device=reference.device, dtype=reference.dtype)
        return self.head

    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        image_embeds: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> MoleCLIPPropertyOutput | tuple:
        hidden_states = attentions = None
        if image_embeds is None:
            if pixel_values is None:
                raise ValueError("give pixel_values (images) or image_embeds (precomputed MoleCLIP embeddings)")
            encoded = self.moleclip(
                pixel_values=pixel_values,
                return_dict=True,
                **_output_flags(self.config, output_attentions, output_hidden_states),
                **kwargs,
            )
            image_embeds, hidden_states, attentions = encoded.image_embeds, encoded.hidden_states, encoded.attentions
        logits, loss = scaled_property_outputs(self.head(image_embeds), labels, self.config.task,
                                               self.config.regression_loss, self.target_scaling)
        output = MoleCLIPPropertyOutput(
            loss=loss, logits=logits, image_embeds=image_embeds, hidden_states=hidden_states, attentions=attentions
        )
        return output if _use_return_dict(self.config, return_dict) else output.to_tuple()

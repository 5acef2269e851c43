"""Convert the paper's released encoder (`MoleCLIP - Primary.pth`, OpenAI CLIP key layout) to a Hugging Face checkpoint.

The released file is a `torch.save` dict whose `model` entry holds a whole OpenAI-format CLIP; the vision weights sit
under a prefix such as `model_image.module.model.visual.`. We find that prefix, read the architecture off the tensor
shapes, and map each tensor to its `CLIPVisionModel` name: the fused attention `in_proj` is split into q/k/v, and
OpenAI's `proj` (hidden x projection, applied as `x @ proj`) is transposed into the bias-free `visual_projection`.

The file is loaded with `torch.load(weights_only=True)`: a pickle from the internet must not run code.

The released weights were trained on B, G, R pictures (the reference wrote its drawings as PNG files and read them
back with `cv2.imread`, then normalised them with CLIP's R, G, B mean and std). `original_processor()` is the image
processor that feeds them that way (`channel_order="bgr"`); `moleclip convert-original` saves it with the weights.
"""

import re
from pathlib import Path

import torch

from .configuration_moleclip import MoleCLIPConfig
from .modeling_moleclip import MoleCLIPModel

__all__ = ["convert_original_checkpoint", "find_visual_prefix", "original_processor", "original_state_dict_to_hf",
           "config_from_original", "ORIGINAL_PROCESSOR_SETTINGS"]

# What the paper's pipeline fed the released encoder, as image-processor settings: B, G, R channels (cv2.imread of
# a PNG) normalised with CLIP's statistics in R, G, B order (MoleCLIPImageProcessor's default mean and std).
ORIGINAL_PROCESSOR_SETTINGS = {"channel_order": "bgr"}

_BLOCK = re.compile(r"^transformer\.resblocks\.(\d+)\.(.+)$")
_BLOCK_NAMES = {
    "attn.out_proj.weight": "self_attn.out_proj.weight",
    "attn.out_proj.bias": "self_attn.out_proj.bias",
    "ln_1.weight": "layer_norm1.weight",
    "ln_1.bias": "layer_norm1.bias",
    "mlp.c_fc.weight": "mlp.fc1.weight",
    "mlp.c_fc.bias": "mlp.fc1.bias",
    "mlp.c_proj.weight": "mlp.fc2.weight",
    "mlp.c_proj.bias": "mlp.fc2.bias",
    "ln_2.weight": "layer_norm2.weight",
    "ln_2.bias": "layer_norm2.bias",
}
_TOP_NAMES = {
    "conv1.weight": "vision_model.embeddings.patch_embedding.weight",
    "class_embedding": "vision_model.embeddings.class_embedding",
    "positional_embedding": "vision_model.embeddings.position_embedding.weight",
    "ln_pre.weight": "vision_model.pre_layrnorm.weight",
    "ln_pre.bias": "vision_model.pre_layrnorm.bias",
    "ln_post.weight": "vision_model.post_layernorm.weight",
    "ln_post.bias": "vision_model.post_layernorm.bias",
}


def _unwrap(checkpoint) -> dict[str, torch.Tensor]:
    if isinstance(checkpoint, dict) and "model" in checkpoint and isinstance(checkpoint["model"], dict):
        checkpoint = checkpoint["model"]
    if isinstance(checkpoint, dict) and "state_dict" in checkpoint and isinstance(checkpoint["state_dict"], dict):
        checkpoint = checkpoint["state_dict"]
    if not isinstance(checkpoint, dict) or not all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        raise ValueError("expected a state dict (or a dict with a 'model' state dict) of tensors")
    return checkpoint


def find_visual_prefix(state_dict: dict[str, torch.Tensor]) -> str:
    """The key prefix of the vision tower, e.g. `model_image.module.model.visual.`.

    A checkpoint can hold the same tower under two names: a module registered twice (the reference code's own loaders
    drop `clip_model.*` keys, so its checkpoints carry a `clip_model` copy beside `model_image`). Towers whose keys and
    tensors are identical are one tower, and the `model_image` one (else the shortest prefix) is used; towers that
    differ are refused, since nothing says which is the encoder.
    """
    prefixes = sorted({k[: -len("conv1.weight")] for k in state_dict if k.endswith("conv1.weight")},
                      key=lambda p: (not p.startswith("model_image."), len(p), p))
    if not prefixes:
        raise ValueError(
            "no OpenAI-format vision tower found (no key ending in 'conv1.weight'); is this the MoleCLIP .pth file?"
        )
    chosen = prefixes[0]
    tower = {k[len(chosen):]: v for k, v in state_dict.items() if k.startswith(chosen)}
    for other in prefixes[1:]:
        copy = {k[len(other):]: v for k, v in state_dict.items() if k.startswith(other)}
        same = copy.keys() == tower.keys() and all(
            copy[k].shape == tower[k].shape and torch.equal(copy[k], tower[k]) for k in tower)
        if not same:
            raise ValueError(f"several different vision towers found in the checkpoint ({', '.join(prefixes)}): "
                             "cannot tell which one is the encoder")
    return chosen


def _check_complete(visual: dict[str, torch.Tensor]) -> int:
    """The number of layers, once every tensor a vision tower of that depth needs is present.

    The depth is read off the largest block number, so a crafted file with one tensor named `resblocks.999999` would
    otherwise declare a million layers (or a few dozen, each allocated before loading finds them missing).
    """
    missing = [k for k in (*_TOP_NAMES, "proj") if k not in visual]
    blocks = sorted({int(m.group(1)) for k in visual if (m := _BLOCK.match(k))})
    if not blocks:
        missing.append("transformer.resblocks.0.*")
    if missing:
        raise ValueError(f"the vision tower lacks {', '.join(missing[:5])}: not a complete OpenAI-layout CLIP encoder")
    needed = ("attn.in_proj_weight", "attn.in_proj_bias", *_BLOCK_NAMES)
    layers = blocks[-1] + 1
    absent = [i for i in range(min(layers, len(blocks) + 1)) if i not in set(blocks)]
    if absent or len(blocks) != layers:
        raise ValueError(f"the vision tower names block {blocks[-1]} but holds only {len(blocks)} blocks (block "
                         f"{absent[0] if absent else '?'} is missing): a damaged or crafted checkpoint")
    for i in blocks:
        lacking = [n for n in needed if f"transformer.resblocks.{i}.{n}" not in visual]
        if lacking:
            raise ValueError(f"block {i} of the vision tower lacks {', '.join(lacking[:3])}: a damaged checkpoint")
    return layers


def config_from_original(visual: dict[str, torch.Tensor], **overrides) -> MoleCLIPConfig:
    """Read the ViT shape off the tensors (OpenAI CLIP uses 64-dim attention heads and QuickGELU), after checking
    that they form a complete tower; `MoleCLIPConfig` then refuses shapes no real model has."""
    layers = _check_complete(visual)
    width, _, patch, _ = visual["conv1.weight"].shape
    grid = int(round((visual["positional_embedding"].shape[0] - 1) ** 0.5))
    proj_dim = visual["proj"].shape[1]
    heads = overrides.pop("num_attention_heads", max(1, width // 64))
    vision_config = dict(
        hidden_size=width,
        intermediate_size=visual["transformer.resblocks.0.mlp.c_fc.weight"].shape[0],
        num_hidden_layers=layers,
        num_attention_heads=heads,
        image_size=grid * patch,
        patch_size=patch,
        projection_dim=proj_dim,
        hidden_act="quick_gelu",
        layer_norm_eps=1e-5,
    )
    return MoleCLIPConfig(vision_config=vision_config, projection_dim=proj_dim, **overrides)


def original_state_dict_to_hf(visual: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map un-prefixed OpenAI vision keys to MoleCLIPModel keys."""
    out: dict[str, torch.Tensor] = {}
    unknown = []
    for key, tensor in visual.items():
        if key in _TOP_NAMES:
            out[_TOP_NAMES[key]] = tensor
        elif key == "proj":
            out["visual_projection.weight"] = tensor.t().contiguous()
        elif m := _BLOCK.match(key):
            layer, rest = m.groups()
            base = f"vision_model.encoder.layers.{layer}."
            if rest in ("attn.in_proj_weight", "attn.in_proj_bias"):
                suffix = "weight" if rest.endswith("weight") else "bias"
                for name, part in zip(("q_proj", "k_proj", "v_proj"), tensor.chunk(3, dim=0)):
                    out[f"{base}self_attn.{name}.{suffix}"] = part.contiguous()
            elif rest in _BLOCK_NAMES:
                out[base + _BLOCK_NAMES[rest]] = tensor
            else:
                unknown.append(key)
        else:
            unknown.append(key)
    if unknown:
        raise ValueError(f"unexpected keys in the vision tower: {unknown[:5]}{' ...' if len(unknown) > 5 else ''}")
    return out


def convert_original_checkpoint(path: str | Path, **config_overrides) -> MoleCLIPModel:
    """Load `MoleCLIP - Primary.pth` (or any OpenAI-layout CLIP state dict) as a [`MoleCLIPModel`].

    The pseudo-label heads are not part of the released encoder, so they start freshly initialised; pass
    `pseudo_label_classes=[]` to build the model without them.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # an unpickling refusal means the file holds code, not just tensors
        raise ValueError(f"{path} could not be loaded as plain tensors (weights_only=True): {err}") from err
    state = _unwrap(checkpoint)
    prefix = find_visual_prefix(state)
    visual = {k[len(prefix):]: v.float() for k, v in state.items() if k.startswith(prefix)}
    config = config_from_original(visual, **config_overrides)
    model = MoleCLIPModel(config)
    converted = original_state_dict_to_hf(visual)
    missing, unexpected = model.load_state_dict(converted, strict=False)
    missing = [k for k in missing if not k.startswith("label_heads.") and k != "logit_scale"]
    if missing or unexpected:
        raise ValueError(f"conversion incomplete: missing {missing[:5]}, unexpected {unexpected[:5]}")
    model.config._name_or_path = str(path)
    return model.eval()


def original_processor(**overrides):
    """The image processor the released weights expect: a `MoleCLIPImageProcessor` with `channel_order="bgr"`
    (see the module docstring); `overrides` set other settings (or knowingly change that one)."""
    from .processing.image_processing_moleclip import MoleCLIPImageProcessor

    return MoleCLIPImageProcessor(**{**ORIGINAL_PROCESSOR_SETTINGS, **overrides})

"""Configuration of MoleCLIP models.

This file travels to the Hugging Face Hub as remote code next to ``modeling_moleclip.py``: it may only use flat
relative imports and libraries that a plain ``transformers`` install has.
"""


from transformers import CLIPVisionConfig, PreTrainedConfig

from .tasks import get_task

__all__ = ["MoleCLIPConfig", "MODEL_PRESETS"]

# Model shapes, randomly initialised (not augmentation presets, which live in processing/augment.py). `tiny` is small enough for every command and test to run in seconds on a laptop CPU;
# `base` is the ViT-B/16 shape of OpenAI CLIP (what the paper starts from), for benchmarks without downloaded weights.
MODEL_PRESETS = {
    "tiny": dict(
        vision_config=dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=224,
            patch_size=32,
            projection_dim=32,
        ),
        projection_dim=32,
        head_hidden_size=32,
    ),
    "base": dict(
        vision_config=dict(
            hidden_size=768,
            intermediate_size=3072,
            num_hidden_layers=12,
            num_attention_heads=12,
            image_size=224,
            patch_size=16,
            projection_dim=512,
        ),
        projection_dim=512,
        head_hidden_size=512,
    ),
}

# Written into every saved config so that `AutoConfig/AutoModel/AutoModelForImageClassification.from_pretrained(...,
# trust_remote_code=True)` all work in an environment without this package (transformers records only the class being
# saved otherwise).
DEFAULT_AUTO_MAP = {
    "AutoConfig": "configuration_moleclip.MoleCLIPConfig",
    "AutoModel": "modeling_moleclip.MoleCLIPModel",
    "AutoModelForImageClassification": "modeling_moleclip.MoleCLIPForPropertyPrediction",
}


class MoleCLIPConfig(PreTrainedConfig):
    r"""Configuration for [`MoleCLIPModel`] and [`MoleCLIPForPropertyPrediction`].

    Args:
        vision_config (`dict` or `CLIPVisionConfig`): the CLIP vision tower (default: `CLIPVisionConfig()`, the
            ViT-B/32 shape; the paper's ViT-B/16 is `MoleCLIPConfig.from_preset("base")`, or `from_clip` of
            openai/clip-vit-base-patch16).
        projection_dim (`int`, 512): size of the projected image embedding (`image_embeds`), as CLIP's `encode_image`.
        pseudo_label_classes (`list[int]`, [300, 3000]): class counts of the structural classification heads used in
            pretraining, one per K-means label set (empty list: no heads).
        logit_scale_init_value (`float`, 15.0): the contrastive logit scale (1 / temperature; the paper's 15 = T 0.067).
        learnable_logit_scale (`bool`, False): learn the scale (stored as a log) instead of keeping it fixed.
        task (`str`, "regression"): "regression" or "classification" (binary or multi-label, missing labels masked);
            the task types, their losses and metrics are defined in `tasks.py`.
        num_targets (`int`, 1): number of targets (one output each).
        target_names (`list[str]`, optional): names of the targets, kept for predictions and model cards.
        smiles_column (`str`, optional): the SMILES column of the table the model was finetuned on, when it was named
            (`--smiles-column`): the column `moleclip predict`, `embed` and the app read a table with by default.
        regression_loss (`str`, "l1"): "l1" (the paper) or "mse".
        target_mean / target_std (`list[float]`, optional): regression targets are learnt standardised (see
            `TargetScaling`); predictions (`logits`) are returned in the original units.
        head_hidden_size (`int`, 512), head_num_layers (`int`, 3), head_dropout (`float`, 0.0): the MLP head
            `num_layers x [Linear, ReLU, Dropout]` then `Linear(hidden, num_targets)`. The defaults are the paper's
            (the reference code trained its heads with dropout 0, and with PyTorch's default `nn.Linear`
            initialisation, which the head keeps: see `PropertyHead`).
    """

    model_type = "moleclip"
    sub_configs_defaults = {"vision_config": CLIPVisionConfig}

    vision_config: dict | PreTrainedConfig | None = None
    projection_dim: int = 512
    pseudo_label_classes: list[int] | None = None
    logit_scale_init_value: float = 15.0
    learnable_logit_scale: bool = False
    task: str = "regression"
    num_targets: int = 1
    target_names: list[str] | None = None
    smiles_column: str | None = None
    regression_loss: str = "l1"
    target_mean: list[float] | None = None
    target_std: list[float] | None = None
    head_hidden_size: int = 512
    head_num_layers: int = 3
    head_dropout: float = 0.0
    initializer_factor: float = 1.0

    def __post_init__(self, **kwargs):
        # transformers' way of sizing a classifier (`num_labels=3`, or `id2label`) sizes a MoleCLIP head too: one output
        # per target, `num_targets`, taken from it when num_targets was left at its default of 1 (taken quietly
        # before, it left a one-output head under a config saying 3); a num_targets that says otherwise is refused.
        # (transformers' own default, LABEL_0 and LABEL_1, comes back with every to_dict() and means nothing here)
        labels = kwargs.get("num_labels")
        if labels is None and self.id2label and any(str(v) != f"LABEL_{k}" for k, v in self.id2label.items()):
            labels = len(self.id2label)
        if labels is not None and int(labels) != self.num_targets:
            if self.num_targets != 1:
                raise ValueError(f"num_labels / id2label ({labels}) and num_targets ({self.num_targets}) disagree: a "
                                 "MoleCLIP head has one output per target; give one of them")
            self.num_targets = int(labels)
        if self.pseudo_label_classes is None:
            self.pseudo_label_classes = [300, 3000]
        self.pseudo_label_classes = [int(k) for k in self.pseudo_label_classes]
        if getattr(self, "auto_map", None) is None:
            self.auto_map = dict(DEFAULT_AUTO_MAP)
        super().__post_init__(**kwargs)
        self._validate_moleclip()

    @classmethod
    def from_dict(cls, config_dict, **kwargs):
        """As transformers' own, then the checks the constructor makes: from_pretrained(folder, task=..., num_targets=
        ...) sets its keyword arguments after the constructor has checked the saved values, so a task that does not
        exist or num_targets beside target names of another length were taken as given."""
        result = super().from_dict(config_dict, **kwargs)
        config = result[0] if isinstance(result, tuple) else result
        config.pseudo_label_classes = [int(k) for k in config.pseudo_label_classes]
        config._validate_moleclip()
        return result

    def _validate_moleclip(self):
        get_task(self.task)
        regression_losses = get_task("regression").losses
        if self.regression_loss not in regression_losses:
            raise ValueError(f"regression_loss must be one of {regression_losses}, got {self.regression_loss!r}")
        if self.num_targets < 1:
            raise ValueError(f"num_targets must be >= 1, got {self.num_targets}")
        if any(k < 2 for k in self.pseudo_label_classes):
            raise ValueError(f"every pseudo-label class count must be >= 2, got {self.pseudo_label_classes}")
        if self.target_names is not None and len(self.target_names) != self.num_targets:
            raise ValueError(f"{len(self.target_names)} target_names given for num_targets={self.num_targets}")
        for name in ("target_mean", "target_std"):
            values = getattr(self, name)
            if values is not None and len(values) != self.num_targets:
                raise ValueError(f"{name} has {len(values)} values for num_targets={self.num_targets}")
        if self.target_std is not None and any(s <= 0 for s in self.target_std):
            raise ValueError(f"target_std must be positive, got {self.target_std}")
        if self.head_num_layers < 0 or not 0.0 <= self.head_dropout < 1.0:
            raise ValueError("head_num_layers must be >= 0 and head_dropout in [0, 1)")
        self._check_sizes()

    def _check_sizes(self):
        """Refuse shapes no real model has before anything is allocated: a config.json (or a converted .pth) that
        declares a million layers or a million-wide model would otherwise allocate until the machine stops it."""
        vision = self.vision_config
        get = (lambda name: vision.get(name)) if isinstance(vision, dict) else (lambda name: getattr(vision, name, None))
        bounds = {"hidden_size": 16_384, "intermediate_size": 65_536, "num_hidden_layers": 256,
                  "num_attention_heads": 512, "image_size": 4_096, "patch_size": 4_096, "num_channels": 16}
        for name, limit in bounds.items():
            value = get(name)
            if value is not None and not 1 <= int(value) <= limit:
                raise ValueError(f"vision_config.{name} = {value} is outside 1..{limit:,}: not a model this package "
                                 "builds (a damaged or hostile config?)")
        for name, value, limit in (("projection_dim", self.projection_dim, 16_384),
                                   ("head_hidden_size", self.head_hidden_size, 65_536),
                                   ("head_num_layers", self.head_num_layers + 1, 65),
                                   ("num_targets", self.num_targets, 100_000),
                                   *(("pseudo_label_classes", k, 10_000_000) for k in self.pseudo_label_classes)):
            if not 1 <= int(value) <= limit:
                raise ValueError(f"{name} = {value} is outside the sizes this package builds")
        hidden, layers = get("hidden_size"), get("num_hidden_layers")
        image, patch = get("image_size"), get("patch_size")
        if hidden and layers and int(hidden) ** 2 * int(layers) * 12 > 20e9:
            raise ValueError(f"a vision tower of {layers} layers of width {hidden} has more than 20 billion weights")
        if image and patch and (int(image) // int(patch)) ** 2 > 65_536:
            raise ValueError(f"image_size {image} with patch_size {patch} gives more than 65,536 patches")

    @classmethod
    def from_preset(cls, name: str, **overrides) -> "MoleCLIPConfig":
        """A randomly initialised shape: ``"tiny"`` (seconds on a CPU) or ``"base"`` (ViT-B/16)."""
        if name not in MODEL_PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose one of {sorted(MODEL_PRESETS)}")
        settings = {k: (dict(v) if isinstance(v, dict) else v) for k, v in MODEL_PRESETS[name].items()}
        vision_overrides = overrides.pop("vision_config", None) or {}
        settings["vision_config"].update(vision_overrides)
        settings.update(overrides)
        return cls(**settings)

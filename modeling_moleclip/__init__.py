"""MoleCLIP: molecular representations from images of molecules, as a Hugging Face model package.

Importing `moleclip` registers the `moleclip` model type with the `transformers` auto classes, so
`AutoConfig`, `AutoModel`, `AutoModelForImageClassification` and `AutoImageProcessor` load MoleCLIP checkpoints
without `trust_remote_code`. Checkpoints saved by this package also carry the model and processor code, so they load
with `trust_remote_code=True` where the package is not installed.
"""

from transformers import AutoConfig, AutoImageProcessor, AutoModel, AutoModelForImageClassification

from .configuration_moleclip import MODEL_PRESETS, MoleCLIPConfig
from .modeling_moleclip import (
    MoleCLIPForPropertyPrediction,
    MoleCLIPModel,
    MoleCLIPOutput,
    MoleCLIPPreTrainedModel,
    MoleCLIPPropertyOutput,
    PropertyHead,
    TargetScaling,
    loss_from_predictions,
)
from .tasks import TASK_TYPES, TaskType, get_task, higher_is_better
from .processing.image_processing_moleclip import MoleCLIPImageProcessor
from .processing.molecules import InvalidMoleculeError

__version__ = "0.1.0"

__all__ = [
    "MODEL_PRESETS",
    "TASK_TYPES",
    "InvalidMoleculeError",
    "MoleCLIPConfig",
    "MoleCLIPForPropertyPrediction",
    "MoleCLIPImageProcessor",
    "MoleCLIPModel",
    "MoleCLIPOutput",
    "MoleCLIPPreTrainedModel",
    "MoleCLIPPropertyOutput",
    "PropertyHead",
    "TargetScaling",
    "TaskType",
    "get_task",
    "higher_is_better",
    "loss_from_predictions",
]

AutoConfig.register(MoleCLIPConfig.model_type, MoleCLIPConfig, exist_ok=True)
AutoModel.register(MoleCLIPConfig, MoleCLIPModel, exist_ok=True)
AutoModelForImageClassification.register(MoleCLIPConfig, MoleCLIPForPropertyPrediction, exist_ok=True)
AutoImageProcessor.register(MoleCLIPConfig, slow_image_processor_class=MoleCLIPImageProcessor, exist_ok=True)

# `save_pretrained` / `push_to_hub` copy the code files next to the weights and record them in `auto_map`.
MoleCLIPConfig.register_for_auto_class()
MoleCLIPModel.register_for_auto_class("AutoModel")
MoleCLIPForPropertyPrediction.register_for_auto_class("AutoModelForImageClassification")
MoleCLIPImageProcessor.register_for_auto_class("AutoImageProcessor")

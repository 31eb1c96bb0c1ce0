"""Models: ACC-ViT (the paper's architecture) and the torchvision baselines, behind one registry.

>>> from accvit_med.models import create_model
>>> model = create_model("accvit_tiny", num_classes=7)               # random initialisation
>>> model = create_model("convnext_tiny", num_classes=7, weights="imagenet")
>>> model = create_model("accvit_tiny", num_classes=7, weights="pretrain.safetensors")
>>> created = create("convnext_tiny", num_classes=7, weights="imagenet")  # the model and its weights' source
>>> created.weights.to_record()["sha256"]
"""

from accvit_med.models.provenance import WeightsSource
from accvit_med.models.registry import (
    CamLayer,
    CreatedModel,
    ModelInfo,
    classifier_head,
    count_parameters,
    create,
    create_model,
    imagenet_weights_cached,
    list_models,
    model_info,
    reset_classifier,
)

__all__ = [
    "CamLayer",
    "CreatedModel",
    "ModelInfo",
    "WeightsSource",
    "classifier_head",
    "count_parameters",
    "create",
    "create_model",
    "imagenet_weights_cached",
    "list_models",
    "model_info",
    "reset_classifier",
]

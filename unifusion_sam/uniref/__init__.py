"""The full UniRef++ model (ResNet-50 / Swin + two-stage Deformable DETR), sharing UniFusion, the reference
encoders and the inference code with UniFusion-SAM."""

from .config import UniRefConfig, list_uniref_presets, load_uniref_preset
from .model import FrameFeatures, UniRefModel
from .segmenter import UniRefSegmenter, build_uniref

__all__ = [
    "FrameFeatures",
    "UniRefConfig",
    "UniRefModel",
    "UniRefSegmenter",
    "build_uniref",
    "list_uniref_presets",
    "load_uniref_preset",
]

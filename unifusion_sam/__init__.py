"""unifusion-sam: reference-based segmentation (text, few-shot masks, video masks) for Segment Anything."""

from .config import JsonConfig
from .encoders import (
    MaskEncoderConfig,
    MaskReferenceEncoder,
    TextEncoderConfig,
    TextFeatures,
    TextReferenceEncoder,
)
from .fusion import ReferenceTokens, UniFusion, UniFusionConfig, cross_attention

__version__ = "0.1.0"

__all__ = [
    "JsonConfig",
    "MaskEncoderConfig",
    "MaskReferenceEncoder",
    "ReferenceTokens",
    "TextEncoderConfig",
    "TextFeatures",
    "TextReferenceEncoder",
    "UniFusion",
    "UniFusionConfig",
    "__version__",
    "cross_attention",
]

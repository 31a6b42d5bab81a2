"""unifusion-sam: reference-based segmentation (text, few-shot masks, video masks) for Segment Anything.

    from unifusion_sam import build_sam, wrap_sam, UniFusionSam
    model = wrap_sam(build_sam("vit_b", checkpoint="sam_vit_b_01ec64.pth"))
    model.predict(image, text="the dog on the left")
"""

from .config import JsonConfig
from .encoders import (
    MaskEncoderConfig,
    MaskReferenceEncoder,
    TextEncoderConfig,
    TextFeatures,
    TextReferenceEncoder,
)
from .fusion import ReferenceTokens, UniFusion, UniFusionConfig, cross_attention
from .sam import (
    LoraSettings,
    Prediction,
    ReferencePredictor,
    SamBatch,
    SamOutput,
    UniFusionSam,
    UniFusionSamConfig,
    build_hf_sam,
    build_sam,
    list_presets,
    load_preset,
    wrap_sam,
)
from .video import FrameResult, VideoSession

__version__ = "0.1.0"

__all__ = [
    "FrameResult",
    "JsonConfig",
    "LoraSettings",
    "MaskEncoderConfig",
    "MaskReferenceEncoder",
    "Prediction",
    "ReferencePredictor",
    "ReferenceTokens",
    "SamBatch",
    "SamOutput",
    "TextEncoderConfig",
    "TextFeatures",
    "TextReferenceEncoder",
    "UniFusion",
    "UniFusionConfig",
    "UniFusionSam",
    "UniFusionSamConfig",
    "VideoSession",
    "__version__",
    "build_hf_sam",
    "build_sam",
    "cross_attention",
    "list_presets",
    "load_preset",
    "wrap_sam",
]

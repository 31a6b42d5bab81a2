"""unifusion-sam: reference-based segmentation (text, few-shot masks, video masks) for Segment Anything.

    from unifusion_sam import build_sam, wrap_sam, UniFusionSam
    model = wrap_sam(build_sam("vit_b", checkpoint="sam_vit_b_01ec64.pth"))
    model.predict(image, text="the dog on the left")

    import unifusion_sam
    model = unifusion_sam.from_pretrained("out/uniref-r50")   # a converted UniRef++ model, or an adapter + sam=
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
from .hub import from_pretrained
from .inference import EmbeddingCache, FrameResult, Prediction, ReferencePredictor, VideoSession
from .interface import MaskReference, ReferenceSegmenter
from .sam import (
    LoraSettings,
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
from .uniref import UniRefConfig, UniRefSegmenter, build_uniref

__version__ = "0.1.0"

__all__ = [
    "EmbeddingCache",
    "FrameResult",
    "JsonConfig",
    "LoraSettings",
    "MaskEncoderConfig",
    "MaskReference",
    "MaskReferenceEncoder",
    "Prediction",
    "ReferencePredictor",
    "ReferenceSegmenter",
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
    "UniRefConfig",
    "UniRefSegmenter",
    "VideoSession",
    "__version__",
    "build_hf_sam",
    "build_sam",
    "build_uniref",
    "cross_attention",
    "from_pretrained",
    "list_presets",
    "load_preset",
    "wrap_sam",
]

"""Reference encoders shared by both model families: text and mask."""

from .blocks import CBAM, LevelFuser, ResBlock
from .mask import MaskEncoderConfig, MaskReferenceEncoder, validate_reference
from .text import (
    DEFAULT_TEXT_MODEL,
    TextEncoderConfig,
    TextFeatures,
    TextReferenceEncoder,
    resolve_text_model,
    validate_sentences,
)

__all__ = [
    "CBAM",
    "DEFAULT_TEXT_MODEL",
    "LevelFuser",
    "MaskEncoderConfig",
    "MaskReferenceEncoder",
    "ResBlock",
    "TextEncoderConfig",
    "TextFeatures",
    "TextReferenceEncoder",
    "resolve_text_model",
    "validate_reference",
    "validate_sentences",
]

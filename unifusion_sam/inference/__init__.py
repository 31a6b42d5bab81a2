"""Inference shared by every model family: the predictor (``predict``), the online video session
(``track``) and the mixin that gives a network both, talking to it through :mod:`unifusion_sam.interface`."""

from .inputs import to_bool_mask, to_rgb_array
from .mixin import ReferenceInferenceMixin
from .predictor import EmbeddingCache, Prediction, ReferencePredictor, inference_mode
from .session import SIGMA_PRESETS, FrameResult, VideoSession, resolve_sigma

__all__ = [
    "SIGMA_PRESETS",
    "EmbeddingCache",
    "FrameResult",
    "Prediction",
    "ReferenceInferenceMixin",
    "ReferencePredictor",
    "VideoSession",
    "inference_mode",
    "resolve_sigma",
    "to_bool_mask",
    "to_rgb_array",
]

"""Inference shared by both model families: the predictor (``predict``) and the online video session
(``track``), talking to a network through :mod:`unifusion_sam.interface`."""

from .inputs import to_bool_mask, to_rgb_array
from .predictor import EmbeddingCache, Prediction, ReferencePredictor, inference_mode
from .session import SIGMA_PRESETS, FrameResult, VideoSession, resolve_sigma

__all__ = [
    "SIGMA_PRESETS",
    "EmbeddingCache",
    "FrameResult",
    "Prediction",
    "ReferencePredictor",
    "VideoSession",
    "inference_mode",
    "resolve_sigma",
    "to_bool_mask",
    "to_rgb_array",
]

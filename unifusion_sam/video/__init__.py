"""Online video inference (VOS and RVOS); the session lives in :mod:`unifusion_sam.inference.session`."""

from ..inference.session import SIGMA_PRESETS, FrameResult, VideoSession, resolve_sigma

__all__ = ["SIGMA_PRESETS", "FrameResult", "VideoSession", "resolve_sigma"]

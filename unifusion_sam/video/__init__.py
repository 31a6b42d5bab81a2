"""Online video inference: VOS and RVOS sessions."""

from .session import SIGMA_PRESETS, FrameResult, VideoSession, resolve_sigma

__all__ = ["SIGMA_PRESETS", "FrameResult", "VideoSession", "resolve_sigma"]

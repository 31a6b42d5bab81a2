"""The UniFusion block and its attention backends."""

from .attention import BACKENDS, cross_attention, flash_attn_available, resolve_backend
from .unifusion import ReferenceTokens, UniFusion, UniFusionConfig

__all__ = [
    "BACKENDS",
    "ReferenceTokens",
    "UniFusion",
    "UniFusionConfig",
    "cross_attention",
    "flash_attn_available",
    "resolve_backend",
]

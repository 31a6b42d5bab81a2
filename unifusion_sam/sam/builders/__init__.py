"""Building the SAMs this family wraps: Meta's ViT SAMs, SAM 2 (Meta's ``sam2`` or ``transformers``), the
offline stand-in SAM (:mod:`.stand_in`), and a SAM from a command-line option (:mod:`.options`).

``build_sam(name, checkpoint=None, image_size=None)`` is a plain dict registry of sizes
(:mod:`.registry`), like ``segment_anything.build_sam``; ``build_hf_sam`` builds the same sizes as
``transformers`` models.
"""

from .registry import (
    CUSTOM_SAMS,
    SAM_SIZES,
    CustomEncoderSpec,
    build_hf_sam,
    build_sam,
    load_sam_checkpoint,
    read_state_dict,
    save_sam,
)
from .sam2 import build_hf_sam2, build_meta_sam2

__all__ = [
    "CUSTOM_SAMS",
    "SAM_SIZES",
    "CustomEncoderSpec",
    "build_hf_sam",
    "build_hf_sam2",
    "build_meta_sam2",
    "build_sam",
    "load_sam_checkpoint",
    "read_state_dict",
    "save_sam",
]

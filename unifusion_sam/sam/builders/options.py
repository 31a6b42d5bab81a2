"""A SAM from what a user types: a size name (``vit_b``, ``lite0``, ``sam2_hiera_t`` ...) with optional
weights, or the path of a weights file whose size is read from the weights themselves.

This is what ``--sam`` / ``--sam-checkpoint`` / ``--sam-size`` / ``--sam-image-size`` of the command line,
the web demo and the ``eval/`` runners mean (:mod:`unifusion_sam.sam.plugin`).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch

from ...data.io import DataError
from ..specs import SAM2_SPECS, SAM_SPECS, sam2_name_from_state
from .registry import CUSTOM_SAMS, SAM_SIZES, build_sam, read_state_dict

_ENCODER_WIDTH = {spec.embed_dim: name for name, spec in SAM_SPECS.items()}


def build_sam_from_option(sam: str | os.PathLike, *, sam_checkpoint=None, sam_size=None, sam_image_size=None):
    """Meta SAM from a size name (+ optional weights) or from a weights path (size read from the weights)."""
    name = str(sam)
    if name in SAM_SIZES:
        if sam_size is not None and sam_size != name:
            raise ValueError(f"--sam {name} and --sam-size {sam_size} disagree; give one size")
        weights = sam_checkpoint
    else:
        if sam_checkpoint is not None:
            raise ValueError(f"--sam {name!r} is not a size name ({', '.join(sorted(SAM_SIZES))}), so it is read as "
                             "a weights path; do not also give --sam-checkpoint")
        weights = name
    if weights is not None:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise DataError(f"SAM checkpoint not found: {path}")
        size = sam_size or (name if name in SAM_SIZES else None)
        image_size = sam_image_size
        if size is None or image_size is None:
            found_size, found_image_size = _inspect_sam_weights(path)
            size = size or found_size
            image_size = image_size or found_image_size
        return build_sam(size, checkpoint=path, image_size=image_size)
    if name not in ("tiny", "sam2_tiny", *CUSTOM_SAMS):
        warnings.warn(f"SAM {name} has random weights: pass --sam-checkpoint (e.g. sam_{name}_*.pth) for real "
                      "predictions", UserWarning, stacklevel=2)
    return build_sam(name, image_size=sam_image_size)


def _inspect_sam_weights(path: Path) -> tuple[str, int]:
    """``(size name, input resolution)`` of a Meta SAM state dict, from its patch embedding and position grid."""
    state = None
    if path.suffix != ".safetensors":
        try:  # memory-mapped: nothing but the two tensors inspected is read from disk
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            if isinstance(state, dict) and isinstance(state.get("model"), dict):
                state = state["model"]
        except Exception:  # noqa: BLE001 - fall back to a full read, which reports the error with the path
            state = None
    if not isinstance(state, dict):
        state = read_state_dict(path)
    if "image_encoder.backbone._conv_stem.weight" in state:  # the EfficientNet-Lite0 stand-in (a CNN: any size)
        name = "lite0_hr" if "image_encoder.conv_s0.weight" in state else "lite0"
        return name, CUSTOM_SAMS[name].image_size
    if "image_encoder.trunk.patch_embed.proj.weight" in state:  # SAM 2 (Hiera): the size from the trunk's layout
        sam2 = sam2_name_from_state(state)
        if sam2 is None:
            raise ValueError(f"{path}: a SAM 2 checkpoint of no known Hiera size; pass --sam-size")
        return sam2, SAM2_SPECS[sam2].image_size
    proj = state.get("image_encoder.patch_embed.proj.weight")
    pos = state.get("image_encoder.pos_embed")
    if proj is None or pos is None:
        raise ValueError(f"{path} is not a Meta SAM checkpoint (no image_encoder.patch_embed / pos_embed); "
                         "a transformers SamModel is not supported here")
    width = int(proj.shape[0])
    if width not in _ENCODER_WIDTH:
        raise ValueError(f"{path}: image-encoder width {width} matches no SAM size; pass --sam-size")
    return _ENCODER_WIDTH[width], int(pos.shape[1]) * 16



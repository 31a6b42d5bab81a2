"""UniFusion-SAM: reference-based segmentation on a frozen Segment Anything."""

from .backends import HFSamBackend, MetaSamBackend, SamBackend, make_backend
from .batch import SamBatch, SamOutput
from .build import CUSTOM_SAMS, SAM_SIZES, SAM_SPECS, build_hf_sam, build_sam, load_sam_checkpoint
from .config import LoraSettings, UniFusionSamConfig, list_presets, load_preset
from .model import UniFusionSam
from .transforms import SamTransform
from .wrap import wrap_sam

__all__ = [
    "CUSTOM_SAMS",
    "SAM_SIZES",
    "SAM_SPECS",
    "HFSamBackend",
    "LoraSettings",
    "MetaSamBackend",
    "SamBackend",
    "SamBatch",
    "SamOutput",
    "SamTransform",
    "UniFusionSam",
    "UniFusionSamConfig",
    "build_hf_sam",
    "build_sam",
    "list_presets",
    "load_preset",
    "load_sam_checkpoint",
    "make_backend",
    "wrap_sam",
]

"""UniFusion-SAM: reference-based segmentation on a frozen Segment Anything."""

from .backends import HFSamBackend, MetaSamBackend, SamBackend, make_backend
from .backends_sam2 import HFSam2Backend, MetaSam2Backend
from .batch import SamBatch, SamOutput
from .build import CUSTOM_SAMS, SAM_SIZES, SAM_SPECS, build_hf_sam, build_sam, load_sam_checkpoint
from .build_sam2 import SAM2_SPECS
from .config import LoraSettings, UniFusionSamConfig, list_presets, load_preset
from .model import UniFusionSam
from .transforms import Sam2Transform, SamTransform
from .wrap import wrap_sam

__all__ = [
    "CUSTOM_SAMS",
    "SAM2_SPECS",
    "SAM_SIZES",
    "SAM_SPECS",
    "HFSam2Backend",
    "HFSamBackend",
    "LoraSettings",
    "MetaSam2Backend",
    "MetaSamBackend",
    "SamBackend",
    "SamBatch",
    "SamOutput",
    "Sam2Transform",
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

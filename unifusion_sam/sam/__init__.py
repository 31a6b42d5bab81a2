"""UniFusion-SAM: reference-based segmentation on a frozen Segment Anything (a model family of the library).

Four concerns, one sub-package each:

- :mod:`.backends`: SAM's parts behind one interface, for Meta's SAM, ``transformers.SamModel`` and SAM 2;
- :mod:`.builders`: building SAMs (a dict registry of sizes, :mod:`.specs`), including the offline
  stand-in SAM (:mod:`.builders.stand_in`);
- :mod:`.adapter`: the adapter network, ``wrap_sam``, presets and checkpoints;
- :mod:`.training`: what the shared training run needs from this family (``SamTrainFamily``; imported
  on its own, so using a model never imports the training engine).

:mod:`.plugin` registers the family with the core (:mod:`unifusion_sam.families`).
"""

from .adapter import (
    LoraSettings,
    SamBatch,
    SamOutput,
    UniFusionSam,
    UniFusionSamConfig,
    list_presets,
    load_preset,
    wrap_sam,
)
from .backends import (
    HFSam2Backend,
    HFSamBackend,
    MetaSam2Backend,
    MetaSamBackend,
    Sam2Transform,
    SamBackend,
    SamTransform,
    make_backend,
)
from .builders import CUSTOM_SAMS, SAM_SIZES, build_hf_sam, build_sam, load_sam_checkpoint
from .specs import SAM2_SPECS, SAM_SPECS

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

"""The full UniRef++ model (ResNet-50 / Swin + two-stage Deformable DETR), a model family of the library that
shares UniFusion, the reference encoders and the inference code with UniFusion-SAM.

- :mod:`.modeling`: the network, its config and backbones; presets in ``uniref/presets/``;
- :mod:`.segmenter`: :class:`~.segmenter.UniRefSegmenter`, the network behind the shared inference contract
  (``predict`` / ``track``), and :func:`~.segmenter.build_uniref`;
- :mod:`.losses`: the authors' matching and losses; :mod:`.batch`: the training batch;
- :mod:`.checkpoint`, :mod:`.convert` (the authors' released checkpoints), :mod:`.reference_check`
  (``python -m unifusion_sam.uniref.reference_check DIR``: equality with the authors' code);
- :mod:`.training`: what the shared training run needs (imported on its own);
- :mod:`.plugin`: the family's registration with the core.
"""

from .modeling.config import UniRefConfig, list_uniref_presets, load_uniref_preset
from .modeling.model import FrameFeatures, UniRefModel
from .segmenter import UniRefSegmenter, build_uniref

__all__ = [
    "FrameFeatures",
    "UniRefConfig",
    "UniRefModel",
    "UniRefSegmenter",
    "build_uniref",
    "list_uniref_presets",
    "load_uniref_preset",
]

"""SAM's parts behind one interface, whatever the implementation and generation (:class:`~.base.SamBackend`).

SAM 1: Meta's ``segment_anything`` ``Sam`` and ``transformers.SamModel`` (:mod:`.sam1`); SAM 2: Meta's
``sam2`` ``SAM2Base`` and ``transformers.Sam2Model`` (:mod:`.sam2`); the high-resolution decoder maps SAM 2
feeds (:mod:`.high_res`); image and mask preprocessing (:mod:`.transforms`). :func:`make_backend` picks the
backend of a model.
"""

from __future__ import annotations

from torch import nn

from ..specs import sam_size_name
from .base import SamBackend
from .sam1 import HFSamBackend, MetaSamBackend
from .sam2 import HFSam2Backend, MetaSam2Backend, make_sam2_backend
from .transforms import Sam2Transform, SamTransform

__all__ = [
    "HFSam2Backend",
    "HFSamBackend",
    "MetaSam2Backend",
    "MetaSamBackend",
    "Sam2Transform",
    "SamBackend",
    "SamTransform",
    "make_backend",
    "sam_size_name",
]


def make_backend(model: nn.Module) -> SamBackend:
    """Pick the backend for a Meta ``Sam``, a ``transformers.SamModel``, a Meta ``sam2`` ``SAM2Base`` or a
    ``transformers.Sam2Model``; anything else is a TypeError."""
    try:
        from segment_anything.modeling import Sam
    except ImportError:  # pragma: no cover
        Sam = ()
    if isinstance(model, Sam):
        return MetaSamBackend(model)
    try:
        from transformers import SamModel
    except ImportError:  # pragma: no cover
        SamModel = ()
    if isinstance(model, SamModel):
        return HFSamBackend(model)
    sam2 = make_sam2_backend(model)
    if sam2 is not None:
        return sam2
    raise TypeError(
        "wrap_sam expects a segment_anything Sam (sam_model_registry[...]), a transformers.SamModel, a sam2 "
        f"SAM2Base (build_sam2(...)) or a transformers.Sam2Model, got {type(model).__name__}"
    )

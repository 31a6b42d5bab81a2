"""unifusion-sam: reference-based segmentation (text, few-shot masks, video masks) for Segment Anything.

    from unifusion_sam import build_sam, wrap_sam
    model = wrap_sam(build_sam("vit_b", checkpoint="sam_vit_b_01ec64.pth"))
    model.predict(image, text="the dog on the left")

    import unifusion_sam
    model = unifusion_sam.from_pretrained("outputs/default")   # a run folder, a checkpoint folder or a Hub id

Public names are handed out lazily (a module ``__getattr__``, as ``transformers`` does): ``import
unifusion_sam`` loads no model family, and ``from unifusion_sam import wrap_sam`` loads only the SAM
family. The package is a shared core (:mod:`.interface`, :mod:`.encoders`, :mod:`.fusion`,
:mod:`.inference`, :mod:`.metrics`, :mod:`.data`, :mod:`.training`, :mod:`.checkpoint`,
:mod:`.loading`) and model families that plug into it (:mod:`.sam`, :mod:`.uniref`).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .version import __version__  # noqa: F401 - public

# public name -> the module that defines it
_EXPORTS: dict[str, str] = {
    # configuration
    "JsonConfig": "unifusion_sam.config",
    # the shared reference encoders and fusion
    "MaskEncoderConfig": "unifusion_sam.encoders",
    "MaskReferenceEncoder": "unifusion_sam.encoders",
    "TextEncoderConfig": "unifusion_sam.encoders",
    "TextFeatures": "unifusion_sam.encoders",
    "TextReferenceEncoder": "unifusion_sam.encoders",
    "ReferenceTokens": "unifusion_sam.fusion",
    "UniFusion": "unifusion_sam.fusion",
    "UniFusionConfig": "unifusion_sam.fusion",
    "cross_attention": "unifusion_sam.fusion",
    # the contract and the shared inference
    "MaskReference": "unifusion_sam.interface",
    "ReferenceSegmenter": "unifusion_sam.interface",
    "EmbeddingCache": "unifusion_sam.inference",
    "FrameResult": "unifusion_sam.inference",
    "Prediction": "unifusion_sam.inference",
    "ReferencePredictor": "unifusion_sam.inference",
    "VideoSession": "unifusion_sam.inference",
    # loading any checkpoint, and the family registry
    "from_pretrained": "unifusion_sam.loading",
    "load_model": "unifusion_sam.loading",
    "ModelFamily": "unifusion_sam.families",
    "get_family": "unifusion_sam.families",
    "register_family": "unifusion_sam.families",
    # UniFusion-SAM
    "LoraSettings": "unifusion_sam.sam",
    "SamBatch": "unifusion_sam.sam",
    "SamOutput": "unifusion_sam.sam",
    "UniFusionSam": "unifusion_sam.sam",
    "UniFusionSamConfig": "unifusion_sam.sam",
    "build_hf_sam": "unifusion_sam.sam",
    "build_sam": "unifusion_sam.sam",
    "list_presets": "unifusion_sam.sam",
    "load_preset": "unifusion_sam.sam",
    "wrap_sam": "unifusion_sam.sam",
    # UniFusion-SAM on onnxruntime (the onnx extra)
    "OnnxSam": "unifusion_sam.sam.onnx",
    "export_onnx": "unifusion_sam.sam.onnx",
    "from_onnx": "unifusion_sam.sam.onnx",
    # the full UniRef++ model
    "UniRefConfig": "unifusion_sam.uniref",
    "UniRefSegmenter": "unifusion_sam.uniref",
    "build_uniref": "unifusion_sam.uniref",
}

__all__ = sorted([*_EXPORTS, "__version__"])


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'unifusion_sam' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # the next access skips this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})


if TYPE_CHECKING:  # for type checkers and IDEs; never executed
    from .config import JsonConfig  # noqa: F401
    from .encoders import MaskEncoderConfig, MaskReferenceEncoder, TextEncoderConfig, TextFeatures, TextReferenceEncoder  # noqa: F401
    from .families import ModelFamily, get_family, register_family  # noqa: F401
    from .fusion import ReferenceTokens, UniFusion, UniFusionConfig, cross_attention  # noqa: F401
    from .inference import EmbeddingCache, FrameResult, Prediction, ReferencePredictor, VideoSession  # noqa: F401
    from .interface import MaskReference, ReferenceSegmenter  # noqa: F401
    from .loading import from_pretrained, load_model  # noqa: F401
    from .sam import (  # noqa: F401
        LoraSettings,
        SamBatch,
        SamOutput,
        UniFusionSam,
        UniFusionSamConfig,
        build_hf_sam,
        build_sam,
        list_presets,
        load_preset,
        wrap_sam,
    )
    from .sam.onnx import OnnxSam, export_onnx, from_onnx  # noqa: F401
    from .uniref import UniRefConfig, UniRefSegmenter, build_uniref  # noqa: F401

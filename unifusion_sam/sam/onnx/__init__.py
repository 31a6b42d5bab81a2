"""ONNX export of UniFusion-SAM and an onnxruntime model behind the shared interface.

- :func:`export_onnx` (``model.export_onnx(out_dir)``, ``unifusion-sam export-onnx``): one graph per stage
  and ``export_config.json`` (:mod:`.spec`);
- :func:`from_onnx` (``unifusion_sam.from_onnx``, ``from_pretrained`` on an exported folder, ``--onnx DIR``):
  :class:`~.runtime.OnnxSam` on ``onnxruntime`` sessions.

Both need the ``onnx`` extra (``pip install 'unifusion-sam[onnx]'``); importing this package needs neither.
"""

from __future__ import annotations

from typing import Any

__all__ = ["OnnxSam", "export_onnx", "from_onnx"]


def __getattr__(name: str) -> Any:
    if name == "export_onnx":
        from .export import export_onnx

        return export_onnx
    if name in ("OnnxSam", "from_onnx"):
        from . import runtime

        return getattr(runtime, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

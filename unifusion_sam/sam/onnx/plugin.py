"""Exported UniFusion-SAM folders as a model family of the core (:mod:`unifusion_sam.families`; registered
through the ``unifusion_sam.families`` entry point ``sam_onnx``): ``from_pretrained``, ``--checkpoint`` and
``--onnx`` recognise a folder by its ``export_config.json`` and load it on onnxruntime."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ...families import FamilyOption, ModelFamily
from .spec import CONFIG_NAME


class SamOnnxFamily(ModelFamily):
    """UniFusion-SAM exported to ONNX (:class:`~.runtime.OnnxSam`). It builds nothing: export a model first."""

    name = "sam_onnx"
    title = "UniFusion-SAM ONNX export"
    config_name = CONFIG_NAME
    weights_name = "image.onnx"
    run_subdir = "onnx"
    supports_prompts = True
    runtime = "onnxruntime"
    options = (
        FamilyOption("--onnx-threads", "threads", "onnxruntime's intra-op threads (default: its own choice)", type=int),
    )

    def load(self, source: str, *, run_dir: Path | None = None, revision: str | None = None, device: Any = None,
             threads: int | None = None, opset: int | None = None, verify: bool = True, **hub_kwargs: Any):
        """The export in ``source`` (a folder, or a Hub repo id that holds one) on onnxruntime."""
        from .runtime import from_onnx

        folder = Path(source)
        if not folder.is_dir():
            from huggingface_hub import snapshot_download

            folder = Path(snapshot_download(str(source), revision=revision, **hub_kwargs))
        return from_onnx(folder, device=device, threads=threads, opset=opset, verify=verify)

    def build(self, preset: str | None = None, **options: Any):
        raise ValueError("an ONNX model is exported, not built: export a trained model with `unifusion-sam export-onnx "
                         "CHECKPOINT OUT_DIR` (or model.export_onnx(OUT_DIR)) and load OUT_DIR")

    def describe(self, model: Any, source: str | None) -> str:
        return f"UniFusion-SAM ONNX export `{source}` ({model.export_config['precision']}, {', '.join(model.providers)})"


FAMILY = SamOnnxFamily()

"""The full UniRef++ model as a model family of the core (:mod:`unifusion_sam.families`; registered through the
``unifusion_sam.families`` entry point ``uniref``).

Its checkpoints are model folders (``config.json`` + ``model.safetensors``, the text encoder's files beside
them); a training run writes one into ``<run>/model``. It needs nothing else to load, so it takes no
command-line options of its own; its untrained presets are ``uniref-*``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..checkpoint import check_inside
from ..families import ModelFamily
from .checkpoint import MODEL_CONFIG_NAME, MODEL_WEIGHTS_NAME
from .modeling.config import list_uniref_presets
from .segmenter import UniRefSegmenter, build_uniref


class UniRefFamily(ModelFamily):
    """The full UniRef++ model (see the module docstring)."""

    name = "uniref"
    title = "full UniRef++ model"
    config_name = MODEL_CONFIG_NAME
    weights_name = MODEL_WEIGHTS_NAME
    run_subdir = "model"

    def presets(self) -> list[str]:
        return list_uniref_presets()

    def load(self, source: str, *, run_dir: Path | None = None, revision: str | None = None,
             **kwargs: Any) -> UniRefSegmenter:
        if "sam" in kwargs:
            raise ValueError(f"{source} is a full UniRef++ model; it has its own backbone, so do not pass sam=")
        if run_dir is not None:  # a run folder's model must lie inside it (no symbolic link out of it)
            check_inside(source, run_dir, "run")
        return UniRefSegmenter.from_pretrained(source, revision=revision, **kwargs)

    def build(self, preset: str | None = None, **options: Any) -> UniRefSegmenter:
        if options:
            raise ValueError(f"an untrained UniRef++ model takes no options besides its preset, got {sorted(options)}")
        return build_uniref(preset)


FAMILY = UniRefFamily()

"""UniFusion-SAM as a model family of the core (:mod:`unifusion_sam.families`; registered through the
``unifusion_sam.families`` entry point ``sam``).

Its checkpoints are adapter folders (``adapter_config.json``); a training run writes one into
``<run>/adapter`` next to the stand-in SAM it trained on (``sam_<size>.safetensors``), which
:meth:`SamFamily.load` picks up when no SAM is given. Its command-line options say which SAM to wrap.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from torch import nn

from ..checkpoint import check_inside
from ..families import FamilyOption, ModelFamily
from .adapter import UniFusionSam, list_presets, wrap_sam
from .adapter.checkpoint import CONFIG_NAME, WEIGHTS_NAME
from .builders import SAM_SIZES
from .builders.options import build_sam_from_option


def _sam_model(sam: nn.Module | str | os.PathLike, sam_checkpoint=None, sam_size=None, sam_image_size=None) -> nn.Module:
    if isinstance(sam, nn.Module):
        if sam_checkpoint is not None or sam_size is not None or sam_image_size is not None:
            raise ValueError("sam_checkpoint / sam_size / sam_image_size describe a SAM given by name or weights path; "
                             "the SAM given is a model already")
        return sam
    if not isinstance(sam, (str, os.PathLike)):
        raise TypeError(f"sam must be a SAM model, a size name or a weights path, got {type(sam).__name__}")
    return build_sam_from_option(sam, sam_checkpoint=sam_checkpoint, sam_size=sam_size, sam_image_size=sam_image_size)


class SamFamily(ModelFamily):
    """UniFusion-SAM adapters around a frozen SAM (see the module docstring)."""

    name = "sam"
    title = "UniFusion-SAM adapter"
    config_name = CONFIG_NAME
    weights_name = WEIGHTS_NAME
    run_subdir = "adapter"
    supports_prompts = True
    options = (
        FamilyOption("--sam", "sam", "the SAM the adapter wraps: a size (vit_b, vit_l, vit_h, tiny, lite0, lite0_hr; SAM 2: "
                     "sam2_hiera_t/s/b+/l, sam2.1_hiera_*, sam2_tiny) or the path of a Meta SAM / SAM 2 .pth / .pt / "
                     ".safetensors (SAM 2 needs unifusion-sam[sam2]); a run folder's own SAM by default"),
        FamilyOption("--sam-checkpoint", "sam_checkpoint", "weights for a --sam size name, e.g. sam_vit_b_01ec64.pth or "
                     "sam2_hiera_tiny.pt", type=Path),
        FamilyOption("--sam-size", "sam_size", "size of the SAM weights given as a path (default: read from the weights)",
                     choices=tuple(sorted(SAM_SIZES))),
        FamilyOption("--sam-image-size", "sam_image_size", "SAM input resolution (default: the size's own: 1024, tiny 256)",
                     type=int),
    )

    def presets(self) -> list[str]:
        return list_presets()

    def describe(self, model: UniFusionSam, source: str | None) -> str:
        what = f"adapter `{source}`" if source is not None else "untrained adapter"
        return f"UniFusion-SAM: {what} on SAM `{model.config.sam_size}`"

    def load(self, source: str, *, run_dir: Path | None = None, revision: str | None = None,
             sam: nn.Module | str | os.PathLike | None = None, sam_checkpoint=None, sam_size=None, sam_image_size=None,
             **hub_kwargs: Any) -> UniFusionSam:
        """The adapter ``source`` on ``sam`` (a model, a size name or a weights path); from a run folder
        without ``sam``, the run's own ``sam_<size>.safetensors``."""
        if run_dir is not None:  # a run folder's parts must lie inside it (no symbolic link out of it)
            check_inside(source, run_dir, "run")
        if sam is None and run_dir is not None:
            weights = sorted(Path(run_dir).glob("sam_*.safetensors"))
            if len(weights) != 1:
                raise ValueError(f"run folder {run_dir} holds an adapter but not exactly one sam_<size>.safetensors "
                                 f"(found {[w.name for w in weights]}); give the SAM it was trained on "
                                 "(sam=build_sam(...) in Python, --sam on the command line)")
            sam = str(check_inside(weights[0], run_dir, "run"))
        if sam is None:
            raise TypeError(f"{source} is a UniFusion-SAM adapter: give the SAM it was trained on "
                            "(from_pretrained(path_or_id, sam=build_sam(...)) in Python, --sam on the command line)")
        model = _sam_model(sam, sam_checkpoint, sam_size, sam_image_size)
        return UniFusionSam.from_pretrained(source, sam=model, revision=revision, **hub_kwargs)

    def build(self, preset: str | None = None, *, sam: nn.Module | str | os.PathLike | None = None,
              sam_checkpoint=None, sam_size=None, sam_image_size=None) -> UniFusionSam:
        """An untrained adapter (``preset``, default: the one matching the SAM) on ``sam``."""
        if sam is None:
            raise ValueError("an untrained UniFusion-SAM adapter needs the SAM it wraps: sam=build_sam(...) in Python, "
                             "--sam SIZE_OR_WEIGHTS on the command line (--sam tiny: a small random SAM to try things)")
        return wrap_sam(_sam_model(sam, sam_checkpoint, sam_size, sam_image_size), adapter=preset)


FAMILY = SamFamily()

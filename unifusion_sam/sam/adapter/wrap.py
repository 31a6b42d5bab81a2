"""``wrap_sam``: turn a Segment Anything model into a UniFusion-SAM adapter model."""

from __future__ import annotations

from typing import Any

from torch import nn

from ..backends import make_backend, sam_size_name
from ..builders import SAM_SIZES
from ..specs import SAM2_SPECS
from .config import UniFusionSamConfig, load_preset, merge_overrides
from .model import UniFusionSam


def default_preset_for(model: nn.Module) -> str:
    """The preset matching the SAM's image encoder (``sam-vit-b`` for a 768-wide ViT, ``sam-tiny`` for 192,
    ``sam-lite0`` for the EfficientNet-Lite0 stand-in, ``sam2-hiera-tiny`` for SAM 2's Hiera-T ...);
    ``sam-vit-b`` (SAM 2: ``sam2-hiera-base-plus``) for an unknown encoder."""
    backend = make_backend(model)
    name = sam_size_name(backend)
    if name in SAM2_SPECS:
        return SAM2_SPECS[name].preset
    if backend.size_name() is not None:  # a SAM 2 of no registered size
        return SAM2_SPECS["sam2_hiera_b+"].preset
    return "sam-" + name.replace("_", "-") if name in SAM_SIZES else "sam-vit-b"


def wrap_sam(model: nn.Module, adapter: str | UniFusionSamConfig | None = None, **overrides: Any) -> UniFusionSam:
    """Wrap a Meta ``segment_anything`` ``Sam`` (any size), a ``transformers.SamModel``, a Meta ``sam2``
    ``SAM2Base`` (hiera tiny / small / base+ / large, any input size) or a ``transformers.Sam2Model``.

    ``adapter``: a preset name from ``adapters/`` (e.g. ``"sam-vit-b"``, ``"sam-vit-h-lora"``,
    ``"sam2-hiera-tiny"``), a :class:`UniFusionSamConfig`, or ``None`` for the preset matching the model's
    size. ``overrides``
    replace top-level config fields; nested sections take dicts of the keys to change, e.g.
    ``wrap_sam(sam, lora={"enabled": True}, fusion={"head_dim": 64})``.

    The SAM's image and prompt encoders are frozen (``requires_grad=False``); its weights are not
    copied. With no reference given, the wrapped model predicts exactly like SAM. LoRA (when enabled)
    is injected into the given SAM in place, so each wrapped model needs its own SAM. The model is
    returned in eval mode (call ``.train()`` to train it), on the SAM's device.
    """
    backend = make_backend(model)
    if any("lora_" in name for name, _ in backend.image_encoder.named_parameters()):
        raise ValueError(
            "this SAM already carries LoRA layers from an earlier wrap_sam; wrapping it again would reset or "
            "orphan them. Build a fresh SAM (e.g. build_sam(...) / sam_model_registry[...]) for each wrapped model"
        )
    if adapter is None:
        adapter = default_preset_for(model)
    if isinstance(adapter, str):
        config = load_preset(adapter)
    elif isinstance(adapter, UniFusionSamConfig):
        config = adapter
    else:
        raise TypeError(f"adapter must be a preset name, a UniFusionSamConfig or None, got {type(adapter).__name__}")
    # A preset's reference size is relative to its SAM input (the vit presets: half of 1024); keep the
    # ratio when the SAM runs at another resolution (e.g. 256 for a vit_b built at 512).
    if isinstance(adapter, str) and config.mask.input_size and config.image_size != backend.image_size:
        scaled = max(16, round(config.mask.input_size * backend.image_size / config.image_size))
        config = merge_overrides(config, {"mask": {"input_size": scaled}})
    # The adapter records the SAM it wraps: implementation, size name and input resolution.
    config = merge_overrides(
        config, {"sam_family": backend.family, "sam_size": sam_size_name(backend), "image_size": backend.image_size}
    )
    if overrides:
        config = merge_overrides(config, overrides)
    return UniFusionSam(model, config).eval()

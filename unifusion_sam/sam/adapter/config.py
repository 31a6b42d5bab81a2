"""Adapter configuration of UniFusion-SAM and its presets (JSON files in the top-level ``adapters/`` folder,
shipped in the wheel as ``unifusion_sam/adapters``).

An adapter config says which SAM it was made for, the fusion width and heads, which parts train,
LoRA on/off with its rank and targets, and the text encoder. It is saved next to the adapter weights
as ``adapter_config.json``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...config import (
    MAX_SIDE,
    MAX_WIDTH,
    JsonConfig,
    check_choice,
    check_positive_int,
    check_probability,
    load_preset_file,
    preset_names,
)
from ...encoders.mask import MaskEncoderConfig
from ...encoders.text import TextEncoderConfig
from ...fusion.unifusion import UniFusionConfig

# SAM 1: Meta segment_anything / transformers.SamModel; SAM 2: Meta sam2 / transformers.Sam2Model
SAM_FAMILIES = ("meta", "hf", "meta_sam2", "hf_sam2")
LORA_TARGETS = ("qkv", "proj")


@dataclass
class LoraSettings(JsonConfig):
    """LoRA on the image encoder's attention layers (``qkv``, optionally ``proj``), through ``peft``."""

    enabled: bool = False
    r: int = 8
    alpha: int = 16
    dropout: float = 0.0
    targets: tuple[str, ...] = ("qkv",)

    def __post_init__(self) -> None:
        if not isinstance(self.enabled, bool):
            raise TypeError(f"lora.enabled must be a bool, got {self.enabled!r}")
        check_positive_int("lora.r", self.r, MAX_WIDTH)
        check_positive_int("lora.alpha", self.alpha)
        check_probability("lora.dropout", self.dropout)
        if not isinstance(self.targets, (list, tuple)):
            raise TypeError(f"lora.targets must be a list of {list(LORA_TARGETS)}, got {self.targets!r}")
        self.targets = tuple(self.targets)
        if not self.targets or any(t not in LORA_TARGETS for t in self.targets):
            raise ValueError(f"lora.targets must be a non-empty subset of {list(LORA_TARGETS)}, got {list(self.targets)}")


@dataclass
class UniFusionSamConfig(JsonConfig):
    """Everything that defines a UniFusion-SAM adapter.

    - ``sam_family``/``sam_size``/``image_size``: the SAM this adapter belongs to (checked when wrapping).
    - ``fusion``: UniFusion (its ``dim`` must equal SAM's embedding width, 256).
    - ``text``: the text encoder, or ``None`` for an adapter without language references.
    - ``mask``: the mask reference encoder (stride 16, fused with the SAM embedding).
    - ``train_mask_decoder``: whether SAM's mask decoder trains (its weights are then part of the adapter).
    - ``lora``: LoRA on the image encoder.
    - ``reference_pool``: mask references as tokens on SAM's grid average-pooled by this factor (keys:
      the pooled reference embedding, values: the mask encoder's fusion blocks run on that grid; the
      locality prior's keys get the pooled positional encoding). 1 keeps the full grid; 2 turns a
      64 x 64 embedding (input 1024) into 32 x 32 tokens per reference, the count SAM at input 512 has,
      at a quarter of the fusion blocks' and UniFusion's mask-branch cost (the SAM 2 presets).
    - ``text_point``: a sentence also becomes a point prompt at the location it names (a soft arg-max
      over the language-fused embedding, :mod:`unifusion_sam.sam.adapter.grounding`), so the decoder can tell
      one of several look-alikes from the others. Not in the paper; needs ``text``.
    """

    sam_family: str = "meta"
    sam_size: str = "vit_b"
    image_size: int = 1024
    fusion: UniFusionConfig = field(default_factory=UniFusionConfig)
    text: TextEncoderConfig | None = field(default_factory=TextEncoderConfig)
    mask: MaskEncoderConfig = field(default_factory=lambda: MaskEncoderConfig(strides=(16,), input_size=512))
    train_mask_decoder: bool = True
    lora: LoraSettings = field(default_factory=LoraSettings)
    reference_pool: int = 1
    text_point: bool = False

    def __post_init__(self) -> None:
        check_choice("sam_family", self.sam_family, SAM_FAMILIES)
        if not isinstance(self.sam_size, str) or not self.sam_size:
            raise ValueError(f"sam_size must be a non-empty string, got {self.sam_size!r}")
        check_positive_int("image_size", self.image_size, MAX_SIDE)
        self.coerce_sections({"fusion": UniFusionConfig, "mask": MaskEncoderConfig, "lora": LoraSettings,
                              "text": TextEncoderConfig}, optional=("text",))
        if self.fusion.dim != 256:
            raise ValueError(f"fusion.dim must equal SAM's embedding width 256, got {self.fusion.dim}")
        if self.mask.strides != (16,):
            raise ValueError(f"the SAM mask encoder uses stride 16 only, got strides {self.mask.strides}")
        if self.mask.dim != self.fusion.dim or self.mask.visual_dim != self.fusion.dim:
            raise ValueError(f"mask.dim and mask.visual_dim must equal fusion.dim {self.fusion.dim}, got "
                             f"{self.mask.dim} and {self.mask.visual_dim}")
        if self.text is not None and self.text.dim != self.fusion.dim:
            raise ValueError(f"text.dim must equal fusion.dim {self.fusion.dim}, got {self.text.dim}")
        if not isinstance(self.train_mask_decoder, bool):
            raise TypeError(f"train_mask_decoder must be a bool, got {self.train_mask_decoder!r}")
        check_positive_int("reference_pool", self.reference_pool, 64)
        if not isinstance(self.text_point, bool):
            raise TypeError(f"text_point must be a bool, got {self.text_point!r}")
        if self.text_point and self.text is None:
            raise ValueError("text_point needs a text encoder (text is None)")
        if (self.image_size // 16) % self.reference_pool:
            raise ValueError(f"reference_pool {self.reference_pool} must divide the {self.image_size // 16} x "
                             f"{self.image_size // 16} embedding grid of image_size {self.image_size}")


# --------------------------------------------------------------------------------------- presets
PRESET_PREFIXES = ("sam-", "sam2-")  # SAM 1 and SAM 2 adapters


def preset_dirs() -> list[Path]:
    """Folders holding the adapter presets: ``adapters/`` of a source checkout (an editable install) and the
    installed wheel's ``unifusion_sam/adapters``."""
    from importlib import resources

    dirs = [Path(__file__).resolve().parents[3] / "adapters"]
    try:
        dirs.append(Path(str(resources.files("unifusion_sam") / "adapters")))
    except (ModuleNotFoundError, TypeError):  # pragma: no cover
        pass
    return [d for d in dirs if d.is_dir()]


def list_presets() -> list[str]:
    """Names of the UniFusion-SAM adapter presets (``sam-*`` and ``sam2-*`` JSON files in ``adapters/``)."""
    return sorted(n for prefix in PRESET_PREFIXES for n in preset_names(preset_dirs(), prefix))


def load_preset(name: str) -> UniFusionSamConfig:
    """Load the adapter preset ``name`` (e.g. ``"sam-vit-b"``, ``"sam-tiny"``, ``"sam-vit-h-lora"``,
    ``"sam2-hiera-tiny"``)."""
    if name not in list_presets():
        raise ValueError(f"unknown adapter preset {name!r}; available: {list_presets()}")
    return load_preset_file(preset_dirs(), name, UniFusionSamConfig, "adapter")


def merge_overrides(config: UniFusionSamConfig, overrides: dict[str, Any]) -> UniFusionSamConfig:
    """Apply keyword overrides; nested sections take dicts that update only the keys they name.

    ``merge_overrides(cfg, {"lora": {"enabled": True}, "fusion": {"head_dim": 256}, "text": None})``
    """
    data = config.to_dict()
    for key, value in overrides.items():
        if key not in data:
            raise ValueError(f"unknown adapter option {key!r}; valid options: {sorted(data)}")
        if isinstance(value, JsonConfig):
            value = value.to_dict()
        if isinstance(value, dict) and isinstance(data[key], dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return UniFusionSamConfig.from_dict(data)

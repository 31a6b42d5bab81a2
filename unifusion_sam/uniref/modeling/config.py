"""Configuration of the full UniRef++ model and its presets (``uniref-*`` JSON files in ``uniref/presets/``).

A :class:`UniRefConfig` fixes the architecture (backbone, widths, depths, queries, heads), the shared
reference-side parts (UniFusion, text encoder, mask encoder) and the inference protocol (test-time
resize per task, NMS threshold, mask threshold). It is saved as ``config.json`` next to the weights.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ...config import JsonConfig, check_choice, check_positive_int, check_probability, load_preset_file, preset_names
from ...encoders.mask import MaskEncoderConfig
from ...encoders.text import TextEncoderConfig
from ...fusion.unifusion import UniFusionConfig
from .backbones import BACKBONES

# the full model's presets live with the family: unifusion_sam/uniref/presets/uniref-*.json
PRESET_DIRS = [Path(__file__).resolve().parents[1] / "presets"]

MODEL_TYPE = "uniref"
DEFORMABLE_BACKENDS = ("pytorch", "transformers")
IMAGENET_PIXEL_MEAN = (123.675, 116.28, 103.53)
IMAGENET_PIXEL_STD = (58.395, 57.12, 57.375)


def _authors_fusion() -> UniFusionConfig:
    return UniFusionConfig(dim=256, num_heads=8, head_dim=256, match_logit=0.0, modulation_order="shift_scale_gate",
                           attn_dropout=0.1)


def _authors_text() -> TextEncoderConfig:
    return TextEncoderConfig(model_name_or_path="bert-base-uncased", max_length=77, dim=256, dropout=0.1,
                             trainable=False, layer_norm_eps=1e-12, padding="max_length")


def _authors_mask() -> MaskEncoderConfig:
    return MaskEncoderConfig(dim=256, visual_dim=256, strides=(8, 16, 32, 64), mask_channel=False, conv_bias=True,
                             shortcut_kernel=3, stride64_norm=True)


@dataclass
class TaskSizes(JsonConfig):
    """Test-time ``ResizeShortestEdge(min_size, max_size)`` of one task (detectron2's rule)."""

    min_size: int = 800
    max_size: int = 1333

    def __post_init__(self) -> None:
        check_positive_int("min_size", self.min_size)
        check_positive_int("max_size", self.max_size)


@dataclass
class UniRefConfig(JsonConfig):
    """Everything that defines a full UniRef++ model (defaults: the authors' UniRef++-R50).

    - ``backbone``: a name from :data:`~unifusion_sam.uniref.modeling.backbones.BACKBONES` (``resnet50``,
      ``swin_l``, ``lite0`` for the small preset, ``resnet18`` ...); strides 4/8/16/32 (res2..res5).
    - ``hidden_dim``/``num_heads``/``ffn_dim``/``enc_layers``/``dec_layers``/``enc_points``/``dec_points``:
      the two-stage Deformable-DETR transformer; ``num_queries`` = the number of proposals kept.
    - ``mask_dim``: channels of the stride-4 mask features (hidden_dim // 32 in the authors' model);
      ``dynamic_channels``: width of the dynamic mask head's hidden 1x1 convolutions.
    - ``iou_branch``: per-layer box-IoU heads (``USE_IOU_BRANCH``; off in every released model).
    - ``deformable_backend``: ``"pytorch"`` (this library's reference implementation) or
      ``"transformers"`` (transformers' ``MultiScaleDeformableAttention``, which its ``kernels``
      integration can swap for a CUDA kernel); both compute the same function.
    - ``fusion``, ``text`` (``None``: no language references), ``mask``: the shared reference side.
    - ``image_sizes``/``fss_sizes``/``video_sizes``: test-time resize for RIS / few-shot / video.
    - ``nms_threshold``: IoU of the NMS before the top-1 choice (RIS, FSS); ``mask_threshold`` on
      probabilities.
    """

    model_type: str = MODEL_TYPE
    backbone: str = "resnet50"
    hidden_dim: int = 256
    num_heads: int = 8
    ffn_dim: int = 2048
    enc_layers: int = 6
    dec_layers: int = 6
    enc_points: int = 4
    dec_points: int = 4
    num_queries: int = 300
    num_classes: int = 1
    dropout: float = 0.0
    mask_dim: int = 8
    dynamic_channels: int = 8
    iou_branch: bool = False
    deformable_backend: str = "pytorch"
    fusion: UniFusionConfig = field(default_factory=_authors_fusion)
    text: TextEncoderConfig | None = field(default_factory=_authors_text)
    mask: MaskEncoderConfig = field(default_factory=_authors_mask)
    pixel_mean: tuple[float, float, float] = IMAGENET_PIXEL_MEAN
    pixel_std: tuple[float, float, float] = IMAGENET_PIXEL_STD
    size_divisibility: int = 32
    image_sizes: TaskSizes = field(default_factory=lambda: TaskSizes(800, 1333))
    fss_sizes: TaskSizes = field(default_factory=lambda: TaskSizes(480, 768))
    video_sizes: TaskSizes = field(default_factory=lambda: TaskSizes(480, 1333))
    nms_threshold: float = 0.7
    mask_threshold: float = 0.5

    def __post_init__(self) -> None:
        if self.model_type != MODEL_TYPE:
            raise ValueError(f"model_type must be {MODEL_TYPE!r}, got {self.model_type!r}")
        check_choice("backbone", self.backbone, sorted(BACKBONES))
        for name in ("hidden_dim", "num_heads", "ffn_dim", "enc_layers", "dec_layers", "enc_points", "dec_points",
                     "num_queries", "num_classes", "mask_dim", "dynamic_channels", "size_divisibility"):
            check_positive_int(name, getattr(self, name))
        if self.hidden_dim % self.num_heads:
            raise ValueError(f"hidden_dim {self.hidden_dim} must be divisible by num_heads {self.num_heads}")
        if self.hidden_dim % 4:
            raise ValueError(f"hidden_dim must be divisible by 4 (the mask branch), got {self.hidden_dim}")
        check_probability("dropout", self.dropout)
        check_probability("nms_threshold", self.nms_threshold)
        check_probability("mask_threshold", self.mask_threshold)
        check_choice("deformable_backend", self.deformable_backend, DEFORMABLE_BACKENDS)
        if not isinstance(self.iou_branch, bool):
            raise TypeError(f"iou_branch must be a bool, got {self.iou_branch!r}")
        self.coerce_sections({"fusion": UniFusionConfig, "mask": MaskEncoderConfig, "text": TextEncoderConfig,
                              "image_sizes": TaskSizes, "fss_sizes": TaskSizes, "video_sizes": TaskSizes},
                             optional=("text",))
        for name in ("pixel_mean", "pixel_std"):
            try:
                value = tuple(float(v) for v in getattr(self, name))
            except (TypeError, ValueError):
                raise TypeError(f"{name} must be 3 numbers (RGB), got {getattr(self, name)!r}") from None
            if len(value) != 3:
                raise ValueError(f"{name} must have 3 values (RGB), got {value}")
            setattr(self, name, value)
        c = self.hidden_dim
        if self.fusion.dim != c:
            raise ValueError(f"fusion.dim must equal hidden_dim {c}, got {self.fusion.dim}")
        if self.mask.dim != c or self.mask.visual_dim != c:
            raise ValueError(f"mask.dim and mask.visual_dim must equal hidden_dim {c}, got {self.mask.dim} and "
                             f"{self.mask.visual_dim}")
        if self.fusion.lang_pos:
            raise ValueError("fusion.lang_pos is a UniFusion-SAM option; the full UniRef++ model keeps the authors' "
                             "fusion (its deformable encoder adds positions itself)")
        if self.mask.strides != (8, 16, 32, 64):
            raise ValueError(f"the full model's mask encoder uses strides (8, 16, 32, 64), got {self.mask.strides}")
        if self.text is not None and self.text.dim != c:
            raise ValueError(f"text.dim must equal hidden_dim {c}, got {self.text.dim}")

    @property
    def num_dynamic_params(self) -> int:
        """Parameters the controller generates per query: three 1x1 convolutions, weights then biases."""
        d = self.dynamic_channels
        return (self.mask_dim + 2) * d + d * d + d + d + d + 1


def list_uniref_presets() -> list[str]:
    """Names of the full-model presets (``uniref-*`` JSON files in ``unifusion_sam/uniref/presets/``)."""
    return preset_names(PRESET_DIRS, "uniref-")


def load_uniref_preset(name: str) -> UniRefConfig:
    """Load the preset ``name`` (``"uniref-r50"``, ``"uniref-swin-l"``, ``"uniref-small"``)."""
    return load_preset_file(PRESET_DIRS, name, UniRefConfig, "UniRef++")

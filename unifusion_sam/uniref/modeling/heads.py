"""Mask side of UniRef++: stride-4 mask features and the CondInst-style dynamic mask head.

:class:`MaskFeatures` turns the encoder memory of the three finest levels (strides 8, 16, 32) into
``mask_dim`` channels at stride 8 (3x3 convolutions with nearest upsampling, FPN-style, as the
authors' ``MaskHeadSmallConv``), adds a lateral 1x1 projection of the backbone's stride-4 feature,
and finishes with a 3x3 and a 1x1 convolution: ``[B, mask_dim, H/4, W/4]``.

:func:`dynamic_masks` runs, for every query, three 1x1 convolutions whose weights the controller
generated from the query (CondInst): input channels are the query's relative coordinates in pixels
``(ref_x - x, ref_y - y)`` followed by the mask features; parameters are split weights-first
(``w0 [D x (mask_dim + 2)], w1 [D x D], w2 [1 x D], b0 [D], b1 [D], b2 [1]``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .layers import grid_locations


class MaskFeatures(nn.Module):
    """``forward(memory_levels, res2) -> [B, mask_dim, H/4, W/4]``; ``memory_levels`` = encoder memory at
    strides 8, 16, 32 as maps ``[B, C, h_l, w_l]``, ``res2`` the backbone's stride-4 feature ``[B or 1, ...]``
    (one image's broadcasts over the B rows)."""

    def __init__(self, dim: int, res2_channels: int, mask_dim: int) -> None:
        super().__init__()
        self.conv32 = nn.Conv2d(dim, dim, 3, padding=1)
        self.conv16 = nn.Conv2d(dim, dim, 3, padding=1)
        self.conv8 = nn.Conv2d(dim, dim, 3, padding=1)
        self.reduce1 = nn.Conv2d(dim, dim // 4, 3, padding=1)
        self.reduce2 = nn.Conv2d(dim // 4, mask_dim, 3, padding=1)
        self.lateral = nn.Conv2d(res2_channels, mask_dim, 1)
        self.output = nn.Conv2d(mask_dim, mask_dim, 3, padding=1)
        self.project = nn.Conv2d(mask_dim, mask_dim, 1)
        for conv in (self.conv32, self.conv16, self.conv8, self.reduce1, self.reduce2):
            nn.init.kaiming_uniform_(conv.weight, a=1)
            nn.init.zeros_(conv.bias)
        for conv in (self.lateral, self.output):  # detectron2's c2_xavier_fill
            nn.init.kaiming_uniform_(conv.weight, a=1)
            nn.init.zeros_(conv.bias)

    def fpn(self, levels: list[torch.Tensor]) -> torch.Tensor:
        """The stride-8 part (the authors' ``MaskHeadSmallConv``): ``[B, mask_dim, H/8, W/8]``."""
        x = F.relu(self.conv32(levels[2]))
        x = F.relu(self.conv16(levels[1] + F.interpolate(x, size=levels[1].shape[-2:], mode="nearest")))
        x = F.relu(self.conv8(levels[0] + F.interpolate(x, size=levels[0].shape[-2:], mode="nearest")))
        x = F.relu(self.reduce1(x))
        return F.relu(self.reduce2(x))

    def forward(self, levels: list[torch.Tensor], res2: torch.Tensor) -> torch.Tensor:
        coarse = self.fpn(levels)
        lateral = self.lateral(res2)
        x = lateral + F.interpolate(coarse, size=lateral.shape[-2:], mode="bilinear", align_corners=False)
        return self.project(F.relu(self.output(x)))


def split_dynamic_params(params: torch.Tensor, in_channels: int, channels: int) -> tuple[list, list]:
    """``[N, P]`` generated parameters -> (weights, biases) of three grouped 1x1 convolutions."""
    n = params.shape[0]
    w_sizes = [(in_channels + 2) * channels, channels * channels, channels]
    b_sizes = [channels, channels, 1]
    parts = torch.split_with_sizes(params, w_sizes + b_sizes, dim=1)
    weights = [parts[0].reshape(n * channels, -1, 1, 1), parts[1].reshape(n * channels, -1, 1, 1),
               parts[2].reshape(n, -1, 1, 1)]
    biases = [parts[3].reshape(n * channels), parts[4].reshape(n * channels), parts[5].reshape(n)]
    return weights, biases


def dynamic_masks(
    features: torch.Tensor, owner: torch.Tensor, centres: torch.Tensor, params: torch.Tensor, channels: int,
    stride: int = 4,
) -> torch.Tensor:
    """Mask logits ``[N, h, w]`` at the features' resolution for ``N`` queries.

    ``features`` ``[B, mask_dim, h, w]``; ``owner`` ``[N]`` which image each query belongs to; ``centres``
    ``[N, 2]`` the query's reference point in pixels of the unpadded image (x, y); ``params`` ``[N, P]``.
    """
    b, c, h, w = features.shape
    n = params.shape[0]
    if n == 0:
        return features.new_zeros(0, h, w) + params.sum() * 0.0
    locations = grid_locations(h, w, stride, features.device)  # [h*w, 2]
    rel = (centres[:, None, :] - locations[None]).permute(0, 2, 1)  # [N, 2, h*w]
    inputs = torch.cat([rel, features.flatten(2)[owner]], dim=1).reshape(1, -1, h, w)  # [1, N*(c+2), h, w]
    weights, biases = split_dynamic_params(params, c, channels)
    x = inputs
    for i, (wt, bs) in enumerate(zip(weights, biases)):
        x = F.conv2d(x, wt, bias=bs, groups=n)
        if i < 2:
            x = F.relu(x)
    return x.reshape(n, h, w)

"""Small convolutional blocks of the mask reference encoder: ResBlock and CBAM."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ResBlock(nn.Module):
    """Pre-activation residual block ``[B, Cin, h, w] -> [B, Cout, h, w]``; when the widths differ the
    shortcut is a ``shortcut_kernel`` x ``shortcut_kernel`` convolution (1 here, 3 in the authors' code)."""

    def __init__(self, in_dim: int, out_dim: int, shortcut_kernel: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_dim, out_dim, kernel_size=3, padding=1)
        self.conv2 = nn.Conv2d(out_dim, out_dim, kernel_size=3, padding=1)
        self.shortcut = nn.Identity() if in_dim == out_dim else nn.Conv2d(
            in_dim, out_dim, kernel_size=shortcut_kernel, padding=shortcut_kernel // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = self.conv1(F.relu(x))
        r = self.conv2(F.relu(r))
        return self.shortcut(x) + r


class CBAM(nn.Module):
    """Convolutional block attention: channel gate (avg+max pool, shared MLP with reduction 16) then a
    spatial gate (7x7 conv on the channel-wise [max, mean]). ``[B, C, h, w] -> [B, C, h, w]``."""

    def __init__(self, dim: int, reduction: int = 16, kernel_size: int = 7) -> None:
        super().__init__()
        hidden = max(dim // reduction, 1)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, dim))
        self.spatial = nn.Conv2d(2, 1, kernel_size=kernel_size, padding=kernel_size // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        channel = self.mlp(x.mean(dim=(2, 3))) + self.mlp(x.amax(dim=(2, 3)))  # [B, C]
        x = x * torch.sigmoid(channel)[:, :, None, None]
        pooled = torch.cat([x.amax(dim=1, keepdim=True), x.mean(dim=1, keepdim=True)], dim=1)  # [B, 2, h, w]
        return x * torch.sigmoid(self.spatial(pooled))


class LevelFuser(nn.Module):
    """Fuse a mask-encoder feature with the reference frame's visual feature of the same level:
    concat -> ResBlock -> x + CBAM(x) -> ResBlock, giving ``[B, C, h, w]``."""

    def __init__(self, mask_dim: int, visual_dim: int, dim: int, shortcut_kernel: int = 1) -> None:
        super().__init__()
        self.block1 = ResBlock(mask_dim + visual_dim, dim, shortcut_kernel)
        self.attention = CBAM(dim)
        self.block2 = ResBlock(dim, dim)

    def forward(self, mask_feature: torch.Tensor, visual_feature: torch.Tensor) -> torch.Tensor:
        x = self.block1(torch.cat([mask_feature, visual_feature], dim=1))
        x = x + self.attention(x)
        return self.block2(x)

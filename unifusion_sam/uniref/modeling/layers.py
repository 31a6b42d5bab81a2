"""Small building blocks of the full UniRef++ model (Deformable-DETR conventions)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class MLP(nn.Module):
    """``num_layers`` Linear layers with ReLU between them: ``[..., in] -> [..., out]``."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, num_layers: int) -> None:
        super().__init__()
        dims = [in_dim] + [hidden_dim] * (num_layers - 1)
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims, dims[1:] + [out_dim]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        return x


def inverse_sigmoid(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """``log(x / (1 - x))`` with both clamped to ``>= eps`` (Deformable DETR's rule)."""
    x = x.clamp(min=0, max=1)
    return torch.log(x.clamp(min=eps) / (1 - x).clamp(min=eps))


def sine_position_embedding(padding: torch.Tensor, num_feats: int = 128, temperature: float = 10000.0) -> torch.Tensor:
    """DETR's normalised sine encoding of a padded grid: ``padding`` ``[B, h, w]`` bool (True = pad) ->
    ``[B, 2 * num_feats, h, w]`` (y features first). Coordinates count valid cells only and are
    normalised to ``(0, 2 pi]`` over the valid extent, as in the authors' ``PositionEmbeddingSine``."""
    valid = ~padding
    y = valid.cumsum(1, dtype=torch.float32)
    x = valid.cumsum(2, dtype=torch.float32)
    eps, scale = 1e-6, 2 * math.pi
    y = (y - 0.5) / (y[:, -1:, :] + eps) * scale
    x = (x - 0.5) / (x[:, :, -1:] + eps) * scale
    dim_t = torch.arange(num_feats, dtype=torch.float32, device=padding.device)
    dim_t = temperature ** (2 * (dim_t // 2) / num_feats)
    px = x[:, :, :, None] / dim_t
    py = y[:, :, :, None] / dim_t
    px = torch.stack((px[:, :, :, 0::2].sin(), px[:, :, :, 1::2].cos()), dim=4).flatten(3)
    py = torch.stack((py[:, :, :, 0::2].sin(), py[:, :, :, 1::2].cos()), dim=4).flatten(3)
    return torch.cat((py, px), dim=3).permute(0, 3, 1, 2)


def proposal_position_embedding(boxes_unact: torch.Tensor, num_feats: int = 128, temperature: float = 10000.0) -> torch.Tensor:
    """Sine encoding of unactivated boxes ``[B, Q, 4]`` -> ``[B, Q, 4 * num_feats]`` (two-stage queries)."""
    dim_t = torch.arange(num_feats, dtype=torch.float32, device=boxes_unact.device)
    dim_t = temperature ** (2 * (dim_t // 2) / num_feats)
    pos = boxes_unact.sigmoid() * (2 * math.pi)
    pos = pos[:, :, :, None] / dim_t
    return torch.stack((pos[:, :, :, 0::2].sin(), pos[:, :, :, 1::2].cos()), dim=4).flatten(2)


def resize_padding(padding: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Nearest resize of a ``[B, H, W]`` bool padding mask to ``size`` (detectron2 / DETR rule)."""
    return F.interpolate(padding[None].float(), size=size).to(torch.bool)[0]


def aligned_bilinear(x: torch.Tensor, factor: int) -> torch.Tensor:
    """CondInst's aligned bilinear upsampling of ``[B, C, h, w]`` by an integer ``factor``."""
    if factor == 1:
        return x
    h, w = x.shape[-2:]
    x = F.pad(x, pad=(0, 1, 0, 1), mode="replicate")
    x = F.interpolate(x, size=(factor * h + 1, factor * w + 1), mode="bilinear", align_corners=True)
    x = F.pad(x, pad=(factor // 2, 0, factor // 2, 0), mode="replicate")
    return x[:, :, : factor * h, : factor * w]


def grid_locations(h: int, w: int, stride: int, device: torch.device) -> torch.Tensor:
    """Pixel centres ``[h * w, 2]`` (x, y) of a stride-``stride`` grid: ``(i * stride + stride // 2)``."""
    xs = torch.arange(0, w * stride, step=stride, dtype=torch.float32, device=device)
    ys = torch.arange(0, h * stride, step=stride, dtype=torch.float32, device=device)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack((gx.reshape(-1), gy.reshape(-1)), dim=1) + stride // 2

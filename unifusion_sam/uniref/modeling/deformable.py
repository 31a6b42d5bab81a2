"""Multi-scale deformable attention (Deformable DETR), with two interchangeable backends.

``"pytorch"`` is this library's reference implementation: each level is sampled bilinearly at
``(x * W - 0.5, y * H - 0.5)`` with zeros outside (``grid_sample(2 * loc - 1, align_corners=False)``,
the same function as the authors' CUDA kernel), weighted by the softmax over levels x points per
head, and summed. ``"transformers"`` calls transformers' ``MultiScaleDeformableAttention``, the same
function, which transformers' ``kernels`` integration can replace with a compiled CUDA kernel
(``kernelize``); :func:`ms_deform_attn` dispatches between them.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

BACKENDS = ("pytorch", "transformers")


def ms_deform_attn_pytorch(
    value: torch.Tensor, shapes: list[tuple[int, int]], locations: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """``value`` ``[B, S, M, D]``, ``locations`` ``[B, Q, M, L, P, 2]`` in [0, 1] (x, y), ``weights``
    ``[B, Q, M, L, P]`` -> ``[B, Q, M * D]``."""
    b, _, m, d = value.shape
    _, q, _, n_levels, p, _ = locations.shape
    grids = 2 * locations - 1
    out = value.new_zeros(b * m, d, q)
    start = 0
    for level, (h, w) in enumerate(shapes):
        v = value[:, start : start + h * w].flatten(2).transpose(1, 2).reshape(b * m, d, h, w)
        start += h * w
        grid = grids[:, :, :, level].transpose(1, 2).flatten(0, 1)  # [B*M, Q, P, 2]
        sampled = F.grid_sample(v, grid, mode="bilinear", padding_mode="zeros", align_corners=False)  # [B*M, D, Q, P]
        wl = weights[:, :, :, level].transpose(1, 2).reshape(b * m, 1, q, p)
        out = out + (sampled * wl).sum(-1)
    return out.view(b, m * d, q).transpose(1, 2).contiguous()


_TRANSFORMERS_MSDA = None


def _transformers_msda() -> nn.Module:
    global _TRANSFORMERS_MSDA
    if _TRANSFORMERS_MSDA is None:
        from transformers.models.deformable_detr.modeling_deformable_detr import MultiScaleDeformableAttention

        _TRANSFORMERS_MSDA = MultiScaleDeformableAttention()
    return _TRANSFORMERS_MSDA


def ms_deform_attn(
    value: torch.Tensor, shapes: list[tuple[int, int]], locations: torch.Tensor, weights: torch.Tensor,
    backend: str = "pytorch",
) -> torch.Tensor:
    """Multi-scale deformable attention core (see :func:`ms_deform_attn_pytorch` for the shapes)."""
    if backend == "pytorch":
        return ms_deform_attn_pytorch(value, shapes, locations, weights)
    if backend != "transformers":
        raise ValueError(f"deformable attention backend must be one of {list(BACKENDS)}, got {backend!r}")
    shapes_t = torch.as_tensor(shapes, dtype=torch.long, device=value.device)
    starts = torch.cat((shapes_t.new_zeros(1), shapes_t.prod(1).cumsum(0)[:-1]))
    return _transformers_msda()(value, shapes_t, list(shapes), starts, locations, weights, 64)


class MSDeformAttn(nn.Module):
    """Deformable attention of ``query`` ``[B, Q, C]`` over a flattened multi-level ``source``
    ``[B, S, C]`` around ``reference`` points ``[B, Q, L, 2]`` (or boxes ``[B, Q, L, 4]``) in [0, 1]."""

    def __init__(self, dim: int = 256, levels: int = 4, heads: int = 8, points: int = 4, backend: str = "pytorch") -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} must be divisible by heads {heads}")
        self.dim, self.levels, self.heads, self.points = dim, levels, heads, points
        self.backend = backend
        self.sampling_offsets = nn.Linear(dim, heads * levels * points * 2)
        self.attention_weights = nn.Linear(dim, heads * levels * points)
        self.value_proj = nn.Linear(dim, dim)
        self.output_proj = nn.Linear(dim, dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Deformable DETR's initialisation: offsets start on a ring of directions, uniform weights."""
        nn.init.zeros_(self.sampling_offsets.weight)
        thetas = torch.arange(self.heads, dtype=torch.float32) * (2.0 * math.pi / self.heads)
        grid = torch.stack([thetas.cos(), thetas.sin()], -1)
        grid = (grid / grid.abs().max(-1, keepdim=True)[0]).view(self.heads, 1, 1, 2).repeat(1, self.levels, self.points, 1)
        for i in range(self.points):
            grid[:, :, i, :] *= i + 1
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(grid.view(-1))
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        nn.init.xavier_uniform_(self.value_proj.weight)
        nn.init.zeros_(self.value_proj.bias)
        nn.init.xavier_uniform_(self.output_proj.weight)
        nn.init.zeros_(self.output_proj.bias)

    def forward(
        self,
        query: torch.Tensor,
        reference: torch.Tensor,
        source: torch.Tensor,
        shapes: list[tuple[int, int]],
        padding: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``[B, Q, C]``; ``padding`` ``[B, S]`` bool marks padded source tokens (their values are zeroed)."""
        b, q, _ = query.shape
        s = source.shape[1]
        value = self.value_proj(source)
        if padding is not None:
            value = value.masked_fill(padding[..., None], 0.0)
        value = value.view(b, s, self.heads, self.dim // self.heads)
        offsets = self.sampling_offsets(query).view(b, q, self.heads, self.levels, self.points, 2)
        weights = self.attention_weights(query).view(b, q, self.heads, self.levels * self.points)
        weights = weights.softmax(-1).view(b, q, self.heads, self.levels, self.points)
        if reference.shape[-1] == 2:
            normalizer = torch.tensor([[w, h] for h, w in shapes], dtype=query.dtype, device=query.device)
            locations = reference[:, :, None, :, None, :] + offsets / normalizer[None, None, None, :, None, :]
        elif reference.shape[-1] == 4:
            locations = reference[:, :, None, :, None, :2] + offsets / self.points * reference[:, :, None, :, None, 2:] * 0.5
        else:
            raise ValueError(f"reference must end in 2 (points) or 4 (boxes), got {tuple(reference.shape)}")
        out = ms_deform_attn(value, shapes, locations, weights, self.backend)
        return self.output_proj(out)

"""Text point: where the sentence's object is, handed to SAM's decoder as a point prompt.

SAM's mask decoder reads *where* an object is only from its prompts' positional encodings: the image
embedding itself says what is at a location (for a convolutional encoder, hardly where), and the
reference token from a pooled sentence has no location either. Two identical objects then get the
same mask logits, whatever the sentence says ("the leftmost red circle"). The text point gives the
decoder the location the sentence names, in the form SAM was trained on:

    heat_i = < W_q s , W_k LN(F'_i) + W_p pe_i > / sqrt(d)        # over the h x w grid
    p      = softmax_i(heat)
    token  = sum_i p_i pe_i + e_pos                               # SAM's point prompt: PE(location) + label

with ``s`` the pooled sentence ``[B, C]``, ``F'`` the language-fused image embedding ``[B, C, h, w]``,
``pe`` SAM's grid encoding and ``e_pos`` SAM's positive-point label embedding (copied at wrap time and
trained). A softmax over the grid with a colour/shape match plus a position term is a soft arg-max, so
"the rightmost red thing" can land on one of several red things. ``heat`` is returned so training can
supervise it directly (:func:`text_point_loss`: the probability mass on the target's cells). Not in the
paper (``text_point`` in :class:`~unifusion_sam.sam.adapter.config.UniFusionSamConfig`; off by default).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def positive_point_embedding(prompt_encoder: nn.Module, dim: int = 256) -> torch.Tensor:
    """SAM's learned label embedding of a positive point ``[dim]`` (Meta SAM / SAM 2:
    ``point_embeddings[1]``; transformers: ``point_embed`` row 1); zeros for an encoder without one."""
    table = getattr(prompt_encoder, "point_embeddings", None)
    if isinstance(table, nn.ModuleList) and len(table) > 1:
        return table[1].weight.detach().reshape(-1)[:dim].clone()
    embed = getattr(prompt_encoder, "point_embed", None)
    if isinstance(embed, nn.Embedding) and embed.num_embeddings > 1:
        return embed.weight[1].detach().clone()
    return torch.zeros(dim)


class TextPointHead(nn.Module):
    """``forward(fused [B, C, h, w], pe [1, C, h, w], sentence [B, C]) -> (token [B, C], heat [B, h*w])``."""

    def __init__(self, dim: int = 256, inner: int = 64, label: torch.Tensor | None = None) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.q_proj = nn.Linear(dim, inner)
        self.k_proj = nn.Linear(dim, inner)
        self.pos_proj = nn.Linear(dim, inner, bias=False)
        self.label = nn.Parameter(torch.zeros(dim) if label is None else label.clone().reshape(dim))
        self.scale = 1.0 / math.sqrt(inner)

    def forward(self, fused: torch.Tensor, pe: torch.Tensor, sentence: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        grid = pe.flatten(2).transpose(1, 2)  # [1, hw, C]
        keys = self.k_proj(self.norm(fused.flatten(2).transpose(1, 2))) + self.pos_proj(grid)  # [B, hw, d]
        heat = torch.einsum("bd,bnd->bn", self.q_proj(sentence), keys) * self.scale
        token = heat.softmax(-1) @ grid[0] + self.label  # [B, C]: the expected location's encoding
        return token, heat


def text_point_loss(heat: torch.Tensor, targets: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """``-log`` of the heat map's probability mass on the target ``[B]`` per sample: ``heat`` ``[B, h*w]``,
    ``targets`` ``[B, S, S]`` (the padded input frame, S = 16 h), ``rows`` ``[B]`` bool (samples with a
    sentence and a non-empty target). Cells count by the share of the target inside them. Zeros
    elsewhere."""
    b, n = heat.shape
    side = int(math.isqrt(n))
    share = F.adaptive_avg_pool2d(targets[:, None].to(heat.dtype), side).flatten(1)  # [B, hw]
    mass = (heat.softmax(-1) * share).sum(-1)
    return torch.where(rows, -torch.log(mass.clamp(min=1e-6)), heat.new_zeros(b))

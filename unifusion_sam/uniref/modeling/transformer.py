"""The two-stage Deformable-DETR transformer of UniRef++.

Encoder: ``enc_layers`` x (deformable self-attention over the 4 fused levels, FFN), post-norm.
Two stage + mixed query selection: every encoder token proposes a box (a cell-sized anchor refined
by the proposal head ``class_embed[-1]`` / ``bbox_embed[-1]``); the ``num_queries`` best proposals
by class logit become the decoder's reference boxes and, through ``pos_trans``, its positional
queries, while the content queries are learnt (``query_embed``).
Decoder: ``dec_layers`` x (self-attention, deformable cross-attention, FFN), each followed by box
refinement with ``bbox_embed[i]``; with look-forward-twice the refined (not detached) box of each
layer is what the losses see.

The class / box heads are owned by the model and passed in (the authors register them twice, on the
model and on the decoder; here they exist once).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .deformable import MSDeformAttn
from .layers import inverse_sigmoid, proposal_position_embedding


@dataclass
class TransformerOutput:
    """``hs`` ``[L, B, Q, C]`` decoder states of every layer; ``memory`` ``[B, S, C]``; ``init_reference``
    ``[B, Q, 4]`` and ``inter_references`` ``[L, B, Q, 4]`` (sigmoid boxes, cxcywh); ``enc_class``
    ``[B, S, K]`` / ``enc_coord_unact`` ``[B, S, 4]`` proposal outputs; ``topk`` ``[B, Q]`` the selected
    proposals (descending score); ``shapes`` the levels' (h, w)."""

    hs: torch.Tensor
    memory: torch.Tensor
    init_reference: torch.Tensor
    inter_references: torch.Tensor
    enc_class: torch.Tensor
    enc_coord_unact: torch.Tensor
    topk: torch.Tensor
    shapes: list[tuple[int, int]]


class EncoderLayer(nn.Module):
    def __init__(self, dim: int, ffn: int, dropout: float, levels: int, heads: int, points: int, backend: str) -> None:
        super().__init__()
        self.self_attn = MSDeformAttn(dim, levels, heads, points, backend)
        self.norm1 = nn.LayerNorm(dim)
        self.linear1 = nn.Linear(dim, ffn)
        self.linear2 = nn.Linear(ffn, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, src, pos, reference, shapes, padding):
        src = self.norm1(src + self.dropout(self.self_attn(src + pos, reference, src, shapes, padding)))
        return self.norm2(src + self.dropout(self.linear2(self.dropout(F.relu(self.linear1(src))))))


class DecoderLayer(nn.Module):
    def __init__(self, dim: int, ffn: int, dropout: float, levels: int, heads: int, points: int, backend: str) -> None:
        super().__init__()
        self.cross_attn = MSDeformAttn(dim, levels, heads, points, backend)
        self.norm1 = nn.LayerNorm(dim)
        self.self_attn = nn.MultiheadAttention(dim, heads, dropout=dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.linear1 = nn.Linear(dim, ffn)
        self.linear2 = nn.Linear(ffn, dim)
        self.norm3 = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, tgt, query_pos, reference, memory, shapes, padding):
        q = (tgt + query_pos).transpose(0, 1)
        tgt = self.norm2(tgt + self.dropout(self.self_attn(q, q, tgt.transpose(0, 1))[0].transpose(0, 1)))
        tgt = self.norm1(tgt + self.dropout(self.cross_attn(tgt + query_pos, reference, memory, shapes, padding)))
        return self.norm3(tgt + self.dropout(self.linear2(self.dropout(F.relu(self.linear1(tgt))))))


class DeformableTransformer(nn.Module):
    """Encoder + two-stage proposals + decoder with box refinement (see the module docstring)."""

    def __init__(self, dim: int = 256, heads: int = 8, enc_layers: int = 6, dec_layers: int = 6, ffn: int = 2048,
                 dropout: float = 0.0, levels: int = 4, enc_points: int = 4, dec_points: int = 4,
                 num_queries: int = 300, backend: str = "pytorch") -> None:
        super().__init__()
        self.dim, self.num_queries = dim, num_queries
        self.encoder = nn.Module()
        self.encoder.layers = nn.ModuleList(
            EncoderLayer(dim, ffn, dropout, levels, heads, enc_points, backend) for _ in range(enc_layers))
        self.decoder = nn.Module()
        self.decoder.layers = nn.ModuleList(
            DecoderLayer(dim, ffn, dropout, levels, heads, dec_points, backend) for _ in range(dec_layers))
        self.level_embed = nn.Parameter(torch.empty(levels, dim))
        self.enc_output = nn.Linear(dim, dim)
        self.enc_output_norm = nn.LayerNorm(dim)
        self.pos_trans = nn.Linear(2 * dim, 2 * dim)
        self.pos_trans_norm = nn.LayerNorm(2 * dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)
        for m in self.modules():
            if isinstance(m, MSDeformAttn):
                m.reset_parameters()
        nn.init.normal_(self.level_embed)

    def set_backend(self, backend: str) -> None:
        """Switch every deformable attention to ``"pytorch"`` or ``"transformers"``."""
        for m in self.modules():
            if isinstance(m, MSDeformAttn):
                m.backend = backend

    @staticmethod
    def valid_ratios(padding: torch.Tensor) -> torch.Tensor:
        """``[B, h, w]`` padding -> ``[B, 2]`` (valid width, valid height) fractions."""
        _, h, w = padding.shape
        return torch.stack([(~padding[:, 0, :]).sum(1).float() / w, (~padding[:, :, 0]).sum(1).float() / h], -1)

    @staticmethod
    def encoder_reference(shapes: list[tuple[int, int]], ratios: torch.Tensor) -> torch.Tensor:
        """Cell centres of every level, normalised by the valid extent: ``[B, S, L, 2]``."""
        points = []
        for lvl, (h, w) in enumerate(shapes):
            ry, rx = torch.meshgrid(torch.linspace(0.5, h - 0.5, h, dtype=torch.float32, device=ratios.device),
                                    torch.linspace(0.5, w - 0.5, w, dtype=torch.float32, device=ratios.device),
                                    indexing="ij")
            ry = ry.reshape(-1)[None] / (ratios[:, None, lvl, 1] * h)
            rx = rx.reshape(-1)[None] / (ratios[:, None, lvl, 0] * w)
            points.append(torch.stack((rx, ry), -1))
        return torch.cat(points, 1)[:, :, None] * ratios[:, None]

    def proposals(self, memory: torch.Tensor, padding: torch.Tensor, shapes: list[tuple[int, int]]):
        """Encoder-token anchors: (masked, projected memory ``[B, S, C]``, unactivated boxes ``[B, S, 4]``
        with ``+inf`` where the anchor is invalid)."""
        b = memory.shape[0]
        anchors, start = [], 0
        for lvl, (h, w) in enumerate(shapes):
            pad = padding[:, start : start + h * w].view(b, h, w)
            valid_h, valid_w = (~pad[:, :, 0]).sum(1), (~pad[:, 0, :]).sum(1)
            gy, gx = torch.meshgrid(torch.linspace(0, h - 1, h, dtype=torch.float32, device=memory.device),
                                    torch.linspace(0, w - 1, w, dtype=torch.float32, device=memory.device), indexing="ij")
            grid = torch.cat([gx.unsqueeze(-1), gy.unsqueeze(-1)], -1)
            scale = torch.cat([valid_w.unsqueeze(-1), valid_h.unsqueeze(-1)], 1).view(b, 1, 1, 2)
            grid = (grid.unsqueeze(0).expand(b, -1, -1, -1) + 0.5) / scale
            wh = torch.ones_like(grid) * 0.05 * (2.0**lvl)
            anchors.append(torch.cat((grid, wh), -1).view(b, -1, 4))
            start += h * w
        anchors = torch.cat(anchors, 1)
        ok = ((anchors > 0.01) & (anchors < 0.99)).all(-1, keepdim=True)
        anchors = torch.log(anchors / (1 - anchors))
        anchors = anchors.masked_fill(padding.unsqueeze(-1), float("inf")).masked_fill(~ok, float("inf"))
        out = memory.masked_fill(padding.unsqueeze(-1), 0.0).masked_fill(~ok, 0.0)
        return self.enc_output_norm(self.enc_output(out)), anchors

    def forward(
        self,
        srcs: list[torch.Tensor],
        paddings: list[torch.Tensor],
        pos: list[torch.Tensor],
        query_embed: torch.Tensor,
        class_heads: nn.ModuleList,
        box_heads: nn.ModuleList,
        topk: torch.Tensor | None = None,
    ) -> TransformerOutput:
        """``srcs``/``pos`` ``[B, C, h_l, w_l]``, ``paddings`` ``[B, h_l, w_l]``; ``query_embed`` ``[Q, C]``
        content queries; heads: one per decoder layer plus the proposal head (last). ``topk``
        ``[B, Q]`` forces the proposal selection (teacher forcing for diagnosis)."""
        shapes = [tuple(s.shape[-2:]) for s in srcs]
        src = torch.cat([s.flatten(2).transpose(1, 2) for s in srcs], 1)
        padding = torch.cat([m.flatten(1) for m in paddings], 1)
        pos_flat = torch.cat([p.flatten(2).transpose(1, 2) + self.level_embed[i].view(1, 1, -1) for i, p in enumerate(pos)], 1)
        ratios = torch.stack([self.valid_ratios(m) for m in paddings], 1)  # [B, L, 2]

        memory = src
        reference = self.encoder_reference(shapes, ratios)
        for layer in self.encoder.layers:
            memory = layer(memory, pos_flat, reference, shapes, padding)

        b, _, c = memory.shape
        output_memory, anchors = self.proposals(memory, padding, shapes)
        enc_class = class_heads[-1](output_memory)
        enc_coord_unact = box_heads[-1](output_memory) + anchors
        if topk is None:
            topk = torch.topk(enc_class[..., 0], self.num_queries, dim=1)[1]
        coords_unact = torch.gather(enc_coord_unact, 1, topk.unsqueeze(-1).repeat(1, 1, 4)).detach()
        reference_boxes = coords_unact.sigmoid()
        init_reference = reference_boxes
        query_pos = self.pos_trans_norm(self.pos_trans(proposal_position_embedding(coords_unact, c // 2)))[..., :c]
        tgt = query_embed.unsqueeze(0).expand(b, -1, -1)

        states, references = [], []
        for i, layer in enumerate(self.decoder.layers):
            ref_input = reference_boxes[:, :, None] * torch.cat([ratios, ratios], -1)[:, None]
            tgt = layer(tgt, query_pos, ref_input, memory, shapes, padding)
            refined = (box_heads[i](tgt) + inverse_sigmoid(reference_boxes)).sigmoid()
            states.append(tgt)
            references.append(refined)  # look forward twice: the refined box, not detached
            reference_boxes = refined.detach()
        return TransformerOutput(torch.stack(states), memory, init_reference, torch.stack(references), enc_class,
                                 enc_coord_unact, topk, shapes)

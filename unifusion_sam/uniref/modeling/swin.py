"""Swin Transformer backbone on torchvision's ``SwinTransformer`` classes, computing what the authors' does.

torchvision supplies the patch embedding, blocks (LayerNorm, MLP with exact GELU, stochastic depth),
patch merging (concatenation order ``[x[0::2, 0::2], x[1::2, 0::2], x[0::2, 1::2], x[1::2, 1::2]]``,
LayerNorm over 4C, bias-free reduction) and the relative-position-bias parameters. One difference is
fixed here: torchvision drops the shift of a window that covers the whole (padded) feature map, the
detection Swin the authors use keeps it (their res5 of a 256 x 320 image is one 12 x 12 window and
is still rolled by 6). :class:`DetectionWindowAttention` is torchvision's ``ShiftedWindowAttention``
with that one rule changed: pad the map to a multiple of the window, roll, attend within windows
(relative position bias, -100 between shift regions), roll back, crop. Padded tokens are zero
vectors and are not masked as keys, exactly as the authors do.

The backbone returns the output of every stage *before* its patch merging, through a per-stage
LayerNorm (the authors' ``norm0..norm3``): res2..res5 at strides 4, 8, 16, 32.
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.swin_transformer import (
    PatchMerging,
    ShiftedWindowAttention,
    SwinTransformer,
    SwinTransformerBlock,
)

# the authors' D2SwinTransformer sizes: (embed_dim, depths, heads, window, drop_path_rate)
SWIN_SIZES = {
    "tiny": (96, (2, 2, 6, 2), (3, 6, 12, 24), 7, 0.2),
    "small": (96, (2, 2, 18, 2), (3, 6, 12, 24), 7, 0.2),
    "base": (128, (2, 2, 18, 2), (4, 8, 16, 32), 12, 0.3),
    "large": (192, (2, 2, 18, 2), (6, 12, 24, 48), 12, 0.3),
}


def shift_regions(pad_h: int, pad_w: int, window: int, shift: int, device: torch.device) -> torch.Tensor:
    """``[nW, window*window, window*window]`` additive mask: 0 within a shift region, -100 across."""
    region = torch.zeros(pad_h, pad_w, device=device)
    count = 0
    for hs in (slice(0, -window), slice(-window, -shift), slice(-shift, None)):
        for ws in (slice(0, -window), slice(-window, -shift), slice(-shift, None)):
            region[hs, ws] = count
            count += 1
    region = region.view(pad_h // window, window, pad_w // window, window).permute(0, 2, 1, 3).reshape(-1, window * window)
    diff = region[:, None, :] - region[:, :, None]
    return diff.masked_fill(diff != 0, -100.0).masked_fill(diff == 0, 0.0)


class DetectionWindowAttention(ShiftedWindowAttention):
    """torchvision's window attention, keeping the shift even when one window covers the padded map."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, H, W, C] -> [B, H, W, C]``."""
        b, h, w, c = x.shape
        win, shift = self.window_size[0], self.shift_size[0]
        x = F.pad(x, (0, 0, 0, (win - w % win) % win, 0, (win - h % win) % win))
        ph, pw = x.shape[1:3]
        if shift > 0:
            x = torch.roll(x, shifts=(-shift, -shift), dims=(1, 2))
        nw = (ph // win) * (pw // win)
        windows = x.view(b, ph // win, win, pw // win, win, c).permute(0, 1, 3, 2, 4, 5).reshape(b * nw, win * win, c)
        heads = self.num_heads
        qkv = self.qkv(windows).reshape(b * nw, win * win, 3, heads, c // heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0] * (c // heads) ** -0.5, qkv[1], qkv[2]
        attn = q.matmul(k.transpose(-2, -1)) + self.get_relative_position_bias()  # [B*nW, heads, N, N]
        if shift > 0:
            mask = shift_regions(ph, pw, win, shift, x.device)  # [nW, N, N]
            attn = (attn.view(b, nw, heads, win * win, win * win) + mask[None, :, None]).view(-1, heads, win * win, win * win)
        attn = F.dropout(attn.softmax(dim=-1), p=self.attention_dropout, training=self.training)
        out = attn.matmul(v).transpose(1, 2).reshape(b * nw, win * win, c)
        out = F.dropout(self.proj(out), p=self.dropout, training=self.training)
        out = out.view(b, ph // win, pw // win, win, win, c).permute(0, 1, 3, 2, 4, 5).reshape(b, ph, pw, c)
        if shift > 0:
            out = torch.roll(out, shifts=(shift, shift), dims=(1, 2))
        return out[:, :h, :w, :].contiguous()


class SwinBackbone(nn.Module):
    """``forward([B, 3, H, W]) -> [res2, res3, res4, res5]`` (NCHW, channels ``C, 2C, 4C, 8C``)."""

    def __init__(self, size: str = "large") -> None:
        super().__init__()
        if size not in SWIN_SIZES:
            raise ValueError(f"Swin size must be one of {sorted(SWIN_SIZES)}, got {size!r}")
        dim, depths, heads, window, drop_path = SWIN_SIZES[size]
        net = SwinTransformer(
            patch_size=[4, 4], embed_dim=dim, depths=list(depths), num_heads=list(heads), window_size=[window, window],
            stochastic_depth_prob=drop_path, norm_layer=partial(nn.LayerNorm, eps=1e-5),
            block=partial(SwinTransformerBlock, attn_layer=DetectionWindowAttention), downsample_layer=PatchMerging,
        )
        self.features = net.features  # [patch_embed, stage0, merge0, stage1, merge1, stage2, merge2, stage3]
        self.channels = [dim, 2 * dim, 4 * dim, 8 * dim]
        self.out_norms = nn.ModuleList(nn.LayerNorm(c) for c in self.channels)
        self.size = size

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.features[0](x)  # [B, H/4, W/4, C]
        outs = []
        for i in range(4):
            x = self.features[1 + 2 * i](x)
            outs.append(self.out_norms[i](x).permute(0, 3, 1, 2).contiguous())
            if i < 3:
                x = self.features[2 + 2 * i](x)
        return outs

"""Cross-attention backends used by UniFusion.

All backends compute ``softmax(q k^T / sqrt(d) + mask) v`` over the key axis and take the same
arguments:

- ``q``: ``[B, heads, Lq, d]``; ``k``, ``v``: ``[B, heads, Lk, d]``;
- ``key_padding_mask``: optional ``[B, Lk]`` bool, ``True`` marks a padded key that must be ignored
  (the convention of :class:`torch.nn.MultiheadAttention`). Every row must keep at least one
  valid key; :class:`~unifusion_sam.fusion.unifusion.UniFusion` guarantees this.

Backends:

- ``"sdpa"`` (default): :func:`torch.nn.functional.scaled_dot_product_attention`; memory-efficient
  kernels on CPU and GPU.
- ``"flash_attn"``: the ``flash-attn`` package (optional extra ``unifusion-sam[flash]``); used only
  when it is installed, the tensors are on CUDA and in fp16/bf16; padded keys go through the varlen
  kernel. Otherwise it falls back to ``"sdpa"`` (see :func:`resolve_backend`).
- ``"math"``: a plain reference implementation that materialises the attention matrix; used by the
  tests to check the other two.
"""

from __future__ import annotations

import importlib.util
import math
import sys

import torch
import torch.nn.functional as F

BACKENDS = ("sdpa", "flash_attn", "math")


def flash_attn_available() -> bool:
    """Whether the ``flash_attn`` package can be imported (it needs CUDA to run)."""
    return importlib.util.find_spec("flash_attn") is not None


def resolve_backend(backend: str, q: torch.Tensor) -> str:
    """The backend that will actually run for ``q``: ``flash_attn`` degrades to ``sdpa`` when unusable."""
    if backend not in BACKENDS:
        raise ValueError(f"attention backend must be one of {list(BACKENDS)}, got {backend!r}")
    if backend == "flash_attn":
        usable = q.is_cuda and q.dtype in (torch.float16, torch.bfloat16) and flash_attn_available()
        return "flash_attn" if usable else "sdpa"
    return backend


def cross_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    key_padding_mask: torch.Tensor | None = None,
    backend: str = "sdpa",
    dropout: float = 0.0,
) -> torch.Tensor:
    """Multi-head attention of ``q`` over ``k``/``v``; returns ``[B, heads, Lq, d_v]``. ``dropout`` is
    applied to the attention probabilities (pass it only in training)."""
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise ValueError(f"q, k, v must be [B, heads, L, d], got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    if key_padding_mask is not None:
        if key_padding_mask.shape != (k.shape[0], k.shape[2]):
            raise ValueError(
                f"key_padding_mask must be [B, Lk] = {(k.shape[0], k.shape[2])}, got {tuple(key_padding_mask.shape)}"
            )
        if key_padding_mask.dtype != torch.bool:
            raise TypeError(f"key_padding_mask must be bool, got {key_padding_mask.dtype}")
        if not key_padding_mask.any():
            key_padding_mask = None
    if "torch.onnx" in sys.modules and torch.onnx.is_in_onnx_export():  # no import of torch.onnx otherwise
        return _bias_attention(q, k, v, key_padding_mask)
    chosen = resolve_backend(backend, q)
    if chosen == "math":
        return _math_attention(q, k, v, key_padding_mask, dropout)
    if chosen == "flash_attn":
        return _flash_attention(q, k, v, key_padding_mask, dropout)
    attn_mask = None if key_padding_mask is None else ~key_padding_mask[:, None, None, :]
    return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout)


def _math_attention(q, k, v, key_padding_mask, dropout=0.0):
    scores = torch.matmul(q, k.transpose(-2, -1)) / math.sqrt(q.shape[-1])
    if key_padding_mask is not None:
        scores = scores.masked_fill(key_padding_mask[:, None, None, :], float("-inf"))
    probs = scores.softmax(dim=-1)
    if dropout > 0:
        probs = F.dropout(probs, p=dropout)
    return torch.matmul(probs, v)


def _bias_attention(q, k, v, key_padding_mask):
    """The padding as an additive ``[B, 1, 1, Lk]`` bias (what ONNX graphs get): the exporter's version of
    ``scaled_dot_product_attention`` with a boolean mask also replaces NaNs in the full ``[B, heads, Lq, Lk]``
    probabilities, which took a fifth of the mask-fusion graph's time in onnxruntime. Callers never pass a row
    whose keys are all padding (``UniFusion`` lets reference-less samples attend to every token)."""
    scores = torch.matmul(q * (1.0 / math.sqrt(q.shape[-1])), k.transpose(-2, -1))
    if key_padding_mask is not None:
        bias = torch.zeros(key_padding_mask.shape, dtype=scores.dtype, device=scores.device)
        scores = scores + bias.masked_fill(key_padding_mask, float("-inf"))[:, None, None, :]
    return torch.matmul(scores.softmax(dim=-1), v)


def _flash_attention(q, k, v, key_padding_mask, dropout=0.0):  # pragma: no cover - needs CUDA + flash-attn
    from flash_attn import flash_attn_func, flash_attn_varlen_func

    b, h, lq, d = q.shape
    qt, kt, vt = (x.transpose(1, 2) for x in (q, k, v))  # [B, L, heads, d]
    if key_padding_mask is None:
        return flash_attn_func(qt.contiguous(), kt.contiguous(), vt.contiguous(), dropout_p=dropout).transpose(1, 2)
    valid = ~key_padding_mask  # [B, Lk]
    lengths_k = valid.sum(dim=1, dtype=torch.int32)
    cu_k = F.pad(lengths_k.cumsum(0, dtype=torch.int32), (1, 0))
    cu_q = torch.arange(0, (b + 1) * lq, lq, dtype=torch.int32, device=q.device)
    out = flash_attn_varlen_func(
        qt.reshape(b * lq, h, d).contiguous(),
        kt[valid].contiguous(),
        vt[valid].contiguous(),
        cu_seqlens_q=cu_q,
        cu_seqlens_k=cu_k,
        max_seqlen_q=lq,
        max_seqlen_k=int(lengths_k.max()),
        dropout_p=dropout,
    )
    return out.reshape(b, lq, h, d).transpose(1, 2)

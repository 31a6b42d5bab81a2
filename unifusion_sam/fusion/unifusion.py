"""UniFusion: inject reference features (language or mask) into a visual feature map.

For a visual level ``F`` ``[B, C, H, W]`` and reference tokens (keys ``Fk``, values ``Fv``
``[B, L, C]`` with a padding mask)::

    O                 = Attention(LN_q(F), LN_k(Fk), Fv)          # multi-head cross-attention
    gamma, beta, alpha = Linear(SiLU(mean of valid Fk tokens))     # zero-initialised weight and bias
    F'                = F + alpha * (O * (1 + gamma) + beta)

Language and mask references run as two branches from the same ``F`` and are summed
(``F' = F + fuse(F, lang) + fuse(F, mask)``); one instance serves every feature level. Because the
conditioning layer starts at zero, the block is exactly the identity at initialisation.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..config import JsonConfig, check_choice, check_positive_int
from .attention import BACKENDS, cross_attention


@dataclass
class UniFusionConfig(JsonConfig):
    """UniFusion hyper-parameters.

    ``dim`` is the channel width C of the visual features and reference tokens. The attention runs
    with ``num_heads`` heads of ``head_dim`` each (inner width ``num_heads * head_dim``): the authors
    used 8 x 256; the default 8 x 32 is far cheaper. ``backend`` is ``"sdpa"``, ``"flash_attn"`` or
    ``"math"`` (see :mod:`unifusion_sam.fusion.attention`).

    ``match_logit`` > 0 starts the query and key projections as the same scaled orthogonal map, so
    that before any training the mask branch already attends to the reference locations whose
    visual features resemble the query's (feature matching, as in memory-based VOS): a key equal to
    the query gets an attention logit of about ``match_logit`` (LayerNorm-ed features, per head).
    ``0`` keeps PyTorch's default initialisation. The block is the identity at initialisation either way.
    """

    dim: int = 256
    num_heads: int = 8
    head_dim: int = 32
    backend: str = "sdpa"
    qkv_bias: bool = True
    match_logit: float = 48.0

    def __post_init__(self) -> None:
        check_positive_int("dim", self.dim)
        check_positive_int("num_heads", self.num_heads)
        check_positive_int("head_dim", self.head_dim)
        check_choice("backend", self.backend, BACKENDS)
        if not isinstance(self.qkv_bias, bool):
            raise TypeError(f"qkv_bias must be a bool, got {self.qkv_bias!r}")
        if isinstance(self.match_logit, bool) or not isinstance(self.match_logit, (int, float)) or self.match_logit < 0:
            raise ValueError(f"match_logit must be a number >= 0, got {self.match_logit!r}")


@dataclass
class ReferenceTokens:
    """Reference features for one branch of UniFusion.

    - ``keys``: ``[B, L, C]`` (language: projected words; mask: reference-frame visual features)
    - ``values``: ``[B, L, C]`` (language: the same words; mask: mask-encoder features)
    - ``padding_mask``: ``[B, L]`` bool, ``True`` = padded token, or ``None`` when all are valid.
      A sample whose tokens are all padded has no reference: its branch contributes exactly zero.
    """

    keys: torch.Tensor
    values: torch.Tensor
    padding_mask: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.keys.dim() != 3 or self.values.shape != self.keys.shape:
            raise ValueError(
                f"keys and values must both be [B, L, C], got {tuple(self.keys.shape)} and {tuple(self.values.shape)}"
            )
        if self.padding_mask is not None and self.padding_mask.shape != self.keys.shape[:2]:
            raise ValueError(
                f"padding_mask must be [B, L] = {tuple(self.keys.shape[:2])}, got {tuple(self.padding_mask.shape)}"
            )

    @classmethod
    def from_maps(cls, key_map: torch.Tensor, value_map: torch.Tensor) -> ReferenceTokens:
        """Flatten spatial maps ``[B, C, h, w]`` into ``[B, h*w, C]`` tokens (no padding)."""
        if key_map.dim() != 4 or value_map.shape != key_map.shape:
            raise ValueError(
                f"key_map and value_map must both be [B, C, h, w], got {tuple(key_map.shape)} and {tuple(value_map.shape)}"
            )
        return cls(key_map.flatten(2).transpose(1, 2), value_map.flatten(2).transpose(1, 2))

    @classmethod
    def cat(cls, refs: list[ReferenceTokens]) -> ReferenceTokens:
        """Concatenate several references (first + previous frame, K shots) along the token axis."""
        if not refs:
            raise ValueError("cat needs at least one ReferenceTokens")
        if len(refs) == 1:
            return refs[0]
        masks = None
        if any(r.padding_mask is not None for r in refs):
            masks = torch.cat([r.valid_mask().logical_not() for r in refs], dim=1)
        return cls(torch.cat([r.keys for r in refs], 1), torch.cat([r.values for r in refs], 1), masks)

    def valid_mask(self) -> torch.Tensor:
        """``[B, L]`` bool, ``True`` for real tokens."""
        if self.padding_mask is None:
            return torch.ones(self.keys.shape[:2], dtype=torch.bool, device=self.keys.device)
        return ~self.padding_mask


class UniFusion(nn.Module):
    """The shared fusion block. ``forward(feature, lang=None, mask=None) -> feature'``, both ``[B, C, H, W]``."""

    def __init__(self, config: UniFusionConfig | None = None) -> None:
        super().__init__()
        self.config = config or UniFusionConfig()
        c, inner = self.config.dim, self.config.num_heads * self.config.head_dim
        self.norm_q = nn.LayerNorm(c)
        self.norm_k = nn.LayerNorm(c)
        self.q_proj = nn.Linear(c, inner, bias=self.config.qkv_bias)
        self.k_proj = nn.Linear(c, inner, bias=self.config.qkv_bias)
        self.v_proj = nn.Linear(c, inner, bias=self.config.qkv_bias)
        self.out_proj = nn.Linear(inner, c)
        if self.config.match_logit > 0:
            self._init_matching(self.config.match_logit)
        self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(c, 3 * c))
        nn.init.zeros_(self.modulation[1].weight)
        nn.init.zeros_(self.modulation[1].bias)

    @torch.no_grad()
    def _init_matching(self, logit: float) -> None:
        """``W_q = W_k = s * O`` with orthonormal rows ``O`` (``[inner, C]``; orthonormal columns when
        inner > C). For LayerNorm-ed x (``|x|^2 ~ C``), per head ``(s O_h x) . (s O_h x) / sqrt(d)`` is
        about ``s^2 * d * min(1, C / inner) / sqrt(d)``; ``s`` is chosen to make it ``logit``."""
        c, inner, d = self.config.dim, self.config.num_heads * self.config.head_dim, self.config.head_dim
        weight = torch.empty(inner, c)
        nn.init.orthogonal_(weight)
        scale = (logit / (d**0.5 * min(1.0, c / inner))) ** 0.5
        for proj in (self.q_proj, self.k_proj):
            proj.weight.copy_(weight * scale)
            if proj.bias is not None:
                proj.bias.zero_()

    def forward(
        self,
        feature: torch.Tensor,
        lang: ReferenceTokens | None = None,
        mask: ReferenceTokens | None = None,
    ) -> torch.Tensor:
        """Fuse the language and/or mask references into ``feature`` ``[B, C, H, W]``."""
        if feature.dim() != 4 or feature.shape[1] != self.config.dim:
            raise ValueError(f"feature must be [B, {self.config.dim}, H, W], got {tuple(feature.shape)}")
        out = feature
        for ref in (lang, mask):
            if ref is not None:
                out = out + self.fuse(feature, ref)
        return out

    def fuse(self, feature: torch.Tensor, ref: ReferenceTokens) -> torch.Tensor:
        """One branch: the residual ``alpha * (O * (1 + gamma) + beta)`` as ``[B, C, H, W]``."""
        b, c, h, w = feature.shape
        if ref.keys.shape[0] != b or ref.keys.shape[2] != c:
            raise ValueError(f"reference tokens must be [{b}, L, {c}], got {tuple(ref.keys.shape)}")
        valid = ref.valid_mask()  # [B, L]
        has_ref = valid.any(dim=1)  # [B]
        # Samples without any reference attend to all (unused) tokens so no row is fully masked;
        # their contribution is zeroed below.
        padding = None if ref.padding_mask is None else ref.padding_mask & has_ref[:, None]

        heads, hd = self.config.num_heads, self.config.head_dim
        tokens = feature.flatten(2).transpose(1, 2)  # [B, HW, C]
        q = self.q_proj(self.norm_q(tokens)).view(b, h * w, heads, hd).transpose(1, 2)
        k = self.k_proj(self.norm_k(ref.keys)).view(b, -1, heads, hd).transpose(1, 2)
        v = self.v_proj(ref.values).view(b, -1, heads, hd).transpose(1, 2)
        attn = cross_attention(q, k, v, padding, backend=self.config.backend)  # [B, heads, HW, hd]
        o = self.out_proj(attn.transpose(1, 2).reshape(b, h * w, heads * hd))  # [B, HW, C]

        weights = valid.to(ref.keys.dtype)[..., None]  # [B, L, 1]
        pooled = (ref.keys * weights).sum(1) / weights.sum(1).clamp(min=1.0)  # [B, C]
        gamma, beta, alpha = self.modulation(pooled).unsqueeze(1).chunk(3, dim=-1)  # each [B, 1, C]
        delta = alpha * (o * (1 + gamma) + beta)  # [B, HW, C]
        delta = delta * has_ref.to(delta.dtype)[:, None, None]
        return delta.transpose(1, 2).reshape(b, c, h, w)

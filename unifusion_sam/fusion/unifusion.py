"""UniFusion: inject reference features (language or mask) into a visual feature map.

For a visual level ``F`` ``[B, C, H, W]`` and reference tokens (keys ``Fk``, values ``Fv``
``[B, L, C]`` with a padding mask)::

    O                 = Attention(LN_q(F), LN_k(Fk), Fv)          # multi-head cross-attention
    gamma, beta, alpha = Linear(SiLU(mean of valid Fk tokens))     # zero-initialised weight and bias
    F'                = F + alpha * (O * (1 + gamma) + beta)

Language and mask references run as two branches from the same ``F`` and are summed
(``F' = F + fuse(F, lang) + fuse(F, mask)``); one instance serves every feature level. Because the
conditioning layer starts at zero, the block is exactly the identity at initialisation.

Optionally (``mask_pos_logit`` > 0) the mask branch attends with ``LN_q(F) W_q + P(pos)`` and
``LN_k(Fk) W_k + P(pos_k)``: a locality prior for references that are earlier frames of the same
video, on the same grid (``pos`` is zero for other samples, which leaves them untouched).

The parameters can hold the authors' UniRef++ layout exactly: 8 heads of 256 (``head_dim``),
LayerNorm on queries (their ``norm_v``) and keys (their ``norm_l``), and their modulation chunk order
``shift, scale, gate`` (``modulation_order="shift_scale_gate"``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..config import MAX_WIDTH, JsonConfig, check_choice, check_positive_int, check_probability
from .attention import BACKENDS, cross_attention

MODULATION_ORDERS = ("scale_shift_gate", "shift_scale_gate")


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

    ``mask_pos_logit`` > 0 gives the mask branch a locality prior: its queries and its reference keys
    both carry the positional encoding ``pos`` passed to :meth:`UniFusion.forward` (mask references
    are maps on the feature's own grid), through one projection initialised so that a reference
    token at the query's own location gets about ``mask_pos_logit`` more attention logit, a
    neighbour a little less and a far one about 0 (for sin/cos encodings, ``|pe|^2 = C / 2``).
    Appearance alone cannot tell an object from a look-alike elsewhere in the frame; where it was
    in the reference can. The projection trains. Only references that are frames of the query's own
    video should get it: pass a zero ``pos`` for the others (few-shot supports are other images),
    which leaves their attention exactly as without the prior. ``0`` turns it off; the language
    branch never uses positions.

    ``lang_pos`` gives the language branch's queries the grid position: ``LN_q(F) W_q + P_l(pos)``
    with ``P_l`` a projection of the positional encoding ``pos`` (SAM's dense PE) that starts at zero
    (so the block stays the identity, and attends as without it, at initialisation) and trains. A
    convolutional image encoder's features say little about where a location is, so without it
    sentences that name a position ("the circle on the left", "the topmost star") can only be
    resolved by the decoder; with it, a location can attend to the words that describe where it is.
    Not in the paper; off by default (the full UniRef++ model keeps the authors' fusion).

    ``modulation_order`` is the order of the three chunks of the conditioning layer's output:
    ``"scale_shift_gate"`` (gamma, beta, alpha; this library's adapters) or ``"shift_scale_gate"``
    (the authors' UniRef++ ``adaLN_modulation``). ``attn_dropout`` is the dropout on the attention
    probabilities in training (the authors use 0.1).
    """

    dim: int = 256
    num_heads: int = 8
    head_dim: int = 32
    backend: str = "sdpa"
    qkv_bias: bool = True
    match_logit: float = 48.0
    mask_pos_logit: float = 0.0
    lang_pos: bool = False
    modulation_order: str = "scale_shift_gate"
    attn_dropout: float = 0.0

    def __post_init__(self) -> None:
        check_positive_int("dim", self.dim, MAX_WIDTH)
        check_positive_int("num_heads", self.num_heads, MAX_WIDTH)
        check_positive_int("head_dim", self.head_dim, MAX_WIDTH)
        if self.num_heads * self.head_dim > MAX_WIDTH:
            raise ValueError(f"num_heads x head_dim must be at most {MAX_WIDTH}, got {self.num_heads} x {self.head_dim}")
        check_choice("backend", self.backend, BACKENDS)
        if not isinstance(self.qkv_bias, bool):
            raise TypeError(f"qkv_bias must be a bool, got {self.qkv_bias!r}")
        if isinstance(self.match_logit, bool) or not isinstance(self.match_logit, (int, float)) or self.match_logit < 0:
            raise ValueError(f"match_logit must be a number >= 0, got {self.match_logit!r}")
        if isinstance(self.mask_pos_logit, bool) or not isinstance(self.mask_pos_logit, (int, float)) or self.mask_pos_logit < 0:
            raise ValueError(f"mask_pos_logit must be a number >= 0, got {self.mask_pos_logit!r}")
        if not isinstance(self.lang_pos, bool):
            raise TypeError(f"lang_pos must be a bool, got {self.lang_pos!r}")
        check_choice("modulation_order", self.modulation_order, MODULATION_ORDERS)
        check_probability("attn_dropout", self.attn_dropout)


@dataclass
class ReferenceTokens:
    """Reference features for one branch of UniFusion.

    - ``keys``: ``[B, L, C]`` (language: projected words; mask: reference-frame visual features)
    - ``values``: ``[B, L, C]`` (language: the same words; mask: mask-encoder features)
    - ``padding_mask``: ``[B, L]`` bool, ``True`` = padded token, or ``None`` when all are valid.
      A sample whose tokens are all padded has no reference: its branch contributes exactly zero.
    - ``pooled``: optional ``[B, C]`` condition of the modulation layer; ``None`` = the mean of the
      valid keys. The full UniRef++ model gives the mean of each reference's own valid keys,
      averaged over its references (the authors' rule, which differs from the mean over all
      tokens when references have different sizes).
    - ``local``: optional ``[B, L]`` bool, ``True`` for tokens of an earlier frame of the query's own video,
      which take the locality prior's key encoding (``mask_pos_logit``); ``False`` for tokens of another
      image (an example shown for the object), which match on appearance alone. ``None``: every token is
      local whenever a positional encoding is passed.
    """

    keys: torch.Tensor
    values: torch.Tensor
    padding_mask: torch.Tensor | None = None
    pooled: torch.Tensor | None = None
    local: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.keys.dim() != 3 or self.values.shape != self.keys.shape:
            raise ValueError(
                f"keys and values must both be [B, L, C], got {tuple(self.keys.shape)} and {tuple(self.values.shape)}"
            )
        if self.padding_mask is not None and self.padding_mask.shape != self.keys.shape[:2]:
            raise ValueError(
                f"padding_mask must be [B, L] = {tuple(self.keys.shape[:2])}, got {tuple(self.padding_mask.shape)}"
            )
        if self.pooled is not None and self.pooled.shape != (self.keys.shape[0], self.keys.shape[2]):
            raise ValueError(
                f"pooled must be [B, C] = {(self.keys.shape[0], self.keys.shape[2])}, got {tuple(self.pooled.shape)}"
            )
        if self.local is not None and (self.local.dtype != torch.bool or self.local.shape != self.keys.shape[:2]):
            raise ValueError(f"local must be a [B, L] = {tuple(self.keys.shape[:2])} bool tensor, got "
                             f"{self.local.dtype} {tuple(self.local.shape)}")

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
        """Concatenate several references (first + previous frame, K shots) along the token axis.
        Their ``pooled`` conditions, when all have one, are averaged."""
        if not refs:
            raise ValueError("cat needs at least one ReferenceTokens")
        if len(refs) == 1:
            return refs[0]
        masks = None
        if any(r.padding_mask is not None for r in refs):
            masks = torch.cat([r.valid_mask().logical_not() for r in refs], dim=1)
        with_pooled = [r.pooled is not None for r in refs]
        if any(with_pooled) and not all(with_pooled):
            raise ValueError("cannot concatenate references where only some carry a pooled condition")
        pooled = torch.stack([r.pooled for r in refs]).mean(0) if all(with_pooled) else None
        local = None
        if any(r.local is not None for r in refs):
            local = torch.cat([r.local if r.local is not None else torch.ones(r.keys.shape[:2], dtype=torch.bool,
                                                                              device=r.keys.device) for r in refs], 1)
        return cls(torch.cat([r.keys for r in refs], 1), torch.cat([r.values for r in refs], 1), masks, pooled, local)

    def valid_mask(self) -> torch.Tensor:
        """``[B, L]`` bool, ``True`` for real tokens."""
        if self.padding_mask is None:
            return torch.ones(self.keys.shape[:2], dtype=torch.bool, device=self.keys.device)
        return ~self.padding_mask


class UniFusion(nn.Module):
    """The shared fusion block. ``forward(feature, lang=None, mask=None, pos=None) -> feature'``, all ``[B, C, H, W]``."""

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
        self.pos_proj = None
        if self.config.mask_pos_logit > 0:
            self.pos_proj = nn.Linear(c, inner, bias=False)
            with torch.no_grad():
                self.pos_proj.weight.copy_(self._scaled_orthogonal(self.config.mask_pos_logit, norm_sq=0.5 * c))
        self.lang_pos_proj = None
        if self.config.lang_pos:
            self.lang_pos_proj = nn.Linear(c, inner, bias=False)
            nn.init.zeros_(self.lang_pos_proj.weight)
        if self.config.match_logit > 0:
            self._init_matching(self.config.match_logit)
        self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(c, 3 * c))
        nn.init.zeros_(self.modulation[1].weight)
        nn.init.zeros_(self.modulation[1].bias)

    def _scaled_orthogonal(self, logit: float, norm_sq: float) -> torch.Tensor:
        """``s * O`` ``[inner, C]`` with orthonormal rows ``O`` (orthonormal columns when inner > C). For
        inputs x with ``|x|^2 ~ norm_sq``, per head ``(s O_h x) . (s O_h x) / sqrt(d)`` is about
        ``s^2 * d * min(1, C / inner) * norm_sq / C / sqrt(d)``; ``s`` is chosen to make it ``logit``."""
        c, inner, d = self.config.dim, self.config.num_heads * self.config.head_dim, self.config.head_dim
        weight = torch.empty(inner, c)
        nn.init.orthogonal_(weight)
        return weight * (logit / (d**0.5 * min(1.0, c / inner) * norm_sq / c)) ** 0.5

    @torch.no_grad()
    def _init_matching(self, logit: float) -> None:
        """``W_q = W_k = s * O`` (see :meth:`_scaled_orthogonal`; LayerNorm-ed inputs, ``|x|^2 ~ C``)."""
        weight = self._scaled_orthogonal(logit, norm_sq=float(self.config.dim))
        for proj in (self.q_proj, self.k_proj):
            proj.weight.copy_(weight)
            if proj.bias is not None:
                proj.bias.zero_()

    def forward(
        self,
        feature: torch.Tensor,
        lang: ReferenceTokens | None = None,
        mask: ReferenceTokens | None = None,
        pos: torch.Tensor | None = None,
        lang_pos: torch.Tensor | None = None,
        key_pos: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Fuse the language and/or mask references into ``feature`` ``[B, C, H, W]``. ``pos``
        ``[1 or B, C, H, W]``, the positional encoding of the feature's grid, is needed by (and only
        used for) the mask branch when ``mask_pos_logit > 0``; ``lang_pos`` (the same encoding, never
        zeroed) by the language branch when ``lang_pos`` is on. ``key_pos`` ``[1 or B, C, h', w']``: the
        encoding of the mask references' grid when it is coarser than the feature's (pooled references;
        default ``pos``)."""
        if feature.dim() != 4 or feature.shape[1] != self.config.dim:
            raise ValueError(f"feature must be [B, {self.config.dim}, H, W], got {tuple(feature.shape)}")
        out = feature
        if lang is not None:
            if self.lang_pos_proj is not None:
                b, c, h, w = feature.shape
                if lang_pos is None or lang_pos.dim() != 4 or lang_pos.shape[0] not in (1, b) \
                        or lang_pos.shape[1:] != (c, h, w):
                    raise ValueError(f"this UniFusion's language branch is position-aware (lang_pos): pass lang_pos "
                                     f"[1 or {b}, {c}, {h}, {w}], got "
                                     f"{None if lang_pos is None else tuple(lang_pos.shape)}")
                out = out + self.fuse(feature, lang, query_pos=lang_pos)
            else:
                out = out + self.fuse(feature, lang)
        if mask is not None:
            if self.pos_proj is not None:
                if pos is None:
                    raise ValueError("this UniFusion has a locality prior (mask_pos_logit > 0): pass pos, "
                                     "the positional encoding of the feature's grid")
                b, c, h, w = feature.shape
                if pos.dim() != 4 or pos.shape[0] not in (1, b) or pos.shape[1:] != (c, h, w):
                    raise ValueError(f"pos must be [1 or {b}, {c}, {h}, {w}], got {tuple(pos.shape)}")
            if key_pos is not None and (self.pos_proj is None or pos is None):
                raise ValueError("key_pos needs a UniFusion with a locality prior (mask_pos_logit > 0) and pos")
            if self.pos_proj is not None:
                out = out + self.fuse(feature, mask, pos, key_pos=key_pos)
            else:
                out = out + self.fuse(feature, mask)
        return out

    def fuse(self, feature: torch.Tensor, ref: ReferenceTokens, pos: torch.Tensor | None = None,
             query_pos: torch.Tensor | None = None, key_pos: torch.Tensor | None = None) -> torch.Tensor:
        """One branch: the residual ``alpha * (O * (1 + gamma) + beta)`` as ``[B, C, H, W]``. With
        ``pos`` ``[1 or B, C, H, W]``, the references are maps on the feature's grid (``L = K * H * W``
        tokens; with ``key_pos`` ``[1 or B, C, h', w']`` maps on that coarser grid, ``K * h' * w'`` tokens)
        and ``pos_proj(pos)`` joins the queries, ``pos_proj(key_pos or pos)`` every local reference's keys
        (``ref.local``). With
        ``query_pos`` (same shape), ``lang_pos_proj(query_pos)`` joins the queries only."""
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
        q = self.q_proj(self.norm_q(tokens))  # [B, HW, inner]
        k = self.k_proj(self.norm_k(ref.keys))  # [B, L, inner]
        if pos is not None:
            if self.pos_proj is None:
                raise ValueError("pos needs a UniFusion with a locality prior (mask_pos_logit > 0)")
            grid = pos if key_pos is None else key_pos
            n = grid.shape[-2] * grid.shape[-1]
            if k.shape[1] % n:
                raise ValueError(f"with pos, references must be maps on the {grid.shape[-2]}x{grid.shape[-1]} grid; "
                                 f"got {k.shape[1]} tokens")
            where = self.pos_proj(pos.flatten(2).transpose(1, 2))  # [1 or B, HW, inner]
            q = q + where
            where_k = where if key_pos is None else self.pos_proj(key_pos.flatten(2).transpose(1, 2))
            where_k = where_k.repeat(1, k.shape[1] // n, 1)  # [1 or B, L, inner]
            if ref.local is not None:  # tokens of other images (examples) match on appearance alone
                where_k = where_k * ref.local[..., None].to(where_k.dtype)
            k = k + where_k
        if query_pos is not None:
            q = q + self.lang_pos_proj(query_pos.flatten(2).transpose(1, 2))  # [1 or B, HW, inner]
        q = q.view(b, h * w, heads, hd).transpose(1, 2)
        k = k.view(b, -1, heads, hd).transpose(1, 2)
        v = self.v_proj(ref.values).view(b, -1, heads, hd).transpose(1, 2)
        dropout = self.config.attn_dropout if self.training else 0.0
        attn = cross_attention(q, k, v, padding, backend=self.config.backend, dropout=dropout)  # [B, heads, HW, hd]
        o = self.out_proj(attn.transpose(1, 2).reshape(b, h * w, heads * hd))  # [B, HW, C]

        pooled = ref.pooled
        if pooled is None:
            weights = valid.to(ref.keys.dtype)[..., None]  # [B, L, 1]
            pooled = (ref.keys * weights).sum(1) / weights.sum(1).clamp(min=1.0)  # [B, C]
        first, second, alpha = self.modulation(pooled).unsqueeze(1).chunk(3, dim=-1)  # each [B, 1, C]
        gamma, beta = (first, second) if self.config.modulation_order == "scale_shift_gate" else (second, first)
        delta = alpha * (o * (1 + gamma) + beta)  # [B, HW, C]
        delta = delta * has_ref.to(delta.dtype)[:, None, None]
        return delta.transpose(1, 2).reshape(b, c, h, w)

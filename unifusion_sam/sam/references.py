"""Each object's references, grouped for UniFusion: what the adapter's forward and the onnxruntime model
(:mod:`unifusion_sam.sam.onnx`) both build between their stages (B samples or objects, C channels).

- :func:`group_references`: every sample's mask-reference tokens side by side, padded;
- :func:`mean_by_owner`: the mean prototype per sample;
- :func:`stack_text`: every sample's words, padded;
- :class:`References`: the result, ready for fusion;
- :func:`object_text` / :func:`object_masks`: the same from the ``ObjectQuery`` of each object on a frame.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..fusion.unifusion import ReferenceTokens
from ..interface import MaskReference, ObjectQuery


def group_references(
    keys: torch.Tensor, values: torch.Tensor, owner: torch.Tensor, batch: int, local: torch.Tensor | None = None
) -> ReferenceTokens:
    """Concatenate each sample's reference tokens along the token axis and pad to a common length.

    ``keys``/``values``: ``[R, T, C]`` (T tokens per reference); ``owner``: ``[R]``; ``local``: optional
    ``[R]`` bool, which references take the locality prior (spread over their tokens). Returns tokens
    ``[B, Kmax * T, C]`` with a padding mask; a sample without references is fully padded.
    """
    r, t, c = keys.shape
    counts = torch.bincount(owner, minlength=batch)  # [B]
    kmax = max(int(counts.max()), 1)
    out_k = keys.new_zeros(batch, kmax * t, c)
    out_v = values.new_zeros(batch, kmax * t, c)
    padding = torch.ones(batch, kmax * t, dtype=torch.bool, device=keys.device)
    out_local = None if local is None else torch.zeros(batch, kmax * t, dtype=torch.bool, device=keys.device)
    slot = torch.zeros(batch, dtype=torch.long)
    for i in range(r):
        b = int(owner[i])
        s = int(slot[b]) * t
        out_k[b, s : s + t] = keys[i]
        out_v[b, s : s + t] = values[i]
        padding[b, s : s + t] = False
        if out_local is not None:
            out_local[b, s : s + t] = bool(local[i])
        slot[b] += 1
    return ReferenceTokens(out_k, out_v, padding, local=out_local)


def mean_by_owner(values: torch.Tensor, owner: torch.Tensor, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Average ``[R, C]`` rows per owning sample: ``[B, C]`` and a ``[B]`` bool "has any"."""
    sums = values.new_zeros(batch, values.shape[1]).index_add(0, owner, values)
    counts = torch.bincount(owner, minlength=batch).to(values.dtype)
    return sums / counts.clamp(min=1)[:, None], counts > 0


@dataclass
class References:
    """Per-sample references ready for fusion (B samples, C channels).

    ``lang``: word tokens ``[B, L, C]`` (rows without a sentence fully padded), ``text_pooled``
    ``[B, C]``, ``has_text`` ``[B]``; ``mask``: reference tokens ``[B, K*h*w, C]`` (first + previous
    frame or K shots, padded), ``mask_pooled`` ``[B, C]`` prototypes, ``has_mask`` ``[B]``;
    ``tracking`` ``[B]`` bool: the mask references are earlier frames of the sample's video (see
    :class:`SamBatch`), ``None`` for none.
    """

    lang: ReferenceTokens | None = None
    text_pooled: torch.Tensor | None = None
    has_text: torch.Tensor | None = None
    mask: ReferenceTokens | None = None
    mask_pooled: torch.Tensor | None = None
    has_mask: torch.Tensor | None = None
    tracking: torch.Tensor | None = None

    def has_any(self) -> torch.Tensor | None:
        """``[B]`` bool: the sample has at least one reference (``None`` when no branch is present)."""
        flags = [f for f in (self.has_text, self.has_mask) if f is not None]
        if not flags:
            return None
        out = flags[0]
        for f in flags[1:]:
            out = out | f
        return out


def stack_text(words: list[torch.Tensor | None], pooled: list[torch.Tensor | None]) -> References:
    """Per-sample word features ``[L_i, C]`` (or ``None``) -> padded language references for the batch."""
    b = len(words)
    present = [w for w in words if w is not None]
    if not present:
        return References()
    c, device, dtype = present[0].shape[-1], present[0].device, present[0].dtype
    length = max(w.shape[0] for w in present)
    tokens = torch.zeros(b, length, c, device=device, dtype=dtype)
    padding = torch.ones(b, length, dtype=torch.bool, device=device)
    pooled_out = torch.zeros(b, c, device=device, dtype=dtype)
    has = torch.zeros(b, dtype=torch.bool, device=device)
    for i, (w, p) in enumerate(zip(words, pooled)):
        if w is None:
            continue
        tokens[i, : w.shape[0]] = w
        padding[i, : w.shape[0]] = False
        pooled_out[i] = p
        has[i] = True
    return References(lang=ReferenceTokens(tokens, tokens, padding), text_pooled=pooled_out, has_text=has)


def object_text(objects: Sequence[ObjectQuery]) -> References:
    """The sentences of the objects on a frame (``None`` where an object has none) as padded language references."""
    if not objects:
        return References()
    return stack_text([o.text.words[0][~o.text.padding_mask[0]] if o.text is not None else None for o in objects],
                      [o.text.pooled[0] if o.text is not None else None for o in objects])


def object_masks(objects: Sequence[ObjectQuery], tracking: bool, device: torch.device | str = "cpu"
                 ) -> tuple[MaskReference, torch.Tensor, torch.Tensor | None] | None:
    """Every mask reference of the ``N`` objects on a frame, stacked: ``(encoded, owner, tracking_rows)`` with
    ``R`` references, ``owner`` ``[R]`` (the object of each) and ``tracking_rows`` ``[N]`` (whose queries take
    the grid encoding: every object's when all references are frames of this video, ``None`` when none is,
    else the owners of those that are). A reference says itself whether it is a frame of this video (local)
    or an example from another image; one that does not say follows ``tracking``. ``None`` without any."""
    rows = [(i, ref) for i, o in enumerate(objects) for ref in o.masks]
    if not rows:
        return None
    encoded = MaskReference.stack([MaskReference(ref.levels, ref.prototype, ref.local_flags(tracking)) for _, ref in rows])
    owner = torch.tensor([i for i, _ in rows], device=device)
    flags = encoded.local.to(device)
    n = max(len(objects), 1)
    if bool(flags.all()):
        return encoded, owner, torch.ones(n, dtype=torch.bool, device=device)
    if not bool(flags.any()):
        return encoded, owner, None
    tracking_rows = torch.zeros(n, dtype=torch.bool, device=device)
    tracking_rows[owner[flags]] = True  # examples of some objects (other images) beside frames of this video
    return encoded, owner, tracking_rows

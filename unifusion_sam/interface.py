"""The contract between a reference-segmentation network and the shared inference code.

Both model families (UniFusion-SAM and the full UniRef++) implement :class:`ReferenceSegmenter`;
:class:`~unifusion_sam.inference.predictor.ReferencePredictor` (``predict``) and
:class:`~unifusion_sam.inference.session.VideoSession` (``track``) use nothing else, so they work
unchanged for both. A network's stages, in the order inference calls them:

1. ``prepare_image(rgb, task)`` -> :class:`PreparedImage` (the family's resize, normalisation and
   padding; ``task`` is ``"ris"``, ``"fss"`` or ``"video"`` because the full model resizes each task
   differently), and ``prepare_mask(mask, prepared)`` for a mask of that image;
2. ``encode_frame(prepared)`` -> an opaque *frame* (SAM: the image embedding; UniRef++: its backbone
   features), cached by the predictor;
3. ``encode_text(sentences)`` -> :class:`~unifusion_sam.encoders.text.TextFeatures`;
4. ``encode_masks(frames, prepared, masks)`` -> :class:`MaskReference`, mask references on frames
   that were encoded before (the video session reuses the previous frame's features);
5. ``decode_objects(frame, prepared, objects, task=..., tracking=..., prompts=...)`` -> :class:`Decoded`, all
   objects of a frame in one batched forward, one mask and one score per object;
6. ``postprocess(decoded, prepared, task)`` -> :class:`MaskResult` at the image's original size.

Inference runs under ``torch.no_grad()`` with every module in eval mode; the network itself stays
stateless. :class:`~unifusion_sam.inference.mixin.ReferenceInferenceMixin` gives a network ``predict`` /
``set_image`` / ``track``. This module is the contract only: it imports no inference code and no family.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from .encoders.text import TextFeatures
from .fusion.unifusion import ReferenceTokens

TASKS = ("ris", "fss", "video")


@dataclass
class PreparedImage:
    """A preprocessed image: ``pixels`` ``[1, 3, Hp, Wp]`` normalised and padded (the network input);
    ``input_size`` the resized size before padding and ``original_size`` the given size, both (h, w);
    ``unit`` ``[1, 3, Hp, Wp]`` the same image in [0, 1] where a family's mask encoder wants it."""

    pixels: torch.Tensor
    input_size: tuple[int, int]
    original_size: tuple[int, int]
    unit: torch.Tensor | None = None

    @property
    def padded_size(self) -> tuple[int, int]:
        return tuple(self.pixels.shape[-2:])


@dataclass
class MaskReference:
    """``R`` encoded mask references.

    ``levels``: one :class:`ReferenceTokens` per fusion level, keys / values ``[R, T_l, C]`` (reference
    frame features / mask features), optional padding ``[R, T_l]`` and pooled condition ``[R, C]``;
    ``prototype``: optional ``[R, C]`` per-reference vector a family feeds elsewhere (UniFusion-SAM's
    extra decoder token); ``local``: optional ``[R]`` bool, whether each reference is a frame of the
    query's own video (``True``: where the object was is a cue, UniFusion's locality prior) or another
    image, an example shown for the object (``False``); ``None``: as the caller's ``tracking`` says."""

    levels: list[ReferenceTokens]
    prototype: torch.Tensor | None = None
    local: torch.Tensor | None = None

    def with_local(self, value: bool) -> MaskReference:
        """The same references marked as frames of the query's video (``True``) or other images (``False``)."""
        flags = torch.full((len(self),), bool(value), dtype=torch.bool, device=self.levels[0].keys.device)
        return MaskReference(self.levels, self.prototype, flags)

    def local_flags(self, default: bool) -> torch.Tensor:
        """``[R]`` bool: :attr:`local`, or ``default`` for every reference when it is not set."""
        if self.local is not None:
            return self.local
        return torch.full((len(self),), bool(default), dtype=torch.bool, device=self.levels[0].keys.device)

    def __len__(self) -> int:
        return int(self.levels[0].keys.shape[0])

    def __getitem__(self, index: int | slice | list[int] | torch.Tensor) -> MaskReference:
        """The references ``index`` selects (an int keeps the ``R`` axis, with length 1)."""
        if isinstance(index, int):
            index = slice(index, index + 1)

        def pick(t):
            return None if t is None else t[index]

        levels = [ReferenceTokens(lv.keys[index], lv.values[index], pick(lv.padding_mask), pick(lv.pooled))
                  for lv in self.levels]
        return MaskReference(levels, pick(self.prototype), pick(self.local))

    @classmethod
    def stack(cls, refs: Sequence[MaskReference]) -> MaskReference:
        """Concatenate along ``R``; tokens of different lengths are padded (and masked)."""
        if not refs:
            raise ValueError("stack needs at least one MaskReference")
        if len({len(r.levels) for r in refs}) != 1:
            raise ValueError(f"references have different numbers of levels: {[len(r.levels) for r in refs]}")
        levels = []
        for lv in zip(*(r.levels for r in refs)):
            length = max(t.keys.shape[1] for t in lv)
            keys, values, pads = [], [], []
            for t in lv:
                extra = length - t.keys.shape[1]
                keys.append(torch.nn.functional.pad(t.keys, (0, 0, 0, extra)))
                values.append(torch.nn.functional.pad(t.values, (0, 0, 0, extra)))
                pad = t.valid_mask().logical_not()
                pads.append(torch.nn.functional.pad(pad, (0, extra), value=True))
            padding = torch.cat(pads)
            pooled = [t.pooled for t in lv]
            if any(p is None for p in pooled) and not all(p is None for p in pooled):
                raise ValueError("cannot stack references where only some carry a pooled condition")
            levels.append(ReferenceTokens(torch.cat(keys), torch.cat(values), padding if padding.any() else None,
                                          None if pooled[0] is None else torch.cat(pooled)))
        protos = [r.prototype for r in refs]
        prototype = None if any(p is None for p in protos) else torch.cat(protos)
        local = None
        if any(r.local is not None for r in refs):
            if not all(r.local is not None for r in refs):
                raise ValueError("cannot stack references where only some say whether they are local")
            local = torch.cat([r.local for r in refs])
        return cls(levels, prototype, local)


@dataclass
class ObjectQuery:
    """What to segment for one object: a sentence (``text``, a :class:`TextFeatures` of batch 1) and/or
    mask references (``masks``, each of length 1: K support shots, or first + previous frame)."""

    text: TextFeatures | None = None
    masks: list[MaskReference] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.text is None and not self.masks:
            raise ValueError("an object needs a sentence or at least one mask reference")


@dataclass
class Prompts:
    """SAM-style prompts in pixels of the original image: ``points`` ``[N, 2]`` (x, y) with ``labels``
    ``[N]`` (1 foreground, 0 background), ``box`` ``[4]`` (x0, y0, x1, y1)."""

    points: np.ndarray | None = None
    labels: np.ndarray | None = None
    box: np.ndarray | None = None


@dataclass
class Decoded:
    """One mask per object: ``logits`` ``[N, 1, h, w]`` at the family's own resolution, ``scores`` ``[N]``
    (the object score compared with the video threshold sigma)."""

    logits: torch.Tensor
    scores: torch.Tensor
    extras: dict[str, Any] = field(default_factory=dict)


@dataclass
class MaskResult:
    """``probs`` ``[N, H, W]`` in [0, 1] and ``masks`` ``[N, H, W]`` bool at the original size; ``logits``
    ``[N, H, W]`` where the family has them at that size (else ``None``); ``boxes`` ``[N, 4]`` (x0, y0,
    x1, y1 pixels) where the family predicts boxes."""

    probs: torch.Tensor
    masks: torch.Tensor
    logits: torch.Tensor | None = None
    boxes: torch.Tensor | None = None


@runtime_checkable
class ReferenceSegmenter(Protocol):
    """The stages the shared predictor and video session call (see the module docstring)."""

    device: torch.device

    def prepare_image(self, rgb: np.ndarray, task: str, pad_to: tuple[int, int] | None = None) -> PreparedImage: ...

    def prepare_mask(self, mask: np.ndarray, prepared: PreparedImage) -> torch.Tensor: ...

    def encode_frame(self, prepared: PreparedImage) -> Any: ...

    def encode_text(self, texts: list[str]) -> TextFeatures: ...

    def encode_masks(self, frames: Sequence[Any], prepared: Sequence[PreparedImage], masks: torch.Tensor) -> MaskReference: ...

    def decode_objects(self, frame: Any, prepared: PreparedImage, objects: Sequence[ObjectQuery], *, task: str,
               tracking: bool = False, prompts: Prompts | None = None) -> Decoded: ...

    def postprocess(self, decoded: Decoded, prepared: PreparedImage, task: str) -> MaskResult: ...

    def encoder_version(self) -> Any: ...

"""Batched inputs and outputs of the UniFusion-SAM network, for mixed-task batches.

A batch holds B query images and R reference pairs; ``ref_owner[r]`` says which sample reference
``r`` belongs to, so each sample has its own number of references (0 for RIS, K for K-shot FSS,
1-2 for VOS / RVOS). ``texts[i]`` is the sentence of sample ``i`` or ``None``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class SamBatch:
    """Inputs of :meth:`UniFusionSam.forward` (S = SAM input size, h = w = S / 16).

    Query side (one of ``pixels`` / ``embeddings``):
      - ``pixels``: ``[B, 3, S, S]`` normalised and padded;
      - ``embeddings``: ``[B, D, h, w]`` image-encoder outputs (``UniFusionSam.encode_image``: SAM's
        embedding, D = 256, or SAM 2's frame features; embedding cache).
    References (``R >= 0``):
      - ``ref_units``: ``[R, 3, S, S]`` images in [0, 1] (resized and padded like SAM's input);
      - ``ref_masks``: ``[R, S, S]`` binary masks;
      - ``ref_pixels`` ``[R, 3, S, S]`` or ``ref_embeddings`` ``[R, D, h, w]`` for the frozen encoder;
      - ``ref_owner``: ``[R]`` long, the sample each reference belongs to.
    Optional prompts: ``point_coords`` ``[B, N, 2]`` / ``point_labels`` ``[B, N]`` in SAM input
    coordinates, ``boxes`` ``[B, 4]``.
    ``tracking``: ``[B]`` bool, the sample's references are earlier frames of its own video (VOS,
    RVOS), so where the object was is a cue (UniFusion's locality prior, ``fusion.mask_pos_logit``);
    ``None``: no sample's are (few-shot supports are other images). ``ref_local``: ``[R]`` bool, per
    reference, for samples that mix both kinds (examples of the object from other images and its previous
    frame): only the local ones take the prior; ``None``: every reference of a tracking sample does.
    """

    texts: list[str | None]
    pixels: torch.Tensor | None = None
    embeddings: torch.Tensor | None = None
    ref_units: torch.Tensor | None = None
    ref_masks: torch.Tensor | None = None
    ref_pixels: torch.Tensor | None = None
    ref_embeddings: torch.Tensor | None = None
    ref_owner: torch.Tensor | None = None
    point_coords: torch.Tensor | None = None
    point_labels: torch.Tensor | None = None
    boxes: torch.Tensor | None = None
    tracking: torch.Tensor | None = None
    ref_local: torch.Tensor | None = None
    meta: dict = field(default_factory=dict)

    @property
    def batch_size(self) -> int:
        return len(self.texts)

    def to(self, device: torch.device | str) -> SamBatch:
        """A copy with every tensor on ``device``."""
        moved = {f: (v.to(device) if isinstance(v, torch.Tensor) else v) for f, v in self.__dict__.items()}
        return SamBatch(**moved)

    @property
    def num_refs(self) -> int:
        return 0 if self.ref_masks is None else int(self.ref_masks.shape[0])

    def validate(self) -> None:
        b = self.batch_size
        if b == 0:
            raise ValueError("a batch needs at least one sample")
        if (self.pixels is None) == (self.embeddings is None):
            raise ValueError("give exactly one of pixels or embeddings for the query images")
        query = self.pixels if self.pixels is not None else self.embeddings
        if query.shape[0] != b:
            raise ValueError(f"texts has {b} entries but the query tensor has batch {query.shape[0]}")
        if self.num_refs:
            if self.ref_units is None or self.ref_owner is None:
                raise ValueError("references need ref_units, ref_masks and ref_owner")
            if (self.ref_pixels is None) == (self.ref_embeddings is None):
                raise ValueError("give exactly one of ref_pixels or ref_embeddings for the references")
            if self.ref_owner.shape != (self.num_refs,):
                raise ValueError(f"ref_owner must be [R] = [{self.num_refs}], got {tuple(self.ref_owner.shape)}")
            if int(self.ref_owner.min()) < 0 or int(self.ref_owner.max()) >= b:
                raise ValueError(f"ref_owner values must be in [0, {b}), got {self.ref_owner.tolist()}")
        if self.tracking is not None and (self.tracking.dtype != torch.bool or self.tracking.shape != (b,)):
            raise ValueError(f"tracking must be a [B] = [{b}] bool tensor, got {self.tracking.dtype} {tuple(self.tracking.shape)}")
        if self.ref_local is not None and (self.ref_local.dtype != torch.bool or self.ref_local.shape != (self.num_refs,)):
            raise ValueError(f"ref_local must be an [R] = [{self.num_refs}] bool tensor, got {self.ref_local.dtype} "
                             f"{tuple(self.ref_local.shape)}")


@dataclass
class SamOutput:
    """Outputs: ``logits`` ``[B, 1, 4h, 4w]`` low-resolution mask logits; ``scores`` ``[B]`` the object score
    (SAM 1: the predicted IoU; SAM 2: its object-score head as a probability); with ``text_point``,
    ``point_heat`` ``[B, h*w]`` the text point's heat map and ``has_point`` ``[B]`` the samples that have one."""

    logits: torch.Tensor
    scores: torch.Tensor
    point_heat: torch.Tensor | None = None
    has_point: torch.Tensor | None = None

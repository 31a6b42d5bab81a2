"""The batch the full UniRef++ model's training ``forward`` takes (:class:`UniRefBatch`); the training samples
that make it are in :mod:`unifusion_sam.uniref.training.samples`."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .losses.criterion import Target


@dataclass
class UniRefBatch:
    """``B`` samples of one task family, zero-padded: ``pixels`` ``[B, 3, Hp, Wp]``, ``padding`` ``[B, Hp, Wp]``
    (True = pad), ``image_sizes`` unpadded (h, w); ``texts`` (``None`` where a sample has no sentence);
    references of all samples ``ref_pixels`` ``[R, 3, Hr, Wr]`` / ``ref_padding`` / ``ref_masks``
    ``[R, Hr, Wr]`` with ``ref_owner`` (the sample of each); ``targets`` one :class:`Target` per sample;
    ``vos``: masks are learnt at stride 1 (mask-referred video objects, as the authors)."""

    pixels: torch.Tensor
    padding: torch.Tensor
    image_sizes: list[tuple[int, int]]
    texts: list[str | None]
    targets: list[Target]
    tasks: list[str]
    vos: bool = False
    ref_pixels: torch.Tensor | None = None
    ref_padding: torch.Tensor | None = None
    ref_sizes: list[tuple[int, int]] = field(default_factory=list)
    ref_masks: torch.Tensor | None = None
    ref_owner: list[int] = field(default_factory=list)

    def to(self, device: torch.device | str) -> UniRefBatch:
        def move(t):
            return None if t is None else t.to(device)

        targets = [Target(t.labels.to(device), t.boxes.to(device), move(t.masks), move(t.color_similarity))
                   for t in self.targets]
        return UniRefBatch(self.pixels.to(device), self.padding.to(device), self.image_sizes, self.texts, targets,
                           self.tasks, self.vos, move(self.ref_pixels), move(self.ref_padding), self.ref_sizes,
                           move(self.ref_masks), self.ref_owner)

"""Turn :class:`~unifusion_sam.data.types.RefSample` records into SAM-ready tensors (:class:`SamSample`), with
the shared augmentation (:func:`~unifusion_sam.training.augment.augment`), and batch them (:func:`collate_sam`).

Each sample carries cache keys for its images when they are deterministic (same source item, same flip),
so the frozen encoder's embeddings can be reused across steps.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ...data.types import RefSample
from ...training.augment import augment
from ..adapter.batch import SamBatch
from ..backends import SamTransform


@dataclass
class SamSample:
    """Tensors of one sample at SAM's input size S: ``pixels`` ``[3, S, S]`` (normalised, padded),
    ``target`` / ``valid`` ``[S, S]``; references ``ref_pixels``/``ref_units`` ``[K, 3, S, S]``,
    ``ref_masks`` ``[K, S, S]``; cache keys (``None`` = not cacheable); ``ref_local``: per reference, whether
    it is a frame of the query's video (``None``: as the task says; set for example-prompted samples)."""

    task: str
    text: str | None
    pixels: torch.Tensor
    target: torch.Tensor
    valid: torch.Tensor
    ref_pixels: torch.Tensor
    ref_units: torch.Tensor
    ref_masks: torch.Tensor
    key: str | None = None
    ref_keys: list[str | None] = field(default_factory=list)
    ref_local: list[bool] | None = None

    @property
    def tracking(self) -> bool:
        """Whether the query's references (some of them) are earlier frames of its own video."""
        return any(self.ref_local) if self.ref_local is not None else self.task in TRACKING_TASKS


def prepare_sam_sample(sample: RefSample, transform: SamTransform, rng: np.random.Generator,
                       flip_prob: float) -> SamSample:
    """Augment and convert one sample to tensors (runs in data-loader workers)."""
    sample, flipped = augment(sample, rng, flip_prob)
    query = transform.image(sample.image)
    target = transform.mask(sample.mask)[0]
    h, w = query.input_size
    valid = torch.zeros_like(target)
    valid[:h, :w] = 1
    refs = [transform.image(img) for img in sample.ref_images]
    ref_masks = [transform.mask(m)[0] for m in sample.ref_masks]
    s = transform.image_size
    cacheable = sample.meta.get("cacheable", True)
    suffix = f":flip{int(flipped)}"
    key = sample.meta.get("key")
    ref_keys = sample.meta.get("ref_keys") or [None] * len(refs)
    return SamSample(
        task=sample.task,
        text=sample.text,
        pixels=query.pixels[0],
        target=target,
        valid=valid,
        ref_pixels=torch.stack([r.pixels[0] for r in refs]) if refs else torch.zeros(0, 3, s, s),
        ref_units=torch.stack([r.unit[0] for r in refs]) if refs else torch.zeros(0, 3, s, s),
        ref_masks=torch.stack(ref_masks) if refs else torch.zeros(0, s, s),
        key=(key + suffix) if (cacheable and key) else None,
        ref_keys=[(k + suffix) if (cacheable and k) else None for k in ref_keys],
        ref_local=sample.meta.get("ref_local"),
    )


class SamSamplePrep:
    """The SAM family's :data:`~unifusion_sam.training.mixing.SamplePrep`: :func:`prepare_sam_sample` at a SAM's input size."""

    def __init__(self, transform: SamTransform) -> None:
        self.transform = transform

    def __call__(self, sample: RefSample, rng: np.random.Generator, flip_prob: float) -> SamSample:
        return prepare_sam_sample(sample, self.transform, rng, flip_prob)


TRACKING_TASKS = ("vos", "rvos")  # references are earlier frames of the query's video


@dataclass
class SamTrainBatch:
    """A collated batch: the network's :class:`SamBatch` (with pixels), targets ``[B, S, S]``,
    valid regions ``[B, S, S]``, tasks and cache keys."""

    batch: SamBatch
    targets: torch.Tensor
    valid: torch.Tensor
    tasks: list[str]
    keys: list[str | None]
    ref_keys: list[str | None]


def collate_sam(samples: list[SamSample]) -> SamTrainBatch:
    """Stack prepared samples; references of all samples are concatenated with an owner index."""
    owner = [i for i, s in enumerate(samples) for _ in range(s.ref_masks.shape[0])]
    has_refs = bool(owner)
    batch = SamBatch(
        texts=[s.text for s in samples],
        pixels=torch.stack([s.pixels for s in samples]),
        ref_units=torch.cat([s.ref_units for s in samples]) if has_refs else None,
        ref_masks=torch.cat([s.ref_masks for s in samples]) if has_refs else None,
        ref_pixels=torch.cat([s.ref_pixels for s in samples]) if has_refs else None,
        ref_owner=torch.tensor(owner, dtype=torch.long) if has_refs else None,
        # pseudo-videos are "vos" samples by now: two views of one image, tracked like frames
        tracking=torch.tensor([s.tracking for s in samples]),
        # example-prompted samples mix examples (other images) and previous frames; the others need no flags
        ref_local=torch.tensor([flag for s in samples for flag in (s.ref_local or [s.tracking] * len(s.ref_masks))],
                               dtype=torch.bool) if has_refs and any(s.ref_local is not None for s in samples) else None,
    )
    return SamTrainBatch(
        batch=batch,
        targets=torch.stack([s.target for s in samples]),
        valid=torch.stack([s.valid for s in samples]),
        tasks=[s.task for s in samples],
        keys=[s.key for s in samples],
        ref_keys=[k for s in samples for k in s.ref_keys],
    )

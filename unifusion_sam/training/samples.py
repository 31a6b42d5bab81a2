"""Turn :class:`~unifusion_sam.data.types.RefSample` records into SAM-ready tensors, with augmentation.

Augmentations: horizontal flip (left/right words in the sentence are swapped, video frames flip
together), and for pseudo-videos two random affine views (scale / shift) of one image. Each sample
carries cache keys for its images when they are deterministic (same source item, same flip), so the
frozen encoder's embeddings can be reused across steps.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image

from ..data.synthetic.text import flip_sentence
from ..data.types import RefSample
from ..sam.batch import SamBatch
from ..sam.transforms import SamTransform


@dataclass
class PreparedSample:
    """Tensors of one sample at SAM's input size S: ``pixels`` ``[3, S, S]`` (normalised, padded),
    ``target`` / ``valid`` ``[S, S]``; references ``ref_pixels``/``ref_units`` ``[K, 3, S, S]``,
    ``ref_masks`` ``[K, S, S]``; cache keys (``None`` = not cacheable)."""

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


def random_affine(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator,
                  scale: tuple[float, float] = (0.8, 1.2), shift: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """A random zoom + shift of an image and its mask (the same transform for both)."""
    h, w = mask.shape
    s = float(rng.uniform(*scale))
    tx, ty = rng.uniform(-shift, shift, size=2) * (w, h)
    # PIL's affine maps output (x, y) to input (a x + b y + c, d x + e y + f)
    cx, cy = w / 2, h / 2
    coeffs = (1 / s, 0.0, cx - (cx + tx) / s, 0.0, 1 / s, cy - (cy + ty) / s)
    img = Image.fromarray(image).transform((w, h), Image.AFFINE, coeffs, resample=Image.BILINEAR)
    msk = Image.fromarray(mask.astype(np.uint8) * 255).transform((w, h), Image.AFFINE, coeffs, resample=Image.NEAREST)
    return np.asarray(img), np.asarray(msk) > 127


def augment(sample: RefSample, rng: np.random.Generator, flip_prob: float) -> tuple[RefSample, bool]:
    """Flip (and for pseudo-videos make two affine views); returns the new sample and whether it flipped."""
    if sample.task == "pseudo_vos":
        ref_img, ref_mask = random_affine(sample.image, sample.mask, rng)
        img, mask = random_affine(sample.image, sample.mask, rng)
        task = "vos" if sample.text is None else "rvos"  # a sentence makes it a referring pseudo-video
        sample = RefSample(task, img, mask, sample.text, [ref_img], [ref_mask], {**sample.meta, "cacheable": False})
    flip = bool(rng.random() < flip_prob)
    if not flip:
        return sample, False
    return RefSample(
        task=sample.task,
        image=np.ascontiguousarray(sample.image[:, ::-1]),
        mask=np.ascontiguousarray(sample.mask[:, ::-1]),
        text=None if sample.text is None else flip_sentence(sample.text),
        ref_images=[np.ascontiguousarray(r[:, ::-1]) for r in sample.ref_images],
        ref_masks=[np.ascontiguousarray(m[:, ::-1]) for m in sample.ref_masks],
        meta=sample.meta,
        boxes=None if sample.boxes is None else _flip_boxes(sample.boxes, sample.image.shape[1]),
        labels=sample.labels,
        instance_masks=None if sample.instance_masks is None else np.ascontiguousarray(sample.instance_masks[:, :, ::-1]),
    ), True


def _flip_boxes(boxes: np.ndarray, width: int) -> np.ndarray:
    """``[N, 4]`` pixel ``x0, y0, x1, y1`` mirrored left-right in an image ``width`` wide."""
    out = boxes.copy()
    out[:, 0], out[:, 2] = width - boxes[:, 2], width - boxes[:, 0]
    return out


def prepare(sample: RefSample, transform: SamTransform, rng: np.random.Generator, flip_prob: float) -> PreparedSample:
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
    return PreparedSample(
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
    )


class SamSamplePrep:
    """The SAM family's :data:`~unifusion_sam.training.mixing.SamplePrep`: :func:`prepare` at a SAM's input size."""

    def __init__(self, transform: SamTransform) -> None:
        self.transform = transform

    def __call__(self, sample: RefSample, rng: np.random.Generator, flip_prob: float) -> PreparedSample:
        return prepare(sample, self.transform, rng, flip_prob)


TRACKING_TASKS = ("vos", "rvos")  # references are earlier frames of the query's video


@dataclass
class TrainBatch:
    """A collated batch: the network's :class:`SamBatch` (with pixels), targets ``[B, S, S]``,
    valid regions ``[B, S, S]``, tasks and cache keys."""

    batch: SamBatch
    targets: torch.Tensor
    valid: torch.Tensor
    tasks: list[str]
    keys: list[str | None]
    ref_keys: list[str | None]


def collate(samples: list[PreparedSample]) -> TrainBatch:
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
        tracking=torch.tensor([s.task in TRACKING_TASKS for s in samples]),
    )
    return TrainBatch(
        batch=batch,
        targets=torch.stack([s.target for s in samples]),
        valid=torch.stack([s.valid for s in samples]),
        tasks=[s.task for s in samples],
        keys=[s.key for s in samples],
        ref_keys=[k for s in samples for k in s.ref_keys],
    )

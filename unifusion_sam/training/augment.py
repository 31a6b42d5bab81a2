"""Augmentation of training records shared by every family: horizontal flip (left / right words in the
sentence swapped, references flipped with the image) and, for pseudo-videos, two random affine views of one
image (:func:`augment`)."""

from __future__ import annotations

import numpy as np
from PIL import Image

from ..data.synthetic.text import flip_sentence
from ..data.types import RefSample


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

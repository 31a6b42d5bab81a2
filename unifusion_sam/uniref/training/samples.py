"""Training samples of the full UniRef++ model: a record -> the model's tensors at a jittered scale
(:class:`UniRefSamplePrep`: detectron2's ``ResizeShortestEdge`` with the shorter side drawn per sample from
``min_sizes``, the same for its reference frames; targets as boxes and masks), and their batches
(:func:`collate_uniref` -> :class:`~unifusion_sam.uniref.batch.UniRefBatch`: zero padding to a multiple of
32; box-only data gets BoxInst's colour similarity)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ...data.types import RefSample
from ...training.augment import augment
from ..batch import UniRefBatch
from ..losses.boxinst import box_masks, color_similarity, valid_region
from ..losses.criterion import Target
from ..modeling.config import UniRefConfig
from ..transforms import padded_size, shortest_edge_size


def _resize(array: np.ndarray, size: tuple[int, int], nearest: bool) -> np.ndarray:
    h, w = size
    if array.shape[:2] == (h, w):
        return array
    if nearest:
        return np.asarray(Image.fromarray(array.astype(np.uint8)).resize((w, h), Image.NEAREST)) > 0
    return np.asarray(Image.fromarray(array).resize((w, h), Image.BILINEAR))


@dataclass
class UniRefSample:
    """One prepared sample at its training scale ``h x w``: ``pixels`` ``[3, h, w]`` normalised, ``raw``
    ``[3, h, w]`` uint8 (box-only data), target ``masks`` ``[G, h, w]`` bool, ``boxes`` ``[G, 4]`` pixel
    xyxy, ``labels`` ``[G]``; references ``ref_pixels`` ``[3, hr, wr]`` / ``ref_masks`` ``[hr, wr]``."""

    task: str
    text: str | None
    pixels: torch.Tensor
    masks: torch.Tensor
    boxes: torch.Tensor
    labels: torch.Tensor
    box_only: bool = False
    raw: torch.Tensor | None = None
    original_height: int = 0
    ref_pixels: list[torch.Tensor] = field(default_factory=list)
    ref_masks: list[torch.Tensor] = field(default_factory=list)


class UniRefSamplePrep:
    """The family's per-sample transform (picklable): flip (shared :func:`augment`), scale jitter,
    normalisation, targets. ``sizes[i]`` = ``(min_sizes, max_size)`` of source ``i`` (empty: the model's
    test size for the sample's task)."""

    def __init__(self, config: UniRefConfig, sizes: list[tuple[tuple[int, ...], int | None]]) -> None:
        self.config = config
        self.sizes = sizes
        self.mean = np.asarray(config.pixel_mean, np.float32)
        self.std = np.asarray(config.pixel_std, np.float32)

    def _scale(self, sample: RefSample, rng: np.random.Generator) -> tuple[int, int]:
        min_sizes, max_size = self.sizes[sample.meta.get("source_index", 0)] if self.sizes else ((), None)
        task = {"fss": "fss", "vos": "video", "rvos": "video", "vos_examples": "video"}.get(sample.task, "image")
        test = {"image": self.config.image_sizes, "fss": self.config.fss_sizes, "video": self.config.video_sizes}[task]
        short = int(min_sizes[int(rng.integers(len(min_sizes)))]) if min_sizes else test.min_size
        return short, int(max_size or test.max_size)

    def _pixels(self, rgb: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(((rgb.astype(np.float32) - self.mean) / self.std).transpose(2, 0, 1).copy())

    def __call__(self, sample: RefSample, rng: np.random.Generator, flip_prob: float) -> UniRefSample:
        sample, _ = augment(sample, rng, flip_prob)
        short, long = self._scale(sample, rng)  # one scale for the sample and its reference frames
        h0, w0 = sample.image.shape[:2]
        size = shortest_edge_size(h0, w0, short, long)
        image = _resize(sample.image, size, nearest=False)
        if sample.task == "det":
            if sample.boxes is None or sample.labels is None:
                raise ValueError(f"a detection sample needs boxes and labels ({sample.meta.get('source')})")
            boxes = sample.boxes.astype(np.float32) * np.array([size[1] / w0, size[0] / h0] * 2, np.float32)
            labels = sample.labels.astype(np.int64)
            if self.config.num_classes == 1:
                labels = np.zeros_like(labels)
            elif len(labels) and labels.max() >= self.config.num_classes:
                raise ValueError(f"label {labels.max()} for a model with num_classes={self.config.num_classes}")
            box_only = sample.instance_masks is None
            masks = (np.zeros((len(boxes), *size), bool) if box_only else
                     np.stack([_resize(m, size, True) for m in sample.instance_masks]) if len(boxes) else
                     np.zeros((0, *size), bool))
        else:
            mask = _resize(sample.mask, size, nearest=True)
            masks = mask[None] if mask.any() else np.zeros((0, *size), bool)
            ys, xs = np.nonzero(mask)
            boxes = (np.array([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]], np.float32) if len(xs)
                     else np.zeros((0, 4), np.float32))
            labels, box_only = np.zeros(len(boxes), np.int64), False
        refs, ref_masks = [], []
        for img, m in zip(sample.ref_images, sample.ref_masks):
            rsize = shortest_edge_size(*img.shape[:2], short, long)
            refs.append(self._pixels(_resize(img, rsize, nearest=False)))
            ref_masks.append(torch.from_numpy(_resize(m, rsize, nearest=True).copy()))
        return UniRefSample(
            task=sample.task, text=sample.text, pixels=self._pixels(image), masks=torch.from_numpy(masks.copy()),
            boxes=torch.from_numpy(boxes), labels=torch.from_numpy(labels), box_only=box_only,
            raw=torch.from_numpy(image.transpose(2, 0, 1).copy()) if box_only else None, original_height=h0,
            ref_pixels=refs, ref_masks=ref_masks)


def pad_images(images: list[torch.Tensor], divisibility: int = 32) -> tuple[torch.Tensor, torch.Tensor, list[tuple[int, int]]]:
    """``[3, h_i, w_i]`` tensors -> zero-padded ``[N, 3, Hp, Wp]``, padding ``[N, Hp, Wp]`` (True = pad), sizes."""
    sizes = [(int(x.shape[-2]), int(x.shape[-1])) for x in images]
    hp, wp = padded_size(max(h for h, _ in sizes), max(w for _, w in sizes), divisibility)
    pixels = torch.stack([F.pad(x, (0, wp - x.shape[-1], 0, hp - x.shape[-2])) for x in images])
    padding = torch.ones(len(images), hp, wp, dtype=torch.bool)
    for i, (h, w) in enumerate(sizes):
        padding[i, :h, :w] = False
    return pixels, padding, sizes


def _pad2d(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return F.pad(x, (0, size[1] - x.shape[-1], 0, size[0] - x.shape[-2]))


def collate_uniref(samples: list[UniRefSample], divisibility: int = 32) -> UniRefBatch:
    """Pad and batch prepared samples (targets: boxes normalised cxcywh by each unpadded image size)."""
    pixels, padding, sizes = pad_images([s.pixels for s in samples], divisibility)
    padded = tuple(pixels.shape[-2:])
    targets = []
    for s, (h, w) in zip(samples, sizes):
        b = s.boxes
        boxes = torch.stack([(b[:, 0] + b[:, 2]) / 2 / w, (b[:, 1] + b[:, 3]) / 2 / h,
                             (b[:, 2] - b[:, 0]) / w, (b[:, 3] - b[:, 1]) / h], 1) if len(b) else b.new_zeros(0, 4)
        if s.box_only:  # BoxInst: the boxes' masks and the image's colour similarity
            masks = box_masks(s.boxes, padded)
            similarity = color_similarity(_pad2d(s.raw.float(), padded), valid_region(h, w, padded, s.original_height))
            targets.append(Target(s.labels, boxes, masks, similarity[None].expand(len(b), -1, -1, -1)))
        else:
            targets.append(Target(s.labels, boxes, _pad2d(s.masks.float(), padded)))
    batch = UniRefBatch(pixels, padding, sizes, [s.text for s in samples], targets, [s.task for s in samples],
                        vos=all(s.task in ("vos", "vos_examples") for s in samples))
    refs = [(i, p, m) for i, s in enumerate(samples) for p, m in zip(s.ref_pixels, s.ref_masks)]
    if refs:
        batch.ref_pixels, batch.ref_padding, batch.ref_sizes = pad_images([p for _, p, _ in refs], divisibility)
        ref_padded = tuple(batch.ref_pixels.shape[-2:])
        batch.ref_masks = torch.stack([_pad2d(m.float(), ref_padded) for _, _, m in refs])
        batch.ref_owner = [i for i, _, _ in refs]
    return batch

"""Training the full UniRef++ model with the shared loop (:mod:`unifusion_sam.training.loop`).

What this family adds to the shared engine, data sources and mixing:

- :class:`UniRefTrainConfig`: the three stages of the paper (``det``, ``image``, ``video``; Table 10), the
  model preset, ``init`` weights (the previous stage's output or a converted authors' checkpoint),
  backbone / sampling-offset learning-rate multipliers;
- :class:`UniRefSamplePrep`: a record -> the model's tensors at a jittered scale (detectron2's
  ``ResizeShortestEdge`` with the shorter side drawn per sample from ``min_sizes``, the same for its
  reference frames), targets as boxes (normalised cxcywh) and masks;
- :func:`collate_uniref` -> :class:`UniRefBatch` (zero padding to a multiple of 32; box-only data gets
  BoxInst's colour similarity);
- :class:`UniRefTrainFamily`: the loss (the model's training forward + :class:`UniRefCriterion`), the
  optimiser groups, and the text encoder frozen where a stage says so (stage 3).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..data.types import RefSample
from ..training.config import RunConfig, StageConfig
from ..training.samples import augment
from .boxinst import box_masks, color_similarity, valid_region
from .config import UniRefConfig
from .criterion import Target, UniRefCriterion
from .transforms import padded_size, shortest_edge_size

UNIREF_STAGES = ("det", "image", "video")


@dataclass
class UniRefTrainConfig(RunConfig):
    """The UniRef++ recipe (``recipes/train_uniref.py``). ``stage``: ``det``, ``image``, ``video``, several
    joined by ``+`` (one model, one optimiser, in order) or ``all``; ``model`` a preset name (``uniref-r50``,
    ``uniref-swin-l``, ``uniref-small``) with ``model_overrides``; ``init`` a folder written by
    ``save_pretrained`` or ``unifusion-sam convert-uniref`` whose weights must fit the preset (strictly;
    ``init_reset_class_heads`` re-initialises the class heads when the previous stage had another number of
    classes, as Objects365's 365 before the class-agnostic stages). Learning rates: the stage's ``lr`` x
    ``backbone_lr_mult`` for the backbone, x ``linear_proj_lr_mult`` for the deformable sampling offsets,
    ``text_lr`` for the text encoder (the authors' rule); ``backbone_lr_mult: 0`` freezes the backbone (no
    gradients through it: the cheap choice for a pretrained backbone on a CPU); weight decay on every parameter."""

    STAGES = UNIREF_STAGES
    ALL = "all"

    output_dir: str = "outputs/uniref_default"
    stage: str = "image+video"
    det: StageConfig = field(default_factory=lambda: StageConfig(steps=0))
    image: StageConfig = field(default_factory=lambda: StageConfig(steps=0))
    video: StageConfig = field(default_factory=lambda: StageConfig(steps=0))
    model: str = "uniref-small"
    model_overrides: dict = field(default_factory=dict)
    init: str | None = None
    init_reset_class_heads: bool = False
    backbone_lr_mult: float = 0.1
    linear_proj_lr_mult: float = 0.1
    weight_decay: float = 0.05
    max_grad_norm: float = 0.1
    warmup_steps: int = 200

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("backbone_lr_mult", "linear_proj_lr_mult"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"{name} must be a number >= 0, got {value!r}")
        if not isinstance(self.model_overrides, dict):
            raise TypeError(f"model_overrides must be a mapping, got {self.model_overrides!r}")
        if self.init is not None and not os.path.isdir(self.init):
            raise FileNotFoundError(f"init: not a folder with UniRef++ weights: {self.init}")

    def check_source(self, stage: str, source) -> None:
        if source.task == "det" and stage == "video":
            raise ValueError(f"the video stage trains VOS / RVOS; detection data ({source.kind}) belongs to det / image")


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
        task = {"fss": "fss", "vos": "video", "rvos": "video"}.get(sample.task, "image")
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
                        vos=all(s.task == "vos" for s in samples))
    refs = [(i, p, m) for i, s in enumerate(samples) for p, m in zip(s.ref_pixels, s.ref_masks)]
    if refs:
        batch.ref_pixels, batch.ref_padding, batch.ref_sizes = pad_images([p for _, p, _ in refs], divisibility)
        ref_padded = tuple(batch.ref_pixels.shape[-2:])
        batch.ref_masks = torch.stack([_pad2d(m.float(), ref_padded) for _, _, m in refs])
        batch.ref_owner = [i for i, _, _ in refs]
    return batch


def uniref_parameter_groups(model: torch.nn.Module, weight_decay: float, backbone_lr_mult: float,
                            linear_proj_lr_mult: float) -> list[dict]:
    """AdamW groups (lr = 1, scaled by the schedule): ``text`` (the text encoder, at the stage's
    ``text_lr``), ``backbone`` (x ``backbone_lr_mult``), ``linear_proj`` (deformable sampling offsets,
    x ``linear_proj_lr_mult``) and ``main``; weight decay on all, as the authors' optimiser."""
    groups: dict[str, list[torch.nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        kind = ("text" if name.startswith("text_encoder.") else "backbone" if name.startswith("backbone.") else
                "linear_proj" if "sampling_offsets" in name else "main")
        groups.setdefault(kind, []).append(p)
    scale = {"text": 1.0, "backbone": backbone_lr_mult, "linear_proj": linear_proj_lr_mult, "main": 1.0}
    return [{"params": params, "lr": 1.0, "weight_decay": weight_decay, "name": kind, "lr_scale": scale[kind]}
            for kind, params in sorted(groups.items())]


class UniRefTrainFamily:
    """The full UniRef++ family for :func:`~unifusion_sam.training.loop.train_stages`."""

    def __init__(self, config: UniRefConfig, criterion: UniRefCriterion | None = None) -> None:
        self.config = config
        self.criterion = criterion if criterion is not None else UniRefCriterion(num_classes=config.num_classes)

    def sample_prep(self, stage_name: str, stage: StageConfig) -> UniRefSamplePrep:
        return UniRefSamplePrep(self.config, [(d.min_sizes or stage.min_sizes, d.max_size or stage.max_size)
                                              for d in stage.data])

    def collate(self, samples: list[UniRefSample]) -> UniRefBatch:
        return collate_uniref(samples, self.config.size_divisibility)

    def loss(self, model: torch.nn.Module, batch: UniRefBatch) -> dict[str, torch.Tensor]:
        """The model's training forward (``model(batch)``: through DDP when wrapped) and the criterion."""
        inner = model.module if hasattr(model, "module") else model
        batch = batch.to(inner.device)
        layers, proposals = model(batch)
        terms = self.criterion(layers, proposals, batch.targets)
        return {"loss": sum(terms.values()), **terms}

    def start_stage(self, model: torch.nn.Module, stage_name: str, stage: StageConfig) -> None:
        if model.text_encoder is not None:
            model.text_encoder.unfreeze() if stage.train_text_encoder else model.text_encoder.freeze()

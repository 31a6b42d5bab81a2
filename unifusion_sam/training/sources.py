"""Training sources: each turns a dataset (synthetic or a reader of an official layout) into
:class:`~unifusion_sam.data.types.RefSample` records drawn with a given random generator.

- RIS: one sentence and its object (RefCOCO/+/g, synthetic);
- FSS: a query and K supports of one class (FSS-1000, synthetic);
- VOS: two frames of one object within +-10 frames, the earlier one is the reference (DAVIS,
  YouTube-VOS, LVOS, MOSE, synthetic); with ``options.first_ref`` the object's first frame is a
  second reference, as the tracker uses at inference (first frame + previous frame);
- RVOS: the same with the object's sentence; 40% of samples use the language only;
- pseudo-VOS: one image, two augmentations (COCO instances, RefCOCO, synthetic scenes);
- detection (the full UniRef++ model): every object of an image with its box (and mask), synthetic scenes
  (class-agnostic).

Video sources also take ``options.ref_noise`` (a probability): the *previous-frame* reference mask (the
last reference; never the first frame's) is deformed as a tracker's own prediction would be
(:func:`perturb_mask`: dilated, eroded or shifted by up to a twentieth of the object's size), since at test
time that reference is the model's last output and not the ground truth (MaskTrack's mask deformation).
Samples carry cache keys (``meta["key"]``, ``meta["ref_keys"]``) naming their images.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import ndimage

from ..data.io import load_rgb
from ..data.types import RefSample, VideoRecord
from .config import DataSource

RVOS_LANGUAGE_ONLY = 0.4
MAX_FRAME_GAP = 10


def mask_boxes(masks: np.ndarray) -> np.ndarray:
    """``[N, H, W]`` bool -> ``[N, 4]`` float32 pixel boxes ``x0, y0, x1, y1`` (``x1`` / ``y1`` one past the
    last pixel, as detectron2's ``BitMasks.get_bounding_boxes``); an empty mask gives zeros."""
    out = np.zeros((len(masks), 4), np.float32)
    for i, m in enumerate(masks):
        ys, xs = np.nonzero(m)
        if len(xs):
            out[i] = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
    return out


class Source:
    """A sampler of training records: ``sample(rng) -> RefSample``."""

    name = "source"

    def sample(self, rng: np.random.Generator) -> RefSample:
        raise NotImplementedError


def perturb_mask(mask: np.ndarray, rng: np.random.Generator, scale: float = 0.05) -> np.ndarray:
    """``mask`` ``[H, W]`` bool, deformed by one of: dilation, erosion (skipped when it would empty the mask)
    or a shift, by ``k`` pixels, ``k`` uniform in ``1..max(1, round(scale * sqrt(area)))``."""
    area = int(mask.sum())
    if area == 0:
        return mask
    k = int(rng.integers(1, max(1, round(scale * np.sqrt(area))) + 1))
    op = int(rng.integers(3))
    if op == 0:
        return ndimage.binary_dilation(mask, iterations=k)
    if op == 1:
        eroded = ndimage.binary_erosion(mask, iterations=k)
        return eroded if eroded.any() else mask
    dy, dx = (int(d) for d in rng.integers(-k, k + 1, size=2))
    out = np.zeros_like(mask)
    h, w = mask.shape
    out[max(dy, 0): h + min(dy, 0), max(dx, 0): w + min(dx, 0)] = mask[max(-dy, 0): h + min(-dy, 0),
                                                                        max(-dx, 0): w + min(-dx, 0)]
    return out if out.any() else mask


class NoisyPreviousReference(Source):
    """A video source whose samples' last reference mask (the previous frame's) is deformed with
    probability ``prob`` (:func:`perturb_mask`); samples without a mask reference pass unchanged."""

    def __init__(self, source: Source, prob: float) -> None:
        self.source, self.prob = source, float(prob)
        self.name = source.name

    def sample(self, rng: np.random.Generator) -> RefSample:
        s = self.source.sample(rng)
        if s.ref_masks and rng.random() < self.prob:
            masks = list(s.ref_masks)
            masks[-1] = perturb_mask(np.asarray(masks[-1], bool), rng)
            s = dataclasses.replace(s, ref_masks=masks)
        return s


class SyntheticSource(Source):
    """The library's synthetic data; ``options.pool`` = how many distinct items are cycled (default 4000);
    ``options.first_ref`` (VOS / RVOS) = the object's first frame is an extra (first) reference; for
    ``vos_examples`` (the object shown by examples from other scenes instead of its first frame),
    ``options.shots`` examples (default 1), ``options.found_prob``, the share of samples where the object
    was found already and its previous-frame mask follows the examples (default 0.5), and
    ``options.absent_prob``, the share of the other (search) samples whose frame does not show the object
    (default 0)."""

    def __init__(self, cfg: DataSource, image_size: int, seed: int) -> None:
        from ..data.synthetic import SyntheticConfig, SyntheticDataset

        options = dict(cfg.options)
        self.pool = int(options.pop("pool", 4000))
        self.first_ref = options.pop("first_ref", False)  # validated by DataSource
        self.shots = int(options.pop("shots", 1))
        self.found_prob = float(options.pop("found_prob", 0.5))
        self.absent_prob = float(options.pop("absent_prob", 0.0))
        task = {"pseudo_vos": "ris", "det": "ris", "vos_examples": "vos"}.get(cfg.task, cfg.task)
        config = SyntheticConfig(seed=seed, image_size=(image_size, image_size), **options)
        self.dataset = SyntheticDataset(cfg.split, task, self.pool, config)
        self.task = cfg.task
        self.name = f"synthetic-{cfg.task}"

    def sample(self, rng: np.random.Generator) -> RefSample:
        i = int(rng.integers(self.pool))
        if self.task == "det":  # every visible object of the scene, class-agnostic
            rec = self.dataset.scene(i)
            labels = rec.meta["label_map"]
            ids = [k for k in np.unique(labels) if k > 0]
            masks = np.stack([labels == k for k in ids]) if ids else np.zeros((0, *labels.shape), bool)
            return RefSample("det", rec.image, labels > 0, meta={"key": f"{self.name}:{self.dataset.split}:{i}"},
                             boxes=mask_boxes(masks), labels=np.zeros(len(ids), np.int64), instance_masks=masks)
        video = self.task in ("vos", "rvos")
        if self.task == "vos_examples":
            s = self.dataset.example_video_sample(i, self.shots, self.found_prob, self.absent_prob)
        else:
            s = self.dataset.video_sample(i, first_ref=self.first_ref) if video else self.dataset[i]
        key = f"{self.name}:{self.dataset.split}:{i}"
        ref_keys = [f"{key}:ref{k}" for k in range(len(s.ref_images))]
        if "first_frame" in s.meta:
            ref_keys[0] = f"{key}:first"
        meta = {**s.meta, "key": key, "ref_keys": ref_keys}
        if self.task == "pseudo_vos":
            return RefSample("pseudo_vos", s.image, s.mask, meta=meta)
        if self.task == "rvos" and rng.random() < RVOS_LANGUAGE_ONLY:
            return RefSample("rvos", s.image, s.mask, s.text, meta={**meta, "ref_keys": []})
        return RefSample(s.task, s.image, s.mask, s.text, list(s.ref_images), list(s.ref_masks), meta)


class RefCOCOSource(Source):
    """RefCOCO/+/g sentences (RIS) or pseudo-videos of their objects (``task: pseudo_vos``; ``task: rvos``
    keeps the sentence, a referring pseudo-video)."""

    def __init__(self, cfg: DataSource) -> None:
        from ..data.readers import RefCOCO

        self.reader = RefCOCO(cfg.root, split=cfg.split, **cfg.options)
        self.task = cfg.task
        self.name = f"refcoco-{cfg.task}"

    def sample(self, rng: np.random.Generator) -> RefSample:
        rec = self.reader[int(rng.integers(len(self.reader)))]
        image = load_rgb(rec.image) if not isinstance(rec.image, np.ndarray) else rec.image
        meta = {"key": f"img:{rec.image}", "ref_id": rec.ref_id}
        if self.task == "pseudo_vos":
            return RefSample("pseudo_vos", image, rec.mask, meta=meta)
        if self.task == "rvos":  # a pseudo-video with its sentence (the UniRef++ video stage's RefCOCO)
            return RefSample("pseudo_vos", image, rec.mask, rec.sentence, meta=meta)
        return RefSample("ris", image, rec.mask, rec.sentence, meta=meta)


class FSS1000Source(Source):
    """Random K-shot episodes from FSS-1000's training classes (``options.shot``, default 1)."""

    def __init__(self, cfg: DataSource) -> None:
        from ..data.readers import FSS1000

        self.reader = FSS1000(cfg.root, split=cfg.split, **cfg.options)
        self.name = "fss1000"

    def sample(self, rng: np.random.Generator) -> RefSample:
        from ..data.readers import materialize

        ep = self.reader[int(rng.integers(len(self.reader)))]
        meta = {"key": f"img:{ep.query_image}", "ref_keys": [f"img:{p}" for p in ep.support_images]}
        ep = materialize(ep)
        return RefSample("fss", ep.query_image, ep.query_mask, None, list(ep.support_images),
                         list(ep.support_masks), meta)


class VideoSource(Source):
    """VOS / RVOS samples from a video reader: two frames of one object within +-10 frames; with
    ``first_ref`` the object's first annotated frame is an extra (first) reference, as in tracking."""

    def __init__(self, reader, task: str, name: str, first_ref: bool = False) -> None:
        self.reader = reader
        self.task = task
        self.name = name
        self.first_ref = first_ref

    def sample(self, rng: np.random.Generator) -> RefSample:
        from ..data.readers import load_video_annotation, load_video_frame

        for _ in range(20):
            rec: VideoRecord = self.reader[int(rng.integers(len(self.reader)))]
            annotated = sorted(rec.annotations)
            if len(annotated) < 2:
                continue
            text = None
            if self.task == "rvos":
                if not rec.expressions:
                    continue
                exp_ids = sorted(rec.expressions)
                obj, text = rec.expressions[exp_ids[int(rng.integers(len(exp_ids)))]]
            else:
                obj = rec.object_ids[int(rng.integers(len(rec.object_ids)))]
            t_pos = int(rng.integers(1, len(annotated)))
            t = annotated[t_pos]
            earlier = [f for f in annotated[:t_pos] if t - f <= MAX_FRAME_GAP] or [annotated[t_pos - 1]]
            r = earlier[int(rng.integers(len(earlier)))]
            ref_label = load_video_annotation(rec, r)
            if not (ref_label == obj).any():
                continue
            image, label = load_video_frame(rec, t), load_video_annotation(rec, t)
            meta = {"key": f"img:{rec.frames[t]}", "ref_keys": [f"img:{rec.frames[r]}"], "video": rec.name}
            if self.task == "rvos" and rng.random() < RVOS_LANGUAGE_ONLY:
                return RefSample("rvos", image, label == obj, text, meta={**meta, "ref_keys": []})
            refs, masks = [load_video_frame(rec, r)], [ref_label == obj]
            if self.first_ref:
                for f in annotated:
                    if f >= r:
                        break
                    first_label = load_video_annotation(rec, f)
                    if (first_label == obj).any():
                        refs, masks = [load_video_frame(rec, f), *refs], [first_label == obj, *masks]
                        meta["ref_keys"] = [f"img:{rec.frames[f]}", *meta["ref_keys"]]
                        break
            return RefSample(self.task, image, label == obj, text, refs, masks, meta)
        raise ValueError(f"{self.name}: could not find a video with two annotated frames of one object")


class COCOSource(Source):
    """Pseudo-videos from COCO instances (two augmentations of one image)."""

    def __init__(self, cfg: DataSource) -> None:
        from ..data.readers import COCOInstances

        self.reader = COCOInstances(cfg.root, split=cfg.split, **cfg.options)
        self.name = "coco"

    def sample(self, rng: np.random.Generator) -> RefSample:
        rec = self.reader[int(rng.integers(len(self.reader)))]
        image = load_rgb(rec.image) if not isinstance(rec.image, np.ndarray) else rec.image
        return RefSample("pseudo_vos", image, rec.mask, meta={"key": None})


class DetectionSource(Source):
    """Detection samples for the full UniRef++ model from a reader of
    :class:`~unifusion_sam.data.types.DetectionRecord` s (Objects365: boxes only; COCO with
    ``task: det``: boxes and masks): one image with every object: ``boxes`` ``N x 4`` float32 pixel
    ``x0, y0, x1, y1``, ``labels`` ``N`` int64 (the reader's ``categories``), ``instance_masks``
    ``N x H x W`` bool or ``None`` (box-only), ``mask`` their union (all-False when box-only)."""

    def __init__(self, reader, name: str) -> None:
        self.reader = reader
        self.name = name

    def sample(self, rng: np.random.Generator) -> RefSample:
        from ..data.readers import materialize

        rec = self.reader[int(rng.integers(len(self.reader)))]
        key = f"img:{rec.image}"
        rec = materialize(rec)  # checks the image against the annotated size and the masks
        masks = rec.masks
        union = masks.any(axis=0) if masks is not None else np.zeros(rec.image.shape[:2], bool)
        return RefSample("det", rec.image, union, meta={"key": key, "image_id": rec.image_id},
                         boxes=rec.boxes, labels=rec.labels, instance_masks=masks)


def build_source(cfg: DataSource, image_size: int, seed: int) -> Source:
    """The :class:`Source` for one configured dataset (readers fail early on missing folders); with
    ``options.ref_noise`` wrapped in :class:`NoisyPreviousReference`."""
    from ..data import readers

    if "ref_noise" in cfg.options:  # validated by DataSource (video sources only)
        rest = {k: v for k, v in cfg.options.items() if k != "ref_noise"}
        inner = build_source(dataclasses.replace(cfg, options=rest), image_size, seed)
        return NoisyPreviousReference(inner, cfg.options["ref_noise"]) if cfg.options["ref_noise"] else inner
    if cfg.kind == "synthetic":
        return SyntheticSource(cfg, image_size, seed)
    if cfg.kind == "refcoco":
        return RefCOCOSource(cfg)
    if cfg.kind == "fss1000":
        return FSS1000Source(cfg)
    if cfg.kind == "objects365":
        return DetectionSource(readers.Objects365(cfg.root, split=cfg.split, **cfg.options), "objects365")
    if cfg.kind == "coco" and cfg.task == "det":
        return DetectionSource(readers.COCODetection(cfg.root, split=cfg.split, **cfg.options), "coco-det")
    if cfg.kind == "coco":
        return COCOSource(cfg)
    video_readers = {
        "davis2017": readers.DAVIS2017, "youtube_vos": readers.YouTubeVOS, "lvos": readers.LVOS,
        "mose": readers.MOSE, "ref_youtube_vos": readers.RefYouTubeVOS, "ref_davis17": readers.RefDAVIS17,
        "ovis": readers.OVIS,
    }
    options = dict(cfg.options)
    first_ref = options.pop("first_ref", False)  # validated by DataSource
    reader = video_readers[cfg.kind](cfg.root, split=cfg.split, **options)
    task = "rvos" if cfg.kind in ("ref_youtube_vos", "ref_davis17") else "vos"
    return VideoSource(reader, task, cfg.kind, first_ref=first_ref)

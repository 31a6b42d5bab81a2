"""Short synthetic videos (VOS / RVOS): 2..4 textured shapes moving over a static background.

Objects move linearly (mostly along one axis, so a motion word describes them) and bounce off the
image borders, optionally growing or shrinking a little; a fixed depth order makes them occlude
each other when they cross. In a ``late_entry_prob`` fraction of videos one object first appears
at a frame > 0. Every object is at least ``min_visible`` visible on its first frame, so
``first_frame`` is also the frame where its reference mask is given.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..types import VideoRecord
from .config import SyntheticConfig
from .rng import item_rng
from .scenes import base_radius, sample_attributes
from .shapes import ShapeSpec, paint, render_background, sample_shape, shape_box, shape_mask, to_uint8
from .text import DIRECTIONS, Obj, describe_moving_object

_VIDEO_TRIES = 100


@dataclass
class VideoSpec:
    """Everything needed to render any frame of a video on demand.

    Object ``k`` (1-based, painted back to front) is ``shapes[k - 1]`` at ``centres[k - 1, t]``
    scaled by ``scales[k - 1, t]``, drawn from frame ``birth[k - 1]`` on.
    """

    background: np.ndarray
    shapes: list[ShapeSpec]
    centres: np.ndarray
    scales: np.ndarray
    birth: list[int]
    expressions: dict[str, tuple[int, str]] = field(default_factory=dict)
    expression_kinds: dict[str, str] = field(default_factory=dict)

    @property
    def num_frames(self) -> int:
        return int(self.centres.shape[1])

    @property
    def object_ids(self) -> list[int]:
        return list(range(1, len(self.shapes) + 1))

    def shape_at(self, object_id: int, t: int) -> ShapeSpec | None:
        k = object_id - 1
        if t < self.birth[k]:
            return None
        cx, cy = self.centres[k, t]
        return self.shapes[k].moved(float(cx), float(cy), float(self.scales[k, t]))

    def labels(self, t: int) -> np.ndarray:
        """Label map of frame ``t`` (no colours drawn)."""
        h, w = self.background.shape[:2]
        labels = np.zeros((h, w), np.uint8)
        for k in self.object_ids:
            spec = self.shape_at(k, t)
            if spec is not None:
                y0, y1, x0, x1 = box = shape_box(spec, h, w)
                labels[y0:y1, x0:x1][shape_mask(spec, box)] = k
        return labels

    def render(self, t: int) -> tuple[np.ndarray, np.ndarray]:
        """``(image uint8 H x W x 3, label map uint8 H x W)`` of frame ``t``."""
        image = self.background.copy()
        labels = np.zeros(image.shape[:2], np.uint8)
        for k in self.object_ids:
            spec = self.shape_at(k, t)
            if spec is not None:
                paint(image, labels, spec, k)
        return to_uint8(image), labels

    def motion(self, object_id: int) -> tuple[float, float, float, float]:
        """Fraction of the object's steps going left / right / up / down (dominant axis only)."""
        k = object_id - 1
        d = np.diff(self.centres[k, self.birth[k]:], axis=0)
        if len(d) == 0:
            return (0.0, 0.0, 0.0, 0.0)
        dx, dy = d[:, 0], d[:, 1]
        horiz, vert = np.abs(dx) > np.abs(dy), np.abs(dy) > np.abs(dx)
        fr = [np.mean(horiz & (dx < 0)), np.mean(horiz & (dx > 0)), np.mean(vert & (dy < 0)), np.mean(vert & (dy > 0))]
        return tuple(float(f) for f in fr)  # type: ignore[return-value]


def _trajectory(rng: np.random.Generator, config: SyntheticConfig, extent: float, scales: np.ndarray) -> np.ndarray:
    h, w = config.image_size
    m = extent * float(scales.max()) + 1.0
    lo, hi = np.array([m, m]), np.array([w - m, h - m])
    angle = int(rng.integers(4)) * math.pi / 2 + float(rng.uniform(-0.44, 0.44))
    speed = float(rng.uniform(0.012, 0.03)) * min(h, w)
    vel = np.array([math.cos(angle), math.sin(angle)]) * speed
    travel = vel * (config.num_frames - 1)
    start_lo, start_hi = np.maximum(lo, lo - travel), np.minimum(hi, hi - travel)
    if rng.random() < 0.75 and np.all(start_lo <= start_hi):  # no bounce
        pos = rng.uniform(start_lo, start_hi)
    else:  # may bounce off a border
        pos = rng.uniform(lo, hi)
    out = np.empty((config.num_frames, 2))
    for t in range(config.num_frames):
        out[t] = pos
        pos = pos + vel
        for a in range(2):  # bounce off the borders
            if pos[a] < lo[a]:
                pos[a], vel[a] = 2 * lo[a] - pos[a], -vel[a]
            elif pos[a] > hi[a]:
                pos[a], vel[a] = 2 * hi[a] - pos[a], -vel[a]
    return out


def _placed(shapes: list[ShapeSpec], centres: np.ndarray, scales: np.ndarray, birth: list[int],
            t: int) -> list[ShapeSpec | None]:
    return [s.moved(float(centres[k, t, 0]), float(centres[k, t, 1]), float(scales[k, t])) if birth[k] <= t else None
            for k, s in enumerate(shapes)]


def _visible_enough(shapes: list[ShapeSpec | None], height: int, width: int, min_visible: float) -> bool:
    """Whether every shape (painted back to front; ``None`` = absent) keeps ``min_visible`` of its area."""
    labels = np.zeros((height, width), np.uint8)
    areas = []
    for k, spec in enumerate(shapes, start=1):
        if spec is None:
            areas.append(0)
            continue
        y0, y1, x0, x1 = box = shape_box(spec, height, width)
        mask = shape_mask(spec, box)
        labels[y0:y1, x0:x1][mask] = k
        areas.append(int(mask.sum()))
    counts = np.bincount(labels.ravel(), minlength=len(shapes) + 1)[1:]
    return all(c >= min_visible * a for c, a in zip(counts, areas))


def sample_video(config: SyntheticConfig, split: str, index: int) -> VideoSpec:
    """The spec (trajectories, appearance, expressions) of video ``index`` of ``split``; cheap."""
    rng = item_rng(config.seed, split, "video", index)
    h, w = config.image_size
    n_frames = config.num_frames
    late_entry = n_frames >= 3 and bool(rng.random() < config.late_entry_prob)  # drawn once: exact fraction
    for _ in range(_VIDEO_TRIES):
        n = int(rng.integers(max(config.min_video_objects, 1 + late_entry), config.max_video_objects + 1))
        attrs = sample_attributes(rng, config, n, None, False)
        shapes = [sample_shape(rng, kind, colour, size, base_radius(config, size)) for kind, colour, size in attrs]
        birth = [0] * n
        if late_entry:
            birth[int(rng.integers(n))] = int(rng.integers(1, n_frames // 2 + 1))
        deltas = rng.uniform(-config.max_scale_change, config.max_scale_change, n)
        ramp = np.linspace(0.0, 1.0, n_frames)
        scales = 1.0 + deltas[:, None] * ramp[None, :]
        centres = np.stack([_trajectory(rng, config, s.extent, sc) for s, sc in zip(shapes, scales)])
        # every object is well visible on the frame where it first appears (nothing pops in on top of it)
        if not all(_visible_enough(_placed(shapes, centres, scales, birth, b), h, w, config.min_visible)
                   for b in sorted(set(birth))):
            continue
        spec = VideoSpec(render_background(rng, h, w), shapes, centres, scales, birth)
        ids = spec.object_ids
        objs = [Obj(k, s.kind, s.colour, s.size, motion=spec.motion(k)) for k, s in zip(ids, shapes)]
        for o in objs:
            described = describe_moving_object(objs, o, rng, config.extra_word_prob)
            if described is not None:
                exp_id = str(len(spec.expressions))
                spec.expressions[exp_id] = (o.id, described[0])
                spec.expression_kinds[exp_id] = described[1]
        if spec.expressions:
            return spec
    raise RuntimeError(f"could not generate a video for index {index}; relax the config {config!r}")


def make_video(config: SyntheticConfig, split: str, index: int) -> VideoRecord:
    """VOS / RVOS record ``index`` of ``split`` with every frame rendered and annotated.

    ``meta["objects"][k]`` holds the shape, colour, size, per-frame ``centres``, and ``motion``
    (fraction of steps going left / right / up / down) of object ``k``.
    """
    spec = sample_video(config, split, index)
    frames, annotations = [], {}
    for t in range(spec.num_frames):
        image, labels = spec.render(t)
        frames.append(image)
        annotations[t] = labels
    first_frame = {}
    for k in spec.object_ids:
        present = [t for t in range(spec.num_frames) if (annotations[t] == k).any()]
        first_frame[k] = present[0]
    objects = {
        k: {"shape": s.kind, "colour": s.colour, "size": s.size, "centres": spec.centres[k - 1].tolist(),
            "motion": dict(zip(DIRECTIONS, spec.motion(k)))}
        for k, s in zip(spec.object_ids, spec.shapes)
    }
    return VideoRecord(
        name=f"synthetic-{split}-{index:06d}",
        frames=frames,
        frame_names=[f"{t:05d}" for t in range(spec.num_frames)],
        annotations=annotations,
        object_ids=spec.object_ids,
        first_frame=first_frame,
        expressions=dict(spec.expressions),
        meta={"split": split, "index": index, "objects": objects, "expression_kinds": dict(spec.expression_kinds)},
    )

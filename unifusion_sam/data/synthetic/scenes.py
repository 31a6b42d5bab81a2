"""Still scenes (textured background + 2..5 shapes) and their referring sentences (RIS records)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..types import ReferringExpression
from .config import SyntheticConfig
from .rng import item_rng
from .shapes import ShapeSpec, paint, render_background, sample_shape, shape_box, shape_mask, to_uint8
from .text import Obj, describe_object

_PLACE_TRIES = 25
_SCENE_TRIES = 50


@dataclass
class Scene:
    """A rendered scene: ``shapes[k - 1]`` is object ``k`` of ``label_map`` (painted back to front)."""

    image: np.ndarray
    label_map: np.ndarray
    shapes: list[ShapeSpec]
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def object_ids(self) -> list[int]:
        return list(range(1, len(self.shapes) + 1))

    def mask(self, object_id: int) -> np.ndarray:
        """Visible mask of one object."""
        return self.label_map == object_id

    def class_mask(self, kind: str) -> np.ndarray:
        """Union of the visible masks of every shape of class ``kind``."""
        ids = [k for k, s in zip(self.object_ids, self.shapes) if s.kind == kind]
        return np.isin(self.label_map, ids)

    def objects(self) -> list[Obj]:
        """Attributes and visible-mask centroids of every object (for sentence generation)."""
        return objects_of(self.label_map, self.shapes)


def objects_of(label_map: np.ndarray, shapes: list[ShapeSpec]) -> list[Obj]:
    """Attributes and visible-mask centroids (pixel centres, x right, y down) of object ``k = 1..n``."""
    h, w = label_map.shape
    out = []
    for k, s in enumerate(shapes, start=1):
        y0, y1, x0, x1 = shape_box(s, h, w)
        ys, xs = np.nonzero(label_map[y0:y1, x0:x1] == k)
        cx, cy = (float(xs.mean()) + x0 + 0.5, float(ys.mean()) + y0 + 0.5) if len(xs) else (s.cx, s.cy)
        out.append(Obj(k, s.kind, s.colour, s.size, cx, cy))
    return out


def base_radius(config: SyntheticConfig, size: str) -> float:
    frac = config.small_radius if size == "small" else config.large_radius
    return frac * min(config.image_size)


def sample_attributes(rng: np.random.Generator, config: SyntheticConfig, n: int, forced_kind: str | None,
                twin: bool) -> list[tuple[str, str, str]]:
    kinds, colours, sizes = config.shape_classes, config.colours, ("small", "large")
    out: list[tuple[str, str, str]] = []
    for i in range(n):
        attrs = [kinds[rng.integers(len(kinds))], colours[rng.integers(len(colours))], sizes[rng.integers(2)]]
        if i == 0 and forced_kind is not None:
            attrs[0] = forced_kind
        elif i == 1 and twin:
            attrs = list(out[0])
        elif i > 0 and rng.random() < config.attribute_share_prob:
            src = out[int(rng.integers(len(out)))]
            for j in range(3):
                if rng.random() < 0.5:
                    attrs[j] = src[j]
        out.append((attrs[0], attrs[1], attrs[2]))
    return out


def sample_layout(rng: np.random.Generator, config: SyntheticConfig, attrs: list[tuple[str, str, str]],
                  ) -> tuple[list[ShapeSpec], list[np.ndarray], np.ndarray]:
    """Place shapes one after the other so that every shape keeps ``min_visible`` of its area.

    Shapes that cannot be placed are dropped. Returns the placed specs, their box masks and the
    label map.
    """
    h, w = config.image_size
    labels = np.zeros((h, w), np.uint8)
    specs: list[ShapeSpec] = []
    masks: list[np.ndarray] = []
    areas: list[int] = []
    visible: list[int] = []
    for kind, colour, size in attrs:
        proto = sample_shape(rng, kind, colour, size, base_radius(config, size))
        m = proto.extent + 1.0
        for _ in range(_PLACE_TRIES):
            spec = proto.moved(float(rng.uniform(m, w - m)), float(rng.uniform(m, h - m)))
            box = shape_box(spec, h, w)
            mask = shape_mask(spec, box)
            y0, y1, x0, x1 = box
            covered = np.bincount(labels[y0:y1, x0:x1][mask], minlength=len(specs) + 1)
            new_vis = [v - int(c) for v, c in zip(visible, covered[1:])]
            if all(v >= config.min_visible * a for v, a in zip(new_vis, areas)):
                visible = new_vis + [int(mask.sum())]
                areas.append(visible[-1])
                labels[y0:y1, x0:x1][mask] = len(specs) + 1
                specs.append(spec)
                masks.append(mask)
                break
    return specs, masks, labels


def sample_scene(rng: np.random.Generator, config: SyntheticConfig, forced_kind: str | None = None,
                 twin: bool = False) -> Scene:
    """A random scene; ``forced_kind`` guarantees one shape of that class, ``twin`` an exact duplicate
    (same class, colour and size) of the first shape."""
    h, w = config.image_size
    for _ in range(_SCENE_TRIES):
        n = int(rng.integers(config.min_shapes, config.max_shapes + 1))
        attrs = sample_attributes(rng, config, n, forced_kind, twin)
        specs, masks, labels = sample_layout(rng, config, attrs)
        if len(specs) < config.min_shapes or (forced_kind is not None and all(s.kind != forced_kind for s in specs)):
            continue
        image = render_background(rng, h, w)
        for k, (spec, mask) in enumerate(zip(specs, masks), start=1):
            paint(image, None, spec, k, mask)
        return Scene(to_uint8(image), labels, specs)
    raise RuntimeError(f"could not place {config.min_shapes} shapes in a {h}x{w} image; use a larger image_size "
                       "or smaller radii")


def make_referring_expression(config: SyntheticConfig, split: str, index: int) -> ReferringExpression:
    """RIS record ``index`` of ``split``: a scene, one target and a sentence that only it matches.

    ``meta`` holds ``objects`` (id, shape, colour, size, centroid of every object), ``target_id``,
    ``label_map`` and the sentence ``kind`` (attribute / extreme / relation).
    """
    rng = item_rng(config.seed, split, "ris", index)
    h, w = config.image_size
    while True:
        twin = bool(rng.random() < config.twin_prob)
        scene = sample_scene(rng, config, twin=twin)
        objs = scene.objects()
        target = objs[0] if twin else objs[int(rng.integers(len(objs)))]
        described = describe_object(objs, target, h, w, rng, config.extra_word_prob)
        if described is not None:
            break
    sentence, kind = described
    meta = {
        "split": split, "index": index, "kind": kind, "target_id": target.id, "label_map": scene.label_map,
        "objects": [{"id": o.id, "shape": o.kind, "colour": o.colour, "size": o.size, "centroid": (o.cx, o.cy)}
                    for o in objs],
    }
    return ReferringExpression(scene.image, scene.mask(target.id), sentence, f"synthetic-{split}-{index}", meta)

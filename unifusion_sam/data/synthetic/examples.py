"""Examples of a video's object from other scenes: the same object (its exact shape, colour and texture) drawn
into a new scene, as a user would show an object with a picture taken elsewhere.

``object_examples(config, split, key, shape, shots)`` gives ``shots`` pairs ``(image H x W x 3 uint8, mask
H x W bool)``: each a fresh scene of the split (its own background and 2..5 distractor shapes) with the
object painted on top at a random place, turned and scaled a little. It depends only on ``(config, split,
key)``, so the training source and the held-out benchmark draw reproducible examples.
"""

from __future__ import annotations

import numpy as np

from .config import SyntheticConfig
from .rng import item_rng
from .scenes import sample_scene
from .shapes import ShapeSpec, paint, shape_box, shape_mask, to_uint8

_PLACE_TRIES = 25


def object_examples(config: SyntheticConfig, split: str, key: int, shape: ShapeSpec,
                    shots: int = 1) -> list[tuple[np.ndarray, np.ndarray]]:
    """``shots`` example images of the object ``shape`` with its mask (see the module docstring)."""
    if isinstance(shots, bool) or not isinstance(shots, int) or shots < 1:
        raise ValueError(f"shots must be a positive int, got {shots!r}")
    rng = item_rng(config.seed, split, "examples", key)
    h, w = config.image_size
    out = []
    for _ in range(shots):
        scene = sample_scene(rng, config)
        image = scene.image.astype(np.float32)
        scale = float(rng.uniform(0.85, 1.15))
        angle = shape.angle if shape.kind in ("circle", "ring") else shape.angle + float(rng.uniform(-0.3, 0.3))
        spec = ShapeSpec(shape.kind, shape.colour, shape.size, 0.0, 0.0, shape.radius * scale, angle, shape.rgb,
                         shape.texture, shape.tex_params)
        margin = min(spec.extent + 1.0, min(h, w) / 2 - 1.0)
        for _ in range(_PLACE_TRIES):  # a place where it covers no more than half of any distractor
            placed = spec.moved(float(rng.uniform(margin, w - margin)), float(rng.uniform(margin, h - margin)))
            box = shape_box(placed, h, w)
            mask = shape_mask(placed, box)
            y0, y1, x0, x1 = box
            covered = np.bincount(scene.label_map[y0:y1, x0:x1][mask], minlength=len(scene.shapes) + 1)[1:]
            areas = np.bincount(scene.label_map.ravel(), minlength=len(scene.shapes) + 1)[1:]
            if np.all(covered <= 0.5 * np.maximum(areas, 1)):
                break
        full = np.zeros((h, w), bool)
        full[y0:y1, x0:x1] = paint(image, None, placed, 0, mask)
        out.append((to_uint8(image), full))
    return out


def example_key(index: int, object_id: int) -> int:
    """The ``key`` of object ``object_id`` of video ``index``: one stream of examples per object."""
    return int(index) * 64 + int(object_id)

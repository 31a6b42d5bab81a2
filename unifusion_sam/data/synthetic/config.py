"""Configuration of the synthetic data generator."""

from __future__ import annotations

from dataclasses import dataclass

from ...config import JsonConfig, check_positive_int, check_probability
from .shapes import COLOURS, SHAPE_CLASSES

_MIN_SIDE = 48
_MAX_SHAPES = 8


@dataclass
class SyntheticConfig(JsonConfig):
    """Everything that shapes the generated data; the same config + seed gives the same data.

    - ``seed``: base seed; every item draws from its own generator seeded by
      ``(seed, split, stream, index)``.
    - ``image_size``: ``(height, width)`` in pixels (an int means square).
    - ``min_shapes`` / ``max_shapes``: shapes per still scene (RIS / FSS).
    - ``shape_classes`` / ``colours``: the vocabulary used (subsets of the built-in ones).
    - ``small_radius`` / ``large_radius``: equal-area radius of a small / large shape as a fraction
      of the shorter image side (``large >= 1.5 x small`` so their areas differ clearly).
    - ``min_visible``: every shape of a still scene (and every object on its first frame) keeps at
      least this fraction of its area visible.
    - ``attribute_share_prob``: chance that a new shape copies attributes from an earlier one, so
      that sentences need several words; ``twin_prob``: chance that an RIS target has an exact
      twin (same shape, colour and size), so that position words are needed.
    - ``extra_word_prob``: chance that a sentence is one word longer than the shortest one.
    - ``num_shots``: FSS support images per episode.
    - ``num_frames``, ``min_video_objects``, ``max_video_objects``: video length and objects;
      ``late_entry_prob``: fraction of videos in which one object first appears at a frame > 0;
      ``max_scale_change``: relative size change over a video; ``max_ref_gap``: the reference
      frame of a VOS / RVOS sample is 1..max_ref_gap frames before the current one.
    """

    seed: int = 0
    image_size: tuple[int, int] = (128, 128)
    min_shapes: int = 2
    max_shapes: int = 5
    shape_classes: tuple[str, ...] = SHAPE_CLASSES
    colours: tuple[str, ...] = tuple(COLOURS)
    small_radius: float = 0.075
    large_radius: float = 0.14
    min_visible: float = 0.7
    attribute_share_prob: float = 0.5
    twin_prob: float = 0.3
    extra_word_prob: float = 0.25
    num_shots: int = 1
    num_frames: int = 12
    min_video_objects: int = 2
    max_video_objects: int = 4
    late_entry_prob: float = 0.3
    max_scale_change: float = 0.15
    max_ref_gap: int = 10

    def __post_init__(self) -> None:
        if isinstance(self.image_size, int) and not isinstance(self.image_size, bool):
            self.image_size = (self.image_size, self.image_size)
        if isinstance(self.image_size, list):
            self.image_size = tuple(self.image_size)
        if not isinstance(self.image_size, tuple) or len(self.image_size) != 2:
            raise TypeError(f"image_size must be an int or a (height, width) pair, got {self.image_size!r}")
        for side in self.image_size:
            check_positive_int("image_size", side)
            if side < _MIN_SIDE:
                raise ValueError(f"image_size sides must be >= {_MIN_SIDE}, got {self.image_size!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise TypeError(f"seed must be an int, got {self.seed!r}")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed!r}")
        for name in ("min_shapes", "max_shapes", "num_shots", "num_frames", "min_video_objects",
                     "max_video_objects", "max_ref_gap"):
            check_positive_int(name, getattr(self, name))
        if not 2 <= self.min_shapes <= self.max_shapes <= _MAX_SHAPES:
            raise ValueError(f"need 2 <= min_shapes <= max_shapes <= {_MAX_SHAPES}, "
                             f"got min_shapes={self.min_shapes!r}, max_shapes={self.max_shapes!r}")
        if not 1 <= self.min_video_objects <= self.max_video_objects <= _MAX_SHAPES:
            raise ValueError(f"need 1 <= min_video_objects <= max_video_objects <= {_MAX_SHAPES}, got "
                             f"min_video_objects={self.min_video_objects!r}, max_video_objects={self.max_video_objects!r}")
        if self.num_frames < 2:
            raise ValueError(f"num_frames must be >= 2, got {self.num_frames!r}")
        self.shape_classes = _check_vocab("shape_classes", self.shape_classes, SHAPE_CLASSES)
        self.colours = _check_vocab("colours", self.colours, tuple(COLOURS))
        for name in ("small_radius", "large_radius", "max_scale_change"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"{name} must be a number, got {value!r}")
        if not 0.02 <= self.small_radius <= 0.15:
            raise ValueError(f"small_radius must be in [0.02, 0.15], got {self.small_radius!r}")
        if not 1.5 * self.small_radius <= self.large_radius <= 0.2:
            raise ValueError(f"large_radius must be in [1.5 x small_radius, 0.2], got {self.large_radius!r}")
        if not 0.0 <= self.max_scale_change <= 0.3:
            raise ValueError(f"max_scale_change must be in [0, 0.3], got {self.max_scale_change!r}")
        for name in ("min_visible", "attribute_share_prob", "twin_prob", "extra_word_prob", "late_entry_prob"):
            check_probability(name, getattr(self, name))
        if self.min_visible < 0.3:
            raise ValueError(f"min_visible must be >= 0.3, got {self.min_visible!r}")

    @property
    def height(self) -> int:
        return self.image_size[0]

    @property
    def width(self) -> int:
        return self.image_size[1]


def _check_vocab(name: str, value: object, known: tuple[str, ...]) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise TypeError(f"{name} must be a list of names, got {value!r}")
    value = tuple(value)
    unknown = [v for v in value if v not in known]
    if unknown:
        raise ValueError(f"unknown {name} {unknown!r} in {value!r}; choose from {list(known)}")
    if len(set(value)) != len(value):
        raise ValueError(f"{name} has duplicates: {value!r}")
    if len(value) < 2:
        raise ValueError(f"{name} needs at least 2 entries, got {value!r}")
    return value

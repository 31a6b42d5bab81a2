"""Record types shared by every dataset reader, the synthetic generator, training and evaluation.

Arrays follow numpy image conventions: images are ``H x W x 3`` ``uint8`` RGB, masks are ``H x W``
``bool``, label maps are ``H x W`` integer arrays (0 = background, k = object id k).
Readers may keep paths instead of arrays and load lazily; ``load()``-style helpers in
:mod:`unifusion_sam.data.io` turn a path into an array and name the path when it fails.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field
from typing import Any, Literal, Union

import numpy as np

Task = Literal["ris", "fss", "vos", "rvos"]
TASKS: tuple[str, ...] = ("ris", "fss", "vos", "rvos")

ImageLike = Union[np.ndarray, str, os.PathLike]  # noqa: UP007 (a runtime alias)
"""An ``H x W x 3`` uint8 array, or a path to an image file loaded on demand."""


@dataclass
class RefSample:
    """One training or evaluation example of any task, fully materialised.

    - ``image``: ``H x W x 3`` uint8, the query image (current frame for videos).
    - ``mask``: ``H x W`` bool target; all-False means the object is absent in this image.
    - ``text``: referring sentence (RIS / RVOS), else ``None``.
    - ``ref_images`` / ``ref_masks``: K reference pairs (FSS supports, VOS/RVOS earlier frames),
      each ``Hk x Wk x 3`` uint8 / ``Hk x Wk`` bool; empty for RIS.
    - detection samples (``task="det"``, the full UniRef++ model's stages 1 and 2): every object of the
      image, ``boxes`` ``N x 4`` float32 pixel ``x0, y0, x1, y1``, ``labels`` ``N`` int64 (0-based
      classes) and ``instance_masks`` ``N x H x W`` bool, or ``None`` for box-only data (Objects365);
      ``mask`` is then the union of the objects.
    """

    task: str
    image: np.ndarray
    mask: np.ndarray
    text: str | None = None
    ref_images: list[np.ndarray] = field(default_factory=list)
    ref_masks: list[np.ndarray] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)
    boxes: np.ndarray | None = None
    labels: np.ndarray | None = None
    instance_masks: np.ndarray | None = None


@dataclass
class ReferringExpression:
    """RIS record: one sentence that refers to one object of one image.

    ``mask`` is the ``H x W`` bool object mask (decoded from polygons / RLE by the reader).
    """

    image: ImageLike
    mask: np.ndarray
    sentence: str
    ref_id: str
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class FewShotEpisode:
    """FSS record: K support pairs and one query of the same class."""

    query_image: ImageLike
    query_mask: np.ndarray
    support_images: list[ImageLike]
    support_masks: list[np.ndarray]
    class_name: str
    episode_id: str
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class VideoRecord:
    """VOS / RVOS record: one video with its annotations.

    - ``frames``: the frame images in temporal order (paths or arrays); ``frame_names`` their stems
      (``"00000"``), used to name result files.
    - ``annotations``: frame index -> ``H x W`` label map (or a path to a palette PNG); for
      validation sets only the frames where an object first appears.
    - ``object_ids``: the ids present in the video; ``first_frame``: object id -> index of the frame
      whose annotation first contains it (objects may appear late).
    - ``expressions``: for RVOS, expression id -> (object id, sentence).
    """

    name: str
    frames: list[ImageLike]
    frame_names: list[str]
    annotations: dict[int, Any] = field(default_factory=dict)
    object_ids: list[int] = field(default_factory=list)
    first_frame: dict[int, int] = field(default_factory=dict)
    expressions: dict[str, tuple[int, str]] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.frames)

    def copy(self) -> VideoRecord:
        """A copy whose containers (and ``meta``, deeply) can be changed without touching this record."""
        return VideoRecord(
            name=self.name,
            frames=list(self.frames),
            frame_names=list(self.frame_names),
            annotations=dict(self.annotations),
            object_ids=list(self.object_ids),
            first_frame=dict(self.first_frame),
            expressions=dict(self.expressions),
            meta=copy.deepcopy(self.meta),
        )


@dataclass
class DetectionRecord:
    """Detection record: every object of one image (Objects365, COCO instances), for the full UniRef++
    model's detection data.

    - ``image``: a path (or an ``H x W x 3`` uint8 array once materialized).
    - ``boxes``: ``N x 4`` float32 pixel ``x0, y0, x1, y1`` (converted from COCO ``x, y, w, h``,
      clipped to the image), ``labels``: ``N`` int64 contiguous 0-based class indices (the reader's
      ``categories[label]``).
    - ``masks``: ``N x H x W`` bool instance masks, or ``None`` for box-only data (Objects365).
    - ``image_id``: the dataset's image id; ``meta``: reader-specific (split, image size, ann ids).
    """

    image: ImageLike
    boxes: np.ndarray
    labels: np.ndarray
    masks: np.ndarray | None
    image_id: int
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

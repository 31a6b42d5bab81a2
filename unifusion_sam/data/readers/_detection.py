"""COCO-format detection files (``images`` / ``annotations`` / ``categories``) as one
:class:`~unifusion_sam.data.types.DetectionRecord` per image: the machinery shared by
:class:`~unifusion_sam.data.readers.Objects365` and :class:`~unifusion_sam.data.readers.COCODetection`.

Conventions (after detectron2's ``load_coco_json`` and dataset mapper, which UniRef++ trains with;
the 1-pixel threshold for degenerate boxes is this library's, detectron2 drops only empty boxes):

- ``labels``: contiguous 0-based indices of the **sorted** category ids of the file's ``categories``
  (``reader.categories[label]`` is the class name, ``reader.category_ids[label]`` its dataset id);
- ``boxes``: COCO ``[x, y, w, h]`` -> ``[x, y, x + w, y + h]`` float32 pixels, clipped to the image;
- crowd regions (``iscrowd=1``) and degenerate boxes (width or height <= 1 pixel once clipped, which
  includes ``w <= 1`` / ``h <= 1``) are left out; an image with no box left yields no record
  (detectron2's FILTER_EMPTY_ANNOTATIONS);
- records come in ascending image id order.

Errors: an annotation of an image whose entry lacks an integer ``height`` / ``width`` or a
``file_name``, or whose own content is wrong (``bbox`` not four finite numbers, unknown
``category_id``, a subclass's check such as the segmentation), goes through ``on_error``; with
``"skip"`` its whole image is dropped (one warning per image). An annotation of an unknown
``image_id`` goes through ``on_error`` on its own. The file itself (missing, not COCO) raises.

Cost: one pass in Python over the annotations with cheap checks, boxes converted in bulk with numpy;
boxes, labels and annotation ids of the kept annotations live in three flat arrays (the json's dicts
are released after indexing), so Objects365's ~25M boxes cost ~1 GB after loading, not the json's size.
"""

from __future__ import annotations

import math
from array import array
from pathlib import Path
from typing import Any

import numpy as np

from ..io import DataError, handle_error
from ..types import DetectionRecord
from ._common import Reader, check_relative, load_json

MIN_BOX_SIDE = 1.0
"""Boxes whose clipped width or height is ``<=`` this many pixels are degenerate and left out."""


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def first_existing(candidates: list[Path], what: str) -> Path:
    """The first of ``candidates`` that exists, else :class:`DataError` listing them all."""
    for c in candidates:
        if c.exists():
            return c
    raise DataError(f"{what} not found; looked for: {', '.join(str(c) for c in candidates)}")


def coco_box_to_xyxy(bbox: Any, height: int, width: int, source: str) -> tuple[float, float, float, float] | None:
    """COCO ``[x, y, w, h]`` -> ``(x0, y0, x1, y1)`` clipped to ``width x height``; ``None`` when the
    clipped box is degenerate (a side <= :data:`MIN_BOX_SIDE`). Raises :class:`DataError` naming
    ``source`` unless ``bbox`` is four finite numbers."""
    if not isinstance(bbox, (list, tuple)) or len(bbox) != 4 or not all(_is_number(v) for v in bbox):
        raise DataError(f"{source}: bbox {bbox!r} is not [x, y, w, h] numbers")
    x, y, w, h = (float(v) for v in bbox)
    if not all(math.isfinite(v) for v in (x, y, w, h)):
        raise DataError(f"{source}: bbox {bbox!r} is not finite")
    x0, x1 = min(max(x, 0.0), width), min(max(x + w, 0.0), width)
    y0, y1 = min(max(y, 0.0), height), min(max(y + h, 0.0), height)
    if x1 - x0 <= MIN_BOX_SIDE or y1 - y0 <= MIN_BOX_SIDE:
        return None
    return x0, y0, x1, y1


class DetectionJSON(Reader):
    """Per-image detection records of a COCO-format file (see the module docstring).

    Subclasses resolve their paths, call :meth:`_index` with the annotation file and implement
    :meth:`_image_path`; those with masks set ``with_segmentation`` and implement
    :meth:`_check_segmentation` / :meth:`_decode_masks`.
    """

    dataset = "detection"
    with_segmentation = False

    annotation_file: Path
    split: str | None
    category_ids: list[int]
    categories: list[str]

    @property
    def num_classes(self) -> int:
        """Number of classes (``len(categories)``); labels are in ``0 .. num_classes - 1``."""
        return len(self.category_ids)

    # ------------------------------------------------------------------------------- subclass hooks
    def _image_path(self, file_name: str) -> Path:  # pragma: no cover - abstract
        raise NotImplementedError

    def _check_segmentation(self, ann: dict[str, Any], height: int, width: int, source: str) -> Any:
        return None

    def _decode_masks(self, segmentations: list[Any], ann_ids: list[int], height: int, width: int) -> np.ndarray:
        raise NotImplementedError  # pragma: no cover - only with with_segmentation

    # ------------------------------------------------------------------------------------ indexing
    def _index(self, annotation_file: Path, split: str | None) -> None:
        """Read ``annotation_file`` and fill the entries: one per image with at least one kept box."""
        self.annotation_file, self.split = Path(annotation_file), split
        data = load_json(self.annotation_file)
        if not isinstance(data, dict) or not all(
            isinstance(data.get(k), list) for k in ("images", "annotations", "categories")
        ):
            raise DataError(f"{self.annotation_file} is not a COCO-format file (needs images, annotations, "
                            "categories lists)")
        names: dict[int, str] = {}
        for cat in data["categories"]:
            if not isinstance(cat, dict) or not _is_int(cat.get("id")):
                raise DataError(f"{self.annotation_file}: category {str(cat)[:80]} has no integer id")
            names[cat["id"]] = str(cat.get("name", cat["id"]))
        self.category_ids = sorted(names)
        self.categories = [names[i] for i in self.category_ids]
        label_of = {cid: i for i, cid in enumerate(self.category_ids)}
        images = {img["id"]: img for img in data["images"] if isinstance(img, dict) and _is_int(img.get("id"))}

        # one pass in Python over the annotations (cheap checks only); boxes are converted in bulk below
        bboxes: list[Any] = []
        labels, image_ids, ann_ids, heights, widths = (array("q") for _ in range(5))
        segmentations: list[Any] = []
        checked: dict[int, bool] = {}  # image id -> usable
        prefix = f"{self.annotation_file} ann "
        for ann in data["annotations"]:
            if not isinstance(ann, dict):
                handle_error(DataError(f"{self.annotation_file}: annotation {str(ann)[:80]} is not an object"),
                             self.on_error)
                continue
            image_id = ann.get("image_id")
            img = images.get(image_id) if type(image_id) is int else None  # type() is: a bool is no id
            if img is None:
                handle_error(DataError(f"{prefix}{ann.get('id')}: image_id {image_id!r} not in images"),
                             self.on_error)
                continue
            usable = checked.get(image_id)
            if usable is False or ann.get("iscrowd", 0):
                continue
            try:
                if usable is None:
                    if not (_is_int(img.get("height")) and _is_int(img.get("width")) and img["height"] > 0
                            and img["width"] > 0 and isinstance(img.get("file_name"), str)):
                        raise DataError(f"{prefix}{ann.get('id')}: image {image_id} lacks a positive height / "
                                        "width or a file_name")
                    check_relative(img["file_name"], f"{prefix}{ann.get('id')}: image {image_id}")
                    checked[image_id] = True
                bbox = ann.get("bbox")
                if not isinstance(bbox, list) or len(bbox) != 4:
                    raise DataError(f"{prefix}{ann.get('id')}: bbox {bbox!r} is not [x, y, w, h] numbers")
                category = ann.get("category_id")
                label = label_of.get(category) if type(category) is int else None
                if label is None:
                    raise DataError(f"{prefix}{ann.get('id')}: category_id {category!r} not in categories")
                if self.with_segmentation:
                    segm = self._check_segmentation(ann, img["height"], img["width"], f"{prefix}{ann.get('id')}")
            except DataError as err:
                checked[image_id] = False
                handle_error(err, self.on_error)
                continue
            bboxes.append(bbox)
            labels.append(label)
            image_ids.append(image_id)
            ann_id = ann.get("id")
            ann_ids.append(ann_id if type(ann_id) is int else -1)
            heights.append(img["height"])
            widths.append(img["width"])
            if self.with_segmentation:
                segmentations.append(segm)
        image_ids_np = np.frombuffer(image_ids, np.int64) if image_ids else np.zeros(0, np.int64)
        boxes, keep = self._convert_boxes(bboxes, image_ids_np, ann_ids, heights, widths, checked, prefix)
        del bboxes

        bad = [i for i, ok in checked.items() if not ok]
        order = np.flatnonzero(keep & ~np.isin(image_ids_np, bad))
        order = order[np.argsort(image_ids_np[order], kind="stable")]
        self._boxes = boxes[order]
        self._labels = np.asarray(labels, np.int64)[order] if labels else np.zeros(0, np.int64)
        self._ann_ids = np.asarray(ann_ids, np.int64)[order] if ann_ids else np.zeros(0, np.int64)
        self._segmentations = [segmentations[i] for i in order] if self.with_segmentation else []
        sorted_ids = image_ids_np[order]
        unique, starts = np.unique(sorted_ids, return_index=True)
        stops = np.append(starts[1:], len(sorted_ids))
        self._images = {int(i): (images[int(i)]["file_name"], images[int(i)]["height"], images[int(i)]["width"])
                        for i in unique}
        self._entries = [(int(i), int(a), int(b)) for i, a, b in zip(unique, starts, stops)]

    def _convert_boxes(self, bboxes: list[Any], image_ids: np.ndarray, ann_ids: Any, heights: Any, widths: Any,
                       checked: dict[int, bool], prefix: str) -> tuple[np.ndarray, np.ndarray]:
        """``N x 4`` float32 clipped ``x0, y0, x1, y1`` of COCO ``bboxes`` and the ``N`` bool rows to
        keep (not degenerate). Rows that are not four finite numbers go through ``on_error`` (their
        image is marked unusable), found by the per-box check of :func:`coco_box_to_xyxy`."""
        try:
            raw = np.array(bboxes) if bboxes else np.zeros((0, 4))
        except (TypeError, ValueError):  # ragged lists: found and named by the per-box check below
            raw = np.zeros(0)
        if raw.dtype.kind not in "iuf" or raw.shape != (len(bboxes), 4) or not np.isfinite(raw).all():
            raw = np.zeros((len(bboxes), 4))
            for i, bbox in enumerate(bboxes):
                try:
                    coco_box_to_xyxy(bbox, heights[i], widths[i], f"{prefix}{ann_ids[i]}")
                except DataError as err:
                    checked[int(image_ids[i])] = False
                    handle_error(err, self.on_error)
                    continue
                raw[i] = bbox
        raw = raw.astype(np.float64)
        h = np.asarray(heights, np.float64) if heights else np.zeros(0)
        w = np.asarray(widths, np.float64) if widths else np.zeros(0)
        x0, y0 = np.clip(raw[:, 0], 0, w), np.clip(raw[:, 1], 0, h)
        x1, y1 = np.clip(raw[:, 0] + raw[:, 2], 0, w), np.clip(raw[:, 1] + raw[:, 3], 0, h)
        keep = (x1 - x0 > MIN_BOX_SIDE) & (y1 - y0 > MIN_BOX_SIDE)
        return np.stack([x0, y0, x1, y1], axis=1).astype(np.float32), keep

    def _build(self, entry: tuple[int, int, int]) -> DetectionRecord:
        image_id, start, stop = entry
        file_name, height, width = self._images[image_id]
        ann_ids = self._ann_ids[start:stop].tolist()
        masks = None
        if self.with_segmentation:
            masks = self._decode_masks(self._segmentations[start:stop], ann_ids, height, width)
        return DetectionRecord(
            image=self._image_path(file_name),
            boxes=self._boxes[start:stop].copy(),
            labels=self._labels[start:stop].copy(),
            masks=masks,
            image_id=image_id,
            meta={"split": self.split, "dataset": self.dataset, "height": height, "width": width,
                  "file_name": file_name, "ann_ids": ann_ids},
        )

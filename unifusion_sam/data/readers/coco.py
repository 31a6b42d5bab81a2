"""COCO instance annotations as per-object records (for pseudo-videos / VOS-style pretraining) and
as per-image detection records (:class:`COCODetection`, all instances of an image with boxes and labels).

Layout read as distributed::

    <root>/annotations/instances_<split>.json   # split in train2017, val2017, train2014, val2014
    <root>/<split>/<file_name>                  # the images

(or pass ``annotation_file`` and ``image_dir`` explicitly). One :class:`InstanceRecord` per
annotation: the object's mask is decoded at the image size when the record is built (polygons
unioned with ``pycocotools`` ``merge``; RLE strings and uncompressed count lists accepted).

Crowd regions (``iscrowd=1``, RLE covering a group of objects) are not single objects: by default
(``crowd="skip"``) they yield no record; ``crowd="include"`` makes records of them too (flagged in
``meta["iscrowd"]``). Tiny objects: annotations whose COCO ``area`` is below ``min_area`` pixels
are left out (default 0 = keep all). ``category_ids`` keeps only those categories.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..io import DataError, handle_error
from ..types import ImageLike
from ._common import Reader, check_choice, check_root, join_inside, load_json
from ._detection import DetectionJSON

COCO_SPLITS = ("train2017", "val2017", "train2014", "val2014")


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def is_json_id(v: Any) -> bool:
    """An image / annotation / category id read from JSON: an int or a string (not a list, a dict, ...)."""
    return isinstance(v, (int, str)) and not isinstance(v, bool)


def _compressed_counts(data: bytes, source: str) -> list[int]:
    """Run lengths of a COCO compressed RLE string (the inverse of pycocotools' ``rleToString``)."""
    counts: list[int] = []
    p = 0
    while p < len(data):
        x, k, more = 0, 0, True
        while more:
            if p >= len(data):
                raise DataError(f"{source}: truncated compressed RLE string")
            c = data[p] - 48
            if not 0 <= c < 64:
                raise DataError(f"{source}: invalid character in compressed RLE string")
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and c & 0x10:
                x |= -1 << (5 * k)
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return counts


def check_coco_segmentation(segm: Any, height: int, width: int, source: str) -> Any:
    """Validate a COCO ``segmentation`` and return it in a form pycocotools decodes safely.

    Polygons: a list of flat ``[x0, y0, x1, y1, ...]`` lists. Polygons with fewer than 6 numbers or
    an odd count cannot enclose pixels; they are dropped (as detectron2 does) -- passing one with
    exactly 4 numbers to pycocotools would be read as a *box*. If none remains, :class:`DataError`.
    RLE: ``{"size": [H, W], "counts": str | bytes | list[int]}``; ``size`` must equal the image size
    and uncompressed counts must sum to ``H * W``.
    """
    if isinstance(segm, list):
        if not segm:
            raise DataError(f"{source}: empty polygon list")
        polys = []
        for poly in segm:
            if not isinstance(poly, list) or not all(_is_number(v) for v in poly):
                raise DataError(f"{source}: polygon is not a flat list of numbers")
            if len(poly) >= 6 and len(poly) % 2 == 0:
                polys.append([float(v) for v in poly])
        if not polys:
            raise DataError(f"{source}: no polygon with >= 3 points")
        return polys
    if isinstance(segm, dict) and "counts" in segm and "size" in segm:
        size = segm["size"]
        if not isinstance(size, (list, tuple)) or list(size) != [height, width]:
            raise DataError(f"{source}: RLE size {size} does not match the image size [{height}, {width}]")
        counts = segm["counts"]
        if isinstance(counts, (str, bytes)):
            counts = _compressed_counts(counts.encode() if isinstance(counts, str) else counts, source)
        elif not isinstance(counts, list):
            raise DataError(f"{source}: RLE counts must be a string or a list, got {type(counts).__name__}")
        # pycocotools' decoder does not bound-check: counts must be exact before it sees them
        if not all(isinstance(n, int) and n >= 0 for n in counts) or sum(counts) != height * width:
            raise DataError(f"{source}: RLE counts must be non-negative ints summing to H*W = {height * width}")
        return segm
    raise DataError(f"{source}: segmentation must be a polygon list or an RLE dict, got {type(segm).__name__}")


def decode_coco_segmentation(segm: Any, height: int, width: int, source: str) -> np.ndarray:
    """Decode a COCO segmentation to an ``H x W`` bool mask at the image size.

    Several polygons of one object are rasterised separately and **unioned**
    (``pycocotools.mask.merge``), as the COCO API's ``annToRLE`` does: overlapping parts stay set.
    """
    try:
        from pycocotools import mask as mask_utils
    except ImportError as exc:  # pragma: no cover - pycocotools is a dependency of the readers
        raise ImportError("decoding COCO segmentations needs pycocotools (pip install pycocotools)") from exc
    segm = check_coco_segmentation(segm, height, width, source)
    try:
        if isinstance(segm, list):
            rle = mask_utils.merge(mask_utils.frPyObjects(segm, height, width))
        elif isinstance(segm["counts"], list):
            rle = mask_utils.frPyObjects(segm, height, width)
        else:
            counts = segm["counts"]
            rle = {"size": [height, width], "counts": counts.encode() if isinstance(counts, str) else counts}
        mask = mask_utils.decode(rle)
    except (ValueError, TypeError, OverflowError) as exc:
        raise DataError(f"{source}: cannot decode segmentation: {exc}") from exc
    if mask.ndim == 3:
        mask = mask.any(axis=2)
    if mask.shape != (height, width):
        raise DataError(f"{source}: decoded mask has shape {mask.shape}, expected {(height, width)}")
    return np.ascontiguousarray(mask.astype(bool))



def _coco_root(root, split, annotation_file, image_dir):
    """The checked root folder (``None`` when both ``annotation_file`` and ``image_dir`` are given)."""
    if root is None and (annotation_file is None or image_dir is None):
        raise ValueError("give root (with split) or both annotation_file and image_dir")
    if root is not None:
        root = check_root(root)
        if annotation_file is None or image_dir is None:
            check_choice(split, COCO_SPLITS, "split")
    return root

@dataclass
class InstanceRecord:
    """One object of one image.

    ``image`` is a path (or an ``H x W x 3`` uint8 array once materialized); ``mask`` is the
    ``H x W`` bool object mask; ``bbox`` is COCO ``[x, y, w, h]``.
    """

    image: ImageLike
    mask: np.ndarray
    category_id: int
    category: str | None
    ann_id: int
    image_id: int
    bbox: list[float]
    area: float
    meta: dict[str, Any] = field(default_factory=dict)


class COCOInstances(Reader):
    """Per-instance records of a COCO ``instances_*.json`` (see module docstring).

    Annotation problems (segmentation that cannot be decoded, RLE of the wrong size, unknown
    image or category) go through ``on_error``.
    """

    def __init__(
        self,
        root: str | os.PathLike | None = None,
        split: str | None = "train2017",
        *,
        annotation_file: str | os.PathLike | None = None,
        image_dir: str | os.PathLike | None = None,
        crowd: str = "skip",
        min_area: float = 0.0,
        category_ids: list[int] | None = None,
        on_error: str = "raise",
        verify: bool = False,
    ) -> None:
        super().__init__(on_error=on_error, verify=verify)
        root = _coco_root(root, split, annotation_file, image_dir)
        self.split = split
        self.crowd = check_choice(crowd, ("skip", "include"), "crowd")
        if isinstance(min_area, bool) or not isinstance(min_area, (int, float)) or min_area < 0:
            raise ValueError(f"min_area must be a non-negative number, got {min_area!r}")
        self.min_area = float(min_area)
        self.annotation_file = (
            Path(annotation_file) if annotation_file is not None else root / "annotations" / f"instances_{split}.json"
        )
        self.image_dir = check_root(image_dir if image_dir is not None else root / split, "COCO image folder")
        data = load_json(self.annotation_file)
        if (
            not isinstance(data, dict)
            or not isinstance(data.get("images"), list)
            or not isinstance(data.get("annotations"), list)
        ):
            raise DataError(f"{self.annotation_file} is not a COCO instances file (needs images, annotations lists)")
        if not isinstance(data.get("categories", []), list):
            raise DataError(f"{self.annotation_file}: categories must be a list, got {type(data['categories']).__name__}")
        self._images = {img["id"]: img for img in data["images"] if isinstance(img, dict) and is_json_id(img.get("id"))}
        self._cats = {c["id"]: c.get("name") for c in data.get("categories", [])
                      if isinstance(c, dict) and is_json_id(c.get("id"))}
        wanted = set(category_ids) if category_ids is not None else None
        for ann in data["annotations"]:
            if not isinstance(ann, dict):
                handle_error(DataError(f"{self.annotation_file}: annotation is not an object"), self.on_error)
                continue
            if ann.get("iscrowd", 0) and self.crowd == "skip":
                continue
            if wanted is not None and not (is_json_id(ann.get("category_id")) and ann["category_id"] in wanted):
                continue
            try:
                self._check(ann)
            except DataError as err:
                handle_error(err, self.on_error)
                continue
            if float(ann.get("area", 0.0)) < self.min_area:
                continue
            self._entries.append(ann)
        self._finish_init()

    def _check(self, ann: dict[str, Any]) -> None:
        where = f"{self.annotation_file} ann {ann.get('id')}"
        for key in ("image_id", "category_id"):
            if key in ann and not is_json_id(ann[key]):
                raise DataError(f"{where}: {key} {ann[key]!r} is not an id")
        bbox = ann.get("bbox")
        if bbox is not None and (not isinstance(bbox, list) or not all(_is_number(v) for v in bbox)):
            raise DataError(f"{where}: bbox {bbox!r} is not a list of numbers")
        img = self._images.get(ann.get("image_id"))
        if img is None:
            raise DataError(f"{where}: image_id {ann.get('image_id')} not in images")
        if not all(isinstance(img.get(k), int) for k in ("height", "width")) or not isinstance(
            img.get("file_name"), str
        ):
            raise DataError(f"{where}: image {img.get('id')} lacks height / width / file_name")
        join_inside(self.image_dir, img["file_name"], where)
        if not isinstance(ann.get("area", 0.0), (int, float)):
            raise DataError(f"{where}: area {ann.get('area')!r} is not a number")
        if self._cats and ann.get("category_id") not in self._cats:
            raise DataError(f"{where}: category_id {ann.get('category_id')} not in categories")
        check_coco_segmentation(ann.get("segmentation"), img["height"], img["width"], where)

    def _build(self, ann: dict[str, Any]) -> InstanceRecord:
        img = self._images[ann["image_id"]]
        where = f"{self.annotation_file} ann {ann.get('id')}"
        mask = decode_coco_segmentation(ann["segmentation"], img["height"], img["width"], where)
        return InstanceRecord(
            image=join_inside(self.image_dir, img["file_name"], where),
            mask=mask,
            category_id=ann.get("category_id"),
            category=self._cats.get(ann.get("category_id")),
            ann_id=ann.get("id"),
            image_id=ann["image_id"],
            bbox=list(ann.get("bbox") or []),
            area=float(ann.get("area", mask.sum())),
            meta={"iscrowd": bool(ann.get("iscrowd", 0)), "split": self.split},
        )


class COCODetection(DetectionJSON):
    """COCO instances per image (detection data of the full UniRef++ model's image stage).

    Same files as :class:`COCOInstances` (``<root>/annotations/instances_<split>.json`` +
    ``<root>/<split>/``, or ``annotation_file`` / ``image_dir``). One :class:`DetectionRecord` per
    image with all its non-crowd instances: ``boxes`` from the COCO ``bbox`` (``x, y, w, h`` ->
    clipped ``x0, y0, x1, y1``), ``labels`` = index of the sorted category ids (80 COCO classes ->
    0..79; see :mod:`unifusion_sam.data.readers._detection`), ``masks`` ``N x H x W`` bool decoded
    from the segmentations when the record is built (polygons unioned, RLEs; checked at indexing
    time like :class:`COCOInstances`). Degenerate boxes are left out and images with no instance
    left yield no record.
    """

    dataset = "coco"
    with_segmentation = True

    def __init__(
        self,
        root: str | os.PathLike | None = None,
        split: str | None = "train2017",
        *,
        annotation_file: str | os.PathLike | None = None,
        image_dir: str | os.PathLike | None = None,
        on_error: str = "raise",
        verify: bool = False,
    ) -> None:
        super().__init__(on_error=on_error, verify=verify)
        root = _coco_root(root, split, annotation_file, image_dir)
        if annotation_file is None:
            annotation_file = root / "annotations" / f"instances_{split}.json"
        self.image_dir = check_root(image_dir if image_dir is not None else root / split, "COCO image folder")
        self._index(Path(annotation_file), split)
        self._finish_init()

    def _image_path(self, file_name: str) -> Path:
        return join_inside(self.image_dir, file_name, str(self.annotation_file))

    def _check_segmentation(self, ann: dict[str, Any], height: int, width: int, source: str) -> Any:
        return check_coco_segmentation(ann.get("segmentation"), height, width, source)

    def _decode_masks(self, segmentations: list[Any], ann_ids: list[int], height: int, width: int) -> np.ndarray:
        masks = np.zeros((len(segmentations), height, width), dtype=bool)
        for i, (segm, ann_id) in enumerate(zip(segmentations, ann_ids, strict=True)):
            masks[i] = decode_coco_segmentation(segm, height, width, f"{self.annotation_file} ann {ann_id}")
        return masks

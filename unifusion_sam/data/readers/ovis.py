"""OVIS (Occluded Video Instance Segmentation) as class-agnostic VOS videos (UniRef++'s video data).

Layout read as distributed (YouTube-VIS format)::

    <root>/annotations_<split>.json     # or <root>/annotations/annotations_<split>.json; split in
                                        # train, valid, test (valid / test have no "annotations")
    <root>/<split>/<video>/<frame>.jpg  # e.g. train/2592056/img_0000001.jpg

The json holds ``videos`` (``id``, ``file_names`` -- frame paths relative to ``<root>/<split>`` --,
``height``, ``width``, ``length``), ``annotations`` (``id``, ``video_id``, ``category_id``,
``segmentations``: one RLE per frame, compressed string or uncompressed count list, or ``null``
where the object is absent; ``areas``, ``bboxes``, ``iscrowd``) and ``categories``.

Records: one :class:`VideoRecord` per video; the categories are dropped (class-agnostic, as UniRef++
trains on OVIS): the annotations of a video, in ascending annotation id order, are objects
``1..K``. An object is present on a frame when its RLE there is not ``null`` and covers at least one
pixel; annotations present nowhere and crowd annotations (``iscrowd=1``) are no objects. Each
frame where an object is present has an ``annotations`` entry: an :class:`RLELabelMap` that paints
the frame's RLEs into an ``H x W`` uint8 label map when called (lazily, by
:func:`~unifusion_sam.data.readers.load_video_annotation`). Where objects overlap, the later
annotation id wins (painted last) -- OVIS masks do overlap, being heavily occluded. ``first_frame``
maps each object to its first present frame (objects may appear late). ``meta["objects"][k]`` has
the object's ``ann_id``, ``category_id`` and ``category``.

Errors: a video without frames, whose frames are not in the frame folder, whose segmentation lists
do not match its frames, or with RLEs of the wrong size goes through ``on_error`` at indexing time
(the RLE contents are checked when decoded: :class:`DataError` naming the file, video, frame and
annotation). In ``train``, videos with no object yield no record.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from ..io import DataError, handle_error
from ..types import VideoRecord
from ._common import VOID_LABEL, Reader, check_choice, check_relative, check_root, load_json
from ._detection import first_existing
from .coco import decode_coco_segmentation

OVIS_SPLITS = ("train", "valid", "test")


class RLELabelMap:
    """A frame's label map built on call from COCO RLEs: ``objects`` is ``((object id, rle), ...)``
    in painting order (later ids overwrite earlier ones). Returns ``H x W`` uint8; ``str()`` names
    the source for error messages. Picklable (plain data), so records cross DataLoader workers."""

    def __init__(self, objects: tuple[tuple[int, Any], ...], height: int, width: int, source: str) -> None:
        self.objects, self.height, self.width, self.source = objects, height, width, source

    def __call__(self) -> np.ndarray:
        label = np.zeros((self.height, self.width), dtype=np.uint8)
        for obj, rle in self.objects:
            label[decode_coco_segmentation(rle, self.height, self.width, f"{self.source} object {obj}")] = obj
        return label

    def __str__(self) -> str:
        return self.source

    def __repr__(self) -> str:
        return f"RLELabelMap({self.source!r}, objects={[obj for obj, _ in self.objects]})"


def _rle_area(rle: dict[str, Any], source: str) -> int:
    """Pixels covered by a COCO RLE (compressed string or uncompressed count list), without decoding."""
    counts = rle["counts"]
    if isinstance(counts, list):
        if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in counts):
            raise DataError(f"{source}: RLE counts must be non-negative ints")
        return int(sum(counts[1::2]))
    from pycocotools import mask as mask_utils

    data = counts.encode() if isinstance(counts, str) else counts
    try:
        return int(mask_utils.area({"size": list(rle["size"]), "counts": data}))
    except (ValueError, TypeError, OverflowError) as exc:
        raise DataError(f"{source}: cannot read RLE: {exc}") from exc


class OVIS(Reader):
    """OVIS videos of one split as class-agnostic :class:`VideoRecord` s (see the module docstring).

    Args:
        root: the OVIS folder (holds ``annotations_<split>.json`` and ``<split>/``).
        split: ``train``, ``valid`` or ``test``.
        annotation_file / image_dir: override the json / the frame folder.
        on_error / verify: see :mod:`unifusion_sam.data.readers._common`.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        *,
        annotation_file: str | os.PathLike | None = None,
        image_dir: str | os.PathLike | None = None,
        on_error: str = "raise",
        verify: bool = False,
    ) -> None:
        super().__init__(on_error=on_error, verify=verify)
        self.root = check_root(root, "OVIS root")
        self.split = check_choice(split, OVIS_SPLITS, "split")
        name = f"annotations_{split}.json"
        self.annotation_file = Path(annotation_file) if annotation_file is not None else first_existing(
            [self.root / name, self.root / "annotations" / name], "OVIS annotation file")
        self.image_dir = check_root(image_dir if image_dir is not None else self.root / split, "OVIS frame folder")
        data = load_json(self.annotation_file)
        if not isinstance(data, dict) or not isinstance(data.get("videos"), list):
            raise DataError(f"{self.annotation_file} is not a YouTube-VIS format file (needs a videos list)")
        annotated = "annotations" in data
        if annotated and not isinstance(data["annotations"], list):
            raise DataError(f"{self.annotation_file}: 'annotations' is not a list")
        self.categories = {c["id"]: c.get("name") for c in data.get("categories") or []
                           if isinstance(c, dict) and "id" in c}
        videos = {v["id"]: v for v in data["videos"] if isinstance(v, dict) and isinstance(v.get("id"), int)}
        by_video: dict[int, list[dict]] = {vid: [] for vid in videos}
        for ann in data.get("annotations") or []:
            if not isinstance(ann, dict) or not isinstance(ann.get("video_id"), int) or ann["video_id"] not in by_video:
                where = f"{self.annotation_file} ann {ann.get('id') if isinstance(ann, dict) else str(ann)[:80]}"
                handle_error(DataError(f"{where}: not an annotation of a listed video"), self.on_error)
                continue
            by_video[ann["video_id"]].append(ann)
        self._listings: dict[Path, set[str]] = {}
        for vid in sorted(videos):
            try:
                entry = self._index_video(videos[vid], by_video[vid])
            except DataError as err:
                handle_error(err, self.on_error)
                continue
            if entry["objects"] or not annotated:
                self._entries.append(entry)
        del self._listings
        self._finish_init()

    def _frame_paths(self, video: dict[str, Any], where: str) -> list[Path]:
        names = video.get("file_names")
        if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
            raise DataError(f"{where}: no file_names list")
        if isinstance(video.get("length"), int) and video["length"] != len(names):
            raise DataError(f"{where}: length {video['length']} but {len(names)} file_names")
        paths = [self.image_dir.joinpath(*PurePosixPath(check_relative(n, where).replace("\\", "/")).parts)
                 for n in names]
        for path in paths:
            if path.parent not in self._listings:
                if not path.parent.is_dir():
                    raise DataError(f"{where}: frame folder not found: {path.parent}")
                self._listings[path.parent] = set(os.listdir(path.parent))
            if path.name not in self._listings[path.parent]:
                raise DataError(f"{where}: frame not found: {path}")
        return paths

    def _index_video(self, video: dict[str, Any], anns: list[dict]) -> dict[str, Any]:
        where = f"{self.annotation_file} video {video['id']}"
        frames = self._frame_paths(video, where)
        height, width = video.get("height"), video.get("width")
        if not (isinstance(height, int) and isinstance(width, int) and height > 0 and width > 0):
            raise DataError(f"{where}: no positive height / width")
        per_frame: dict[int, list[tuple[int, Any]]] = {}
        first: dict[int, int] = {}
        objects: dict[int, dict[str, Any]] = {}
        for ann in sorted(anns, key=lambda a: a["id"] if isinstance(a.get("id"), int) else -1):
            if ann.get("iscrowd", 0):
                continue
            ann_where = f"{self.annotation_file} ann {ann.get('id')} (video {video['id']})"
            segms = ann.get("segmentations")
            if not isinstance(segms, list) or len(segms) != len(frames):
                raise DataError(f"{ann_where}: segmentations must be a list of {len(frames)} (one per frame)")
            present = []
            for t, rle in enumerate(segms):
                if rle is None:
                    continue
                if (not isinstance(rle, dict) or not isinstance(rle.get("counts"), (str, list))
                        or rle.get("size") != [height, width]):
                    raise DataError(f"{ann_where} frame {t}: not an RLE of size [{height}, {width}]")
                if _rle_area(rle, f"{ann_where} frame {t}") > 0:
                    present.append((t, rle))
            if not present:
                continue
            obj = len(objects) + 1
            if obj >= VOID_LABEL:
                raise DataError(f"{where}: more than {VOID_LABEL - 1} objects do not fit a uint8 label map")
            category = ann.get("category_id")
            objects[obj] = {"ann_id": ann.get("id"), "category_id": category,
                            "category": self.categories.get(category) if isinstance(category, int) else None}
            first[obj] = present[0][0]
            for t, rle in present:
                per_frame.setdefault(t, []).append((obj, rle))
        name = frames[0].parent.name if frames[0].parent != self.image_dir else str(video["id"])
        return {"name": name, "video_id": video["id"], "frames": frames, "size": (height, width),
                "per_frame": per_frame, "first": first, "objects": objects}

    def _build(self, entry: dict[str, Any]) -> VideoRecord:
        height, width = entry["size"]
        frames: list[Path] = entry["frames"]
        annotations = {
            t: RLELabelMap(tuple(objs), height, width,
                           f"{self.annotation_file} video {entry['video_id']} frame {frames[t].name}")
            for t, objs in sorted(entry["per_frame"].items())
        }
        return VideoRecord(
            name=entry["name"],
            frames=list(frames),
            frame_names=[p.stem for p in frames],
            annotations=annotations,
            object_ids=sorted(entry["objects"]),
            first_frame=dict(sorted(entry["first"].items())),
            meta={"split": self.split, "dataset": "ovis", "video_id": entry["video_id"],
                  "objects": {k: dict(v) for k, v in entry["objects"].items()}},
        )

"""Ref-YouTube-VOS (URVOS, Seo et al. 2020; the CodaLab RVOS challenge release).

Layout read as distributed::

    <root>/meta_expressions/<split>/meta_expressions.json
        # {"videos": {vid: {"expressions": {exp_id: {"exp": str, "obj_id": "1"}}, "frames": ["00000", ...]}}}
    <root>/<split>/JPEGImages/<video>/<frame>.jpg
    <root>/train/Annotations/<video>/<frame>.png   # palette PNG, index = object id (train only)
    <root>/train/meta.json                         # YouTube-VOS style: objects, categories, frames

Splits: ``train``, ``valid``, ``test``. The competition's ``valid`` expressions file also lists the
305 ``test`` videos; with ``exclude_test=True`` (default) the videos of
``meta_expressions/test/meta_expressions.json`` are removed from ``valid``, leaving the 202
validation videos (as ReferFormer's ``inference_ytvos.py`` does). Expressions without an
``obj_id`` (valid / test) get object id ``-1``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..io import DataError, handle_error
from ..types import VideoRecord
from ._common import JPEG_SUFFIXES, Reader, check_choice, check_root, join_inside, list_files, load_json, scan_objects

REF_YOUTUBE_VOS_SPLITS = ("train", "valid", "test")
UNKNOWN_OBJECT = -1


def _expression_videos(path: Path) -> dict[str, Any]:
    data = load_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("videos"), dict):
        raise DataError(f"{path} has no 'videos' mapping")
    return data["videos"]


class RefYouTubeVOS(Reader):
    """Ref-YouTube-VOS videos with their expressions, one :class:`VideoRecord` per video.

    Records: ``frames`` = the meta's frame list (JPEG paths); ``expressions`` = exp id ->
    ``(object id, sentence)``; for ``train`` also ``annotations`` (every frame), ``object_ids`` and
    ``first_frame`` (from ``train/meta.json`` when present, else read from the label maps when the
    record is first built). ``meta`` has ``split`` and per-object ``category`` where known.
    A frame listed in the meta without its JPEG (or, in train, without its label map) and an
    expression whose ``obj_id`` is not an object of the video go through ``on_error``.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        *,
        exclude_test: bool = True,
        on_error: str = "raise",
        verify: bool = False,
    ) -> None:
        super().__init__(on_error=on_error, verify=verify)
        self.root = check_root(root)
        self.split = check_choice(split, REF_YOUTUBE_VOS_SPLITS, "split")
        self.expressions_path = self.root / "meta_expressions" / split / "meta_expressions.json"
        videos = _expression_videos(self.expressions_path)
        self.excluded: set[str] = set()
        test_path = self.root / "meta_expressions" / "test" / "meta_expressions.json"
        if split == "valid" and exclude_test and test_path.is_file():
            self.excluded = set(_expression_videos(test_path)) & set(videos)
        self.image_root = check_root(self.root / split / "JPEGImages", f"Ref-YouTube-VOS {split} frame folder")
        self.ann_root = (
            check_root(self.root / "train" / "Annotations", "annotation folder") if split == "train" else None
        )
        meta_path = self.root / split / "meta.json"
        self.object_meta = {}
        if split == "train" and meta_path.is_file():
            meta = load_json(meta_path)
            if not isinstance(meta, dict) or not isinstance(meta.get("videos"), dict):
                raise DataError(f"{meta_path} has no 'videos' mapping")
            self.object_meta = meta["videos"]
        self._scanned: dict[str, dict[int, int]] = {}
        for video in sorted(set(videos) - self.excluded):
            try:
                self._entries.append(self._index(video, videos[video]))
            except DataError as err:
                handle_error(err, self.on_error)
        self._finish_init()

    def _index(self, video: str, data: Any) -> tuple:
        where = f"{self.expressions_path} video {video!r}"
        if not isinstance(data, dict) or not isinstance(data.get("frames"), list) or not data["frames"]:
            raise DataError(f"{where}: no frame list")
        if not all(isinstance(f, str) for f in data["frames"]):
            raise DataError(f"{where}: frames {data['frames']!r:.80} is not a list of frame names")
        if not isinstance(data.get("expressions"), dict) or not data["expressions"]:
            raise DataError(f"{where}: no expressions")
        on_disk = {p.stem: p for p in list_files(join_inside(self.image_root, video, where), JPEG_SUFFIXES)}
        names = sorted(data["frames"])
        missing = [n for n in names if n not in on_disk]
        if missing:
            raise DataError(f"{where}: frames {missing[:3]} not found in {self.image_root / video}")
        frames = [on_disk[n] for n in names]
        annotations: dict[int, Path] = {}
        if self.ann_root is not None:
            for i, n in enumerate(names):
                png = self.ann_root / video / f"{n}.png"
                if not png.is_file():
                    raise DataError(f"{where}: annotation not found: {png}")
                annotations[i] = png
        objects: dict[int, dict] = {}
        if video in self.object_meta:
            position = {n: i for i, n in enumerate(names)}
            raw_objects = self.object_meta[video].get("objects") if isinstance(self.object_meta[video], dict) else None
            for key, info in (raw_objects or {}).items():
                if not str(key).isdigit() or not isinstance(info, dict) or not isinstance(info.get("frames") or [], list) \
                        or not all(isinstance(f, str) for f in info.get("frames") or []):
                    raise DataError(f"{self.root / 'train' / 'meta.json'} video {video!r}: bad object entry {key!r}")
                listed = [position[f] for f in (info.get("frames") or []) if f in position]
                objects[int(key)] = {"category": info.get("category"), "first": min(listed) if listed else None}
        expressions: dict[str, tuple[int, str]] = {}
        for exp_id, exp in data["expressions"].items():
            if not isinstance(exp, dict) or not isinstance(exp.get("exp"), str):
                raise DataError(f"{where}: expression {exp_id} has no 'exp' string")
            raw = exp.get("obj_id")
            if raw is None:
                obj = UNKNOWN_OBJECT
            elif str(raw).isdigit():
                obj = int(raw)
            else:
                raise DataError(f"{where}: expression {exp_id} has obj_id {raw!r}")
            if objects and obj != UNKNOWN_OBJECT and obj not in objects:
                raise DataError(
                    f"{where}: expression {exp_id} refers to object {obj}, not in {self.root / 'train/meta.json'}"
                )
            expressions[str(exp_id)] = (obj, exp["exp"])
        return video, frames, annotations, objects, expressions

    def _build(self, entry: tuple) -> VideoRecord:
        video, frames, annotations, objects, expressions = entry
        first: dict[int, int] = {}
        if annotations:
            if objects and all(v["first"] is not None for v in objects.values()):
                first = {k: v["first"] for k, v in objects.items()}
            else:
                if video not in self._scanned:
                    self._scanned[video] = scan_objects(annotations)
                first = dict(self._scanned[video])
            referred = {obj for obj, _ in expressions.values() if obj != UNKNOWN_OBJECT}
            absent = referred - set(first)
            if absent:
                raise DataError(
                    f"video {video!r}: expressions refer to objects {sorted(absent)} that no label map "
                    f"under {self.ann_root / video} contains"
                )
        return VideoRecord(
            name=video,
            frames=list(frames),
            frame_names=[p.stem for p in frames],
            annotations=dict(annotations),
            object_ids=sorted(first),
            first_frame=dict(sorted(first.items())),
            expressions=dict(expressions),
            meta={
                "split": self.split,
                "dataset": "ref-youtube-vos",
                "objects": {k: {"category": v["category"]} for k, v in sorted(objects.items())},
            },
        )

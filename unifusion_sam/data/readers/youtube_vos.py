"""YouTube-VOS 2018 / 2019, LVOS and MOSE: the ``JPEGImages`` + palette ``Annotations`` video layout.

YouTube-VOS as distributed::

    <root>/<split>/JPEGImages/<video>/<frame>.jpg   # train / valid: every 5th frame of the 30 fps
                                                     # video (names 00000, 00005, ...)
    <root>/<split>/Annotations/<video>/<frame>.png  # palette PNG, index = object id
    <root>/<split>/meta.json    # {"videos": {vid: {"objects": {"1": {"category": c, "frames": [...]}}}}}
    <root>/<split>_all_frames/JPEGImages/<video>/   # every frame (also found as
                                                     # <root>/all_frames/<split>_all_frames/JPEGImages)

- ``train``: every JPEG has its label map (the dataset is annotated every 5th frame and ``train``
  holds exactly those frames).
- ``valid`` / ``test``: a label map only where an object first appears; objects may appear late.
  The benchmark scores the frames of ``<split>/JPEGImages`` (``meta["eval_frame_names"]``);
  ``all_frames=True`` reads the frames from the ``*_all_frames`` folder instead (annotations are
  matched by frame name).
- Seen / unseen: a category is *seen* when it occurs in the train ``meta.json``
  (``<root>/train/meta.json`` or ``train_meta=``); ``meta["objects"][id]`` holds ``category`` and
  ``seen`` (``None`` where the category is not known).

LVOS (``<root>/<split>/{JPEGImages,Annotations}``, meta ``<split>_meta.json`` whose objects carry
``frame_range``) and MOSE (``<root>/<split>/{JPEGImages,Annotations}``; valid annotates the first
frame only) use the same layout; for them object ids and first frames are read from the label maps,
cross-checked with a meta file when one is present. Value 255 is void, never an object.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..io import DataError, handle_error
from ..types import VideoRecord
from ._common import Reader, check_choice, check_root, index_video_folder, load_json, scan_objects

YOUTUBE_VOS_SPLITS = ("train", "valid", "test")
YOUTUBE_VOS_YEARS = (2018, 2019)


def _meta_videos(meta: Any, path: Path) -> dict[str, Any]:
    if not isinstance(meta, dict) or not isinstance(meta.get("videos"), dict):
        raise DataError(f"{path} has no 'videos' mapping")
    return meta["videos"]


class VOSFolder(Reader):
    """Videos of a ``JPEGImages/<video>`` + ``Annotations/<video>`` layout (generic; see presets).

    Args:
        image_root / ann_root: the ``JPEGImages`` and ``Annotations`` folders.
        meta_path: optional meta JSON (``{"videos": {vid: {"objects": {id: {...}}}}}``).
        objects_from: ``"meta"`` (object ids from the meta; first frames from each object's
            ``frames`` list where given) or ``"annotations"`` (ids and first frames from the label maps).
        dense: every frame has a label map (train splits); when ``False`` the label maps present are
            read when a record is built and must agree with the meta (ids and first frames).
        seen_categories: categories of the training set, for the ``seen`` flag.
        split / dataset: stored in ``meta``.
    """

    def __init__(
        self,
        image_root: str | os.PathLike,
        ann_root: str | os.PathLike | None,
        *,
        meta_path: str | os.PathLike | None = None,
        objects_from: str = "annotations",
        dense: bool = False,
        seen_categories: set[str] | None = None,
        split: str | None = None,
        dataset: str = "vos",
        on_error: str = "raise",
        verify: bool = False,
    ) -> None:
        super().__init__(on_error=on_error, verify=verify)
        self.image_root = check_root(image_root, "frame folder")
        self.ann_root = check_root(ann_root, "annotation folder") if ann_root is not None else None
        self.objects_from = check_choice(objects_from, ("meta", "annotations"), "objects_from")
        self.meta_path = Path(meta_path) if meta_path is not None else None
        self.meta_videos = _meta_videos(load_json(self.meta_path), self.meta_path) if self.meta_path else None
        if objects_from == "meta" and self.meta_videos is None:
            raise ValueError("objects_from='meta' needs meta_path")
        self.dense, self.seen_categories, self.split, self.dataset = dense, seen_categories, split, dataset
        self._cache: dict[str, VideoRecord] = {}
        if objects_from == "meta":
            videos = sorted(self.meta_videos)
        else:
            videos = sorted(p.name for p in self.image_root.iterdir() if p.is_dir())
        for video in videos:
            try:
                self._entries.append(self._index(video))
            except DataError as err:
                handle_error(err, self.on_error)
        self._finish_init()

    def _index(self, video: str) -> tuple[str, list[Path], dict[int, Path], dict[int, dict]]:
        ann_dir = self.ann_root / video if self.ann_root is not None else None
        if ann_dir is not None and not ann_dir.is_dir():
            raise DataError(f"annotation folder not found for video {video!r}: {ann_dir}")
        frames, annotations = index_video_folder(video, self.image_root / video, ann_dir, require_first=False)
        objects: dict[int, dict] = {}
        if self.meta_videos is not None:
            where = f"{self.meta_path} video {video!r}"
            if video not in self.meta_videos:
                raise DataError(f"{where}: video not in the meta file")
            raw = self.meta_videos[video].get("objects") if isinstance(self.meta_videos[video], dict) else None
            if not isinstance(raw, dict):
                raise DataError(f"{where}: no 'objects' mapping")
            position = {p.stem: i for i, p in enumerate(frames)}
            for key, info in raw.items():
                if not str(key).isdigit() or not 0 < int(key) < 255:
                    raise DataError(f"{where}: object id {key!r} is not an integer in 1..254")
                info = info if isinstance(info, dict) else {}
                listed = info.get("frames")
                if listed and (not isinstance(listed, list) or not all(isinstance(f, str) for f in listed)):
                    raise DataError(f"{where}: object {key} frames {listed!r:.80} is not a list of frame names")
                if not isinstance(info.get("category"), (str, type(None))):
                    raise DataError(f"{where}: object {key} category {info['category']!r:.80} is not a name")
                first = None
                if info.get("frames"):
                    missing = [f for f in info["frames"] if f not in position]
                    if missing:
                        raise DataError(
                            f"{where}: object {key} lists frames {missing[:3]} absent from {self.image_root / video}"
                        )
                    first = min(position[f] for f in info["frames"])
                objects[int(key)] = {
                    "category": info.get("category"),
                    "first": first,
                    "frames": list(info.get("frames") or []),
                }
        return video, frames, annotations, objects

    def _build(self, entry: tuple[str, list[Path], dict[int, Path], dict[int, dict]]) -> VideoRecord:
        video, frames, annotations, objects = entry
        if video not in self._cache:
            self._cache[video] = self._make_record(video, frames, annotations, objects)
        return self._cache[video].copy()

    def _make_record(self, video: str, frames: list[Path], annotations: dict[int, Path], objects: dict) -> VideoRecord:
        where = f"video {video!r} ({self.ann_root / video if self.ann_root else self.image_root / video})"
        first: dict[int, int] = {}
        if self.objects_from == "meta":
            first = {k: v["first"] for k, v in objects.items() if v["first"] is not None}
        need_scan = self.objects_from == "annotations" or not self.dense or len(first) < len(objects)
        if need_scan and annotations:
            scanned = scan_objects(annotations)
            extra = set(scanned) - set(objects) if objects else set()
            if extra:
                raise DataError(f"{where}: label maps hold ids {sorted(extra)} that the meta {self.meta_path} lacks")
            for obj in objects:
                if obj not in scanned:
                    raise DataError(f"{where}: object {obj} of {self.meta_path} is in no label map")
                if obj in first and first[obj] != scanned[obj]:
                    raise DataError(
                        f"{where}: object {obj} first appears in frame {frames[scanned[obj]].stem} "
                        f"but {self.meta_path} lists it from {frames[first[obj]].stem}"
                    )
            first = scanned if self.objects_from == "annotations" else {**scanned, **first}
        if not first:
            raise DataError(f"{where}: no object found")
        eval_names = sorted({f for v in objects.values() for f in v["frames"]})
        info = {}
        for obj in sorted(first):
            category = objects.get(obj, {}).get("category")
            seen = None if category is None or self.seen_categories is None else category in self.seen_categories
            info[obj] = {"category": category, "seen": seen}
        return VideoRecord(
            name=video,
            frames=list(frames),
            frame_names=[p.stem for p in frames],
            annotations=dict(annotations),
            object_ids=sorted(first),
            first_frame=dict(sorted(first.items())),
            meta={
                "split": self.split,
                "dataset": self.dataset,
                "objects": info,
                "eval_frame_names": eval_names or [p.stem for p in frames],
            },
        )


def _first_existing(candidates: list[Path], what: str) -> Path:
    for c in candidates:
        if c.exists():
            return c
    raise DataError(f"{what} not found; looked for: {', '.join(str(c) for c in candidates)}")


def _train_categories(path: Path) -> set[str]:
    return {
        o.get("category")
        for v in _meta_videos(load_json(path), path).values()
        for o in (v.get("objects") or {}).values()
        if isinstance(o, dict) and o.get("category") and isinstance(o["category"], str)
    }


class YouTubeVOS(VOSFolder):
    """YouTube-VOS 2018 / 2019 (see module docstring). ``split`` in ``train``, ``valid``, ``test``."""

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "valid",
        *,
        year: int = 2019,
        all_frames: bool = False,
        train_meta: str | os.PathLike | None = None,
        on_error: str = "raise",
        verify: bool = False,
    ) -> None:
        root = check_root(root)
        check_choice(split, YOUTUBE_VOS_SPLITS, "split")
        self.year = check_choice(year, YOUTUBE_VOS_YEARS, "year")
        if all_frames:
            image_root = _first_existing(
                [
                    root / f"{split}_all_frames" / "JPEGImages",
                    root / "all_frames" / f"{split}_all_frames" / "JPEGImages",
                ],
                f"YouTube-VOS {split} all-frames folder",
            )
        else:
            image_root = root / split / "JPEGImages"
        train_meta_path = Path(train_meta) if train_meta is not None else root / "train" / "meta.json"
        seen = _train_categories(train_meta_path) if (train_meta is not None or train_meta_path.is_file()) else None
        super().__init__(
            image_root,
            root / split / "Annotations",
            meta_path=root / split / "meta.json",
            objects_from="meta",
            dense=split == "train",
            seen_categories=seen,
            split=split,
            dataset=f"youtube-vos-{year}",
            on_error=on_error,
            verify=verify,
        )


class _FolderPreset(VOSFolder):
    """``<root>/<split>/{JPEGImages,Annotations}``; ids from the label maps, checked against a meta file."""

    DATASET = "vos"

    @staticmethod
    def _meta_candidates(root: Path, split: str) -> list[Path]:  # pragma: no cover - overridden
        return []

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "valid",
        *,
        meta_path: str | os.PathLike | None = None,
        on_error: str = "raise",
        verify: bool = False,
    ) -> None:
        root = check_root(root)
        check_choice(split, ("train", "valid", "test"), "split")
        meta = meta_path or next((c for c in self._meta_candidates(root, split) if c.is_file()), None)
        super().__init__(
            root / split / "JPEGImages",
            root / split / "Annotations",
            meta_path=meta,
            objects_from="annotations",
            dense=split == "train",
            split=split,
            dataset=self.DATASET,
            on_error=on_error,
            verify=verify,
        )


class LVOS(_FolderPreset):
    """LVOS (v1): ``<root>/<split>/{JPEGImages,Annotations}``; ``split`` in ``train``, ``valid``, ``test``.

    Object ids / first frames come from the label maps (valid: one label map where each object
    first appears). A meta file, when found (``<root>/<split>_meta.json``,
    ``<root>/<split>/<split>_meta.json`` or ``<root>/meta_jsons/<split>_meta.json``; or
    ``meta_path=``), must list the same objects.
    """

    DATASET = "lvos"

    @staticmethod
    def _meta_candidates(root: Path, split: str) -> list[Path]:
        name = f"{split}_meta.json"
        return [root / name, root / split / name, root / "meta_jsons" / name]


class MOSE(_FolderPreset):
    """MOSE: ``<root>/<split>/{JPEGImages,Annotations}``; valid annotates only the first frame.

    Object ids come from the label maps; a meta file (``<root>/meta_<split>.json`` or
    ``<root>/<split>/meta_<split>.json``; or ``meta_path=``), when present, must list the same objects.
    """

    DATASET = "mose"

    @staticmethod
    def _meta_candidates(root: Path, split: str) -> list[Path]:
        return [root / f"meta_{split}.json", root / split / f"meta_{split}.json"]

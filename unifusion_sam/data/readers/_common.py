"""Shared machinery of the dataset readers: the reader base class, path checks, COCO mask decoding
and the helpers that turn a lazy record (paths) into arrays.

Error policy (all readers):

- A root, meta file or split list that is missing raises :class:`DataError` naming the path,
  whatever ``on_error`` says: nothing can be read.
- A problem found while indexing one record (missing image folder, missing annotation the protocol
  needs, ids that do not match the meta, malformed segmentation) goes through ``on_error``:
  ``"raise"`` raises :class:`DataError`, ``"skip"`` drops the whole record with a
  :class:`DataWarning` naming the path.
- ``reader[i]`` builds record ``i`` lazily (paths, not pixels). Building may need to decode a small
  file (a first-frame PNG, an FSS mask); a failure raises :class:`DataError` -- an index cannot be
  skipped. Iterating (``for r in reader``) and :meth:`Reader.materialized` apply ``on_error``.
- :func:`materialize` loads every path of a record and checks that masks / label maps match their
  image size and that label-map ids are the record's object ids; a mismatch raises
  :class:`DataError` naming the file, so nothing is silently mislabelled.
- ``verify=True`` builds and materializes every record at construction time and applies
  ``on_error`` to each, so that afterwards every index is known to load (slow: decodes all files).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..io import DataError, check_on_error, handle_error, load_label_map, load_rgb

__all__ = [
    "VOID_LABEL",
    "Reader",
    "load_video_annotation",
    "load_video_frame",
    "materialize",
]
from ..types import DetectionRecord, FewShotEpisode, VideoRecord

VOID_LABEL = 255
"""Label-map value for "void / ignore" pixels (DAVIS / LVOS evaluation convention); never an object id."""

JPEG_SUFFIXES = (".jpg", ".jpeg")


class Reader:
    """Base class: a sized, indexable, iterable collection of lazily built records."""

    def __init__(self, *, on_error: str = "raise", verify: bool = False) -> None:
        self.on_error = check_on_error(on_error)
        if not isinstance(verify, bool):
            raise TypeError(f"verify must be a bool, got {type(verify).__name__}")
        self.verify = verify
        self._entries: list[Any] = []

    # subclasses fill self._entries in __init__ and implement _build(entry) -> record
    def _build(self, entry: Any) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def _finish_init(self) -> None:
        """Call at the end of a subclass ``__init__``: runs the ``verify`` pass."""
        if not self.verify:
            return
        kept = []
        for entry in self._entries:
            try:
                materialize(self._build(entry))
            except DataError as err:
                handle_error(err, self.on_error)
                continue
            kept.append(entry)
        self._entries = kept

    def __len__(self) -> int:
        return len(self._entries)

    def __getitem__(self, index: int) -> Any:
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
            raise TypeError(f"{type(self).__name__} indices must be integers, got {type(index).__name__}")
        n = len(self._entries)
        i = int(index) + n if index < 0 else int(index)
        if not 0 <= i < n:
            raise IndexError(f"index {index} out of range for {type(self).__name__} of length {n}")
        return self._build(self._entries[i])

    def __iter__(self) -> Iterator[Any]:
        for i in range(len(self)):
            try:
                record = self[i]
            except DataError as err:
                handle_error(err, self.on_error)
                continue
            yield record

    def load(self, index: int) -> Any:
        """Record ``index`` with every path loaded into arrays (raises :class:`DataError`)."""
        return materialize(self[index])

    def materialized(self) -> Iterator[Any]:
        """Iterate over materialized records, applying ``on_error`` to records that fail to load."""
        for i in range(len(self)):
            try:
                record = materialize(self[i])
            except DataError as err:
                handle_error(err, self.on_error)
                continue
            yield record


# ----------------------------------------------------------------------------------------- checks
def check_root(root: str | os.PathLike, what: str = "dataset root") -> Path:
    if not isinstance(root, (str, os.PathLike)):
        raise TypeError(f"{what} must be a path, got {type(root).__name__}")
    path = Path(root)
    if not path.is_dir():
        raise DataError(f"{what} does not exist or is not a directory: {path}")
    return path


def check_relative(name: Any, where: str) -> str:
    """``name``, a file or folder name read from an annotation or list file (``train2014/x.jpg``, a video
    name), when it stays below the folder it is joined to; a :class:`DataError` naming ``where`` for one
    that is absolute or climbs out with ``..``, which a hostile annotation file could use to make a reader
    open any file."""
    if not isinstance(name, str) or not name:
        raise DataError(f"{where}: expected a relative file name, got {name!r}")
    parts = name.replace("\\", "/").split("/")
    if name.startswith(("/", "\\")) or ".." in parts or (len(name) > 1 and name[1] == ":") or "\0" in name:
        raise DataError(f"{where}: file name {name!r} is absolute or climbs out of its folder ('..'): refused")
    return name


def join_inside(root: Path, name: Any, where: str) -> Path:
    """``root / name`` after :func:`check_relative`."""
    return Path(root) / check_relative(name, where)


def check_choice(value: Any, choices: Sequence[Any], name: str) -> Any:
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")
    return value


def load_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"annotation file not found: {path}")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"cannot parse JSON {path}: {exc}") from exc


def frame_sort_key(name: str) -> tuple[int, int, str]:
    """Numeric stems sort numerically (``00005`` < ``00010``), others by name after them."""
    stem = Path(name).stem
    return (0, int(stem), stem) if stem.isdigit() else (1, 0, stem)


def list_files(folder: Path, suffixes: Sequence[str]) -> list[Path]:
    """Files of ``folder`` with one of ``suffixes`` (case-insensitive), in frame order."""
    if not folder.is_dir():
        raise DataError(f"folder not found: {folder}")
    files = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in suffixes]
    return sorted(files, key=lambda p: frame_sort_key(p.name))


def label_ids(label_map: np.ndarray) -> set[int]:
    """Object ids present in a label map (0 = background and 255 = void excluded)."""
    ids = set(int(v) for v in np.unique(label_map))
    ids.discard(0)
    ids.discard(VOID_LABEL)
    return ids


def scan_objects(annotations: dict[int, Path], *, first_only: bool = False) -> dict[int, int]:
    """Object id -> index of the first annotated frame whose label map contains it.

    Reads the label maps of ``annotations`` (frame index -> palette PNG) in frame order; with
    ``first_only`` only the earliest one (the semi-supervised protocol of DAVIS: the first frame's
    annotation defines the objects).
    """
    first: dict[int, int] = {}
    for index in sorted(annotations):
        for obj in label_ids(load_label_map(annotations[index])):
            first.setdefault(obj, index)
        if first_only:
            break
    return first


def index_video_folder(
    name: str, image_dir: Path, ann_dir: Path | None, *, require_first: bool
) -> tuple[list[Path], dict[int, Path]]:
    """Frames (JPEGs in frame order) and annotations (frame index -> PNG) of one video folder.

    Raises :class:`DataError` when the frame folder is missing or empty, when a PNG has no frame of
    the same name (its labels could not be placed), or, with ``require_first``, when the first
    frame has no annotation (semi-supervised protocols start from it).
    """
    check_relative(name, "video name")  # from a split list or a meta file
    frames = list_files(image_dir, JPEG_SUFFIXES)
    if not frames:
        raise DataError(f"video {name!r} has no frames in {image_dir}")
    annotations: dict[int, Path] = {}
    if ann_dir is not None:
        position = {p.stem: i for i, p in enumerate(frames)}
        for png in list_files(ann_dir, (".png",)):
            if png.stem not in position:
                raise DataError(f"annotation {png} has no frame {png.stem} in {image_dir}")
            annotations[position[png.stem]] = png
        if require_first and 0 not in annotations:
            raise DataError(f"video {name!r}: first frame {frames[0].name} has no annotation in {ann_dir}")
    return frames, annotations


# ---------------------------------------------------------------------------------- materializing
def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """``(H, W)`` of an image file from its header (no decoding)."""
    try:
        with Image.open(path) as im:
            return im.height, im.width
    except (OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"cannot read image header {path}: {exc}") from exc


def _load_image(image: Any) -> np.ndarray:
    return image if isinstance(image, np.ndarray) else load_rgb(image)


def _check_mask(mask: np.ndarray, image: np.ndarray, what: str, image_ref: Any) -> None:
    if np.asarray(mask).shape != image.shape[:2]:
        raise DataError(f"{what} has shape {np.asarray(mask).shape} but image {image_ref} is {image.shape[:2]}")


def load_video_frame(record: VideoRecord, index: int) -> np.ndarray:
    """Frame ``index`` of a video record as ``H x W x 3`` uint8."""
    return _load_image(record.frames[index])


def load_video_annotation(record: VideoRecord, index: int) -> np.ndarray:
    """Label map of frame ``index`` as ``H x W`` uint8, checked against ``record.object_ids``.

    An annotation entry is an ``H x W`` array, a path to a palette PNG, or a callable taking no
    argument that returns the ``H x W`` label map (built lazily, e.g. from RLEs; its ``str`` names
    the source in errors). Raises :class:`DataError` naming the PNG (or source) if it holds an id
    that is not one of the record's objects (0 = background and 255 = void are allowed) or if its
    size differs from the frame's.
    """
    ann = record.annotations[index]
    if isinstance(ann, np.ndarray):
        label = np.asarray(ann)
    elif callable(ann):
        label = np.asarray(ann())
    else:
        label = load_label_map(ann)
    unknown = label_ids(label) - set(record.object_ids)
    if unknown:
        raise DataError(
            f"label map {ann if not isinstance(ann, np.ndarray) else f'of frame {index}'} of video "
            f"{record.name!r} holds ids {sorted(unknown)} that are not its objects {sorted(record.object_ids)}"
        )
    frame = record.frames[index]
    size = frame.shape[:2] if isinstance(frame, np.ndarray) else image_size(frame)
    if label.shape != tuple(size):
        raise DataError(f"label map {ann} has shape {label.shape} but frame {frame} is {tuple(size)}")
    return label


def materialize(record: Any) -> Any:
    """Return a copy of ``record`` whose images / annotations are arrays (checked; see module doc)."""
    if isinstance(record, VideoRecord):
        frames = [load_video_frame(record, i) for i in range(len(record.frames))]
        done = dataclasses.replace(record, frames=frames)
        annotations = {i: load_video_annotation(done, i) for i in sorted(record.annotations)}
        return dataclasses.replace(done, annotations=annotations)
    if isinstance(record, FewShotEpisode):
        query = _load_image(record.query_image)
        _check_mask(record.query_mask, query, "query mask", record.query_image)
        supports = []
        for img, mask in zip(record.support_images, record.support_masks, strict=True):
            arr = _load_image(img)
            _check_mask(mask, arr, "support mask", img)
            supports.append(arr)
        return dataclasses.replace(record, query_image=query, support_images=supports)
    if isinstance(record, DetectionRecord):
        return _materialize_detection(record)
    if dataclasses.is_dataclass(record) and hasattr(record, "image") and hasattr(record, "mask"):
        image = _load_image(record.image)
        _check_mask(record.mask, image, "mask", record.image)
        return dataclasses.replace(record, image=image)
    raise TypeError(f"cannot materialize a {type(record).__name__}")


def _materialize_detection(record: DetectionRecord) -> DetectionRecord:
    """Load the image; check it against the annotated size (``meta["height"]`` / ``["width"]``) and
    the ``N x 4`` boxes, ``N`` labels and ``N x H x W`` masks against each other."""
    image = _load_image(record.image)
    size = (record.meta.get("height"), record.meta.get("width"))
    if None not in size and image.shape[:2] != size:
        raise DataError(f"image {record.image} is {image.shape[:2]} but its annotations are for {size}")
    n = len(record.boxes)
    if record.boxes.shape != (n, 4) or record.labels.shape != (n,):
        raise DataError(f"image {record.image}: boxes {record.boxes.shape} / labels {record.labels.shape} "
                        "are not N x 4 / N")
    if record.masks is not None and record.masks.shape != (n, *image.shape[:2]):
        raise DataError(f"image {record.image}: masks {record.masks.shape} are not {(n, *image.shape[:2])}")
    return dataclasses.replace(record, image=image)

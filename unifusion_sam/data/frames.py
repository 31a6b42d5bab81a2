"""Frames and masks as the command line and the web demo read them from disk.

:func:`open_frames` reads a folder of frame images (sorted by name, numbers numerically) or a video file
(through ``imageio`` with ffmpeg: ``pip install "unifusion-sam[video]"``) lazily, one ``H x W x 3`` uint8
frame at a time; :func:`read_label_file` reads a mask file as object ids. Problems are
:class:`~unifusion_sam.data.io.DataError` naming the file.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image

from .io import DataError, load_binary_mask, load_label_map, load_rgb
from .readers._common import frame_sort_key

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
VIDEO_HINT = 'reading video files needs imageio with ffmpeg: pip install "unifusion-sam[video]"'


def read_label_file(path: str | os.PathLike) -> np.ndarray:
    """A mask file as an ``H x W`` uint8 label map: palette PNG -> its indices (255 = void -> 0);
    any other image -> 1 where the grey value is >= 128 (or == 1 for 0/1 masks), else 0."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"mask file not found: {path}")
    try:
        with Image.open(path) as im:
            palette = im.mode == "P"
        if palette:
            labels = load_label_map(path)
            labels[labels == 255] = 0
            return labels
        return load_binary_mask(path).astype(np.uint8)
    except (OSError, SyntaxError, ValueError) as exc:  # DataError is a ValueError
        raise DataError(f"cannot read mask {path}: {exc}") from exc


def open_frames(source: str | os.PathLike) -> Iterator[tuple[str, np.ndarray]]:
    """``(name, H x W x 3 uint8)`` for each frame of a folder of images (sorted by name) or a video file.

    The source is checked now (missing path, empty folder, no video reader) and read lazily."""
    source = Path(source)
    if source.is_dir():
        files = sorted((p for p in source.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES),
                       key=lambda p: frame_sort_key(p.name))
        if not files:
            raise DataError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) in {source}")
        return ((f.stem, load_rgb(f)) for f in files)
    if not source.is_file():
        raise DataError(f"video not found: {source}")
    try:
        import imageio.v3 as iio
    except ImportError:
        raise DataError(f"{source} is a video file: {VIDEO_HINT}") from None
    return _video_frames(iio, source)


def _video_frames(iio, source: Path) -> Iterator[tuple[str, np.ndarray]]:
    try:
        for i, frame in enumerate(iio.imiter(source)):
            frame = np.asarray(frame)
            if frame.ndim == 2:
                frame = np.repeat(frame[..., None], 3, axis=2)
            yield f"{i:05d}", np.ascontiguousarray(frame[..., :3], dtype=np.uint8)
    except (ImportError, OSError, ValueError, RuntimeError) as exc:
        raise DataError(f"cannot read video {source} ({exc}); {VIDEO_HINT}") from exc

"""Reading and writing images, masks and palette PNGs, with errors that name the file.

Error policy shared by all readers: a file that cannot be decoded raises :class:`DataError`
(a :class:`ValueError`) whose message contains the path. Readers take ``on_error="raise"``
(default) or ``"skip"``; with ``"skip"`` they emit a :class:`DataWarning` naming the path and
drop the whole record, so nothing is silently mislabelled.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

ON_ERROR_CHOICES = ("raise", "skip")


class DataError(ValueError):
    """A dataset file is missing, corrupt, or inconsistent with its annotations."""


class DataWarning(UserWarning):
    """A record was skipped because of a data problem (``on_error="skip"``)."""


def check_on_error(on_error: str) -> str:
    if on_error not in ON_ERROR_CHOICES:
        raise ValueError(f"on_error must be one of {list(ON_ERROR_CHOICES)}, got {on_error!r}")
    return on_error


def handle_error(error: DataError, on_error: str) -> None:
    """Raise ``error`` or warn about it, following the reader's ``on_error`` policy."""
    if on_error == "raise":
        raise error
    warnings.warn(f"skipped: {error}", DataWarning, stacklevel=3)


def load_rgb(path: str | os.PathLike) -> np.ndarray:
    """Load an image file as ``H x W x 3`` uint8 RGB (grayscale / RGBA / palette are converted)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"image file not found: {path}")
    try:
        with Image.open(path) as im:
            im.load()
            return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()
    except (OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"cannot decode image {path}: {exc}") from exc


def load_label_map(path: str | os.PathLike, *, require_palette: bool = True) -> np.ndarray:
    """Load an annotation PNG as an ``H x W`` uint8 label map (palette indices = object ids).

    DAVIS / YouTube-VOS annotations are palette ("P" mode) PNGs whose indices are object ids.
    A non-palette PNG raises :class:`DataError` unless ``require_palette=False``, in which case an
    ``L`` image is read as is and an RGB image is rejected (its colours are not ids).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"annotation file not found: {path}")
    try:
        with Image.open(path) as im:
            im.load()
            mode = im.mode
            if mode == "P":
                return np.asarray(im, dtype=np.uint8).copy()
            if not require_palette and mode in ("L", "1", "I", "I;16"):
                return np.asarray(im).astype(np.uint8)
    except (OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"cannot decode annotation {path}: {exc}") from exc
    raise DataError(f"annotation {path} is a {mode!r}-mode PNG, expected a palette ('P') PNG")


def load_binary_mask(path: str | os.PathLike, threshold: int = 128) -> np.ndarray:
    """Load a 0/255 (or 0/1) mask image as ``H x W`` bool (pixels ``>= threshold`` or == 1 are True)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"mask file not found: {path}")
    try:
        with Image.open(path) as im:
            im.load()
            arr = np.asarray(im.convert("L"), dtype=np.uint8)
    except (OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"cannot decode mask {path}: {exc}") from exc
    if arr.max(initial=0) <= 1:
        return arr.astype(bool)
    return arr >= threshold


def davis_palette() -> np.ndarray:
    """The DAVIS / YouTube-VOS palette as a ``256 x 3`` uint8 array (bit-interleaved VOC colours)."""
    palette = np.zeros((256, 3), dtype=np.uint8)
    for i in range(256):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        palette[i] = (r, g, b)
    return palette


def save_palette_png(path: str | os.PathLike, label_map: np.ndarray, palette: np.ndarray | None = None) -> None:
    """Write an ``H x W`` integer label map as a palette PNG (atomically: temporary file + rename)."""
    label_map = np.asarray(label_map)
    if label_map.ndim != 2:
        raise ValueError(f"label_map must be H x W, got shape {label_map.shape}")
    if label_map.size and (label_map.min() < 0 or label_map.max() > 255):
        raise ValueError(f"label ids must be in [0, 255], got range [{label_map.min()}, {label_map.max()}]")
    pal = davis_palette() if palette is None else np.asarray(palette, dtype=np.uint8).reshape(-1, 3)
    im = Image.fromarray(label_map.astype(np.uint8), mode="P")
    im.putpalette(pal.flatten().tolist())
    save_image_atomic(im, path)


def save_image_atomic(im: Image.Image, path: str | os.PathLike, fmt: str = "PNG", **kwargs: object) -> Path:
    """Write ``im`` to ``path`` in format ``fmt`` through a temporary file renamed into place, so a reader
    (or a crash) never sees half a picture; the folder is created. ``kwargs`` go to ``Image.save``."""
    from ..checkpoint.io import atomic_write_file  # the one atomic writer (imports torch: only when writing)

    return atomic_write_file(path, lambda tmp: im.save(tmp, format=fmt, **kwargs))

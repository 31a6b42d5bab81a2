"""What the demo page hands over, turned into numpy: images, editor drawings, uploaded masks, videos.

An image editor's value is a dict ``{"background": H x W x 3|4, "layers": [H x W x 4, ...], "composite":
...}`` (uint8; Gradio's ``gr.ImageEditor`` with ``type="numpy"``); what was painted is the layers'
alpha. Uploaded masks are files read like the CLI's ``--mask`` / ``--ref-mask`` (palette PNG -> its
indices, any other image -> 0/255). Videos are video files (read like the CLI's ``track``; needs
``imageio-ffmpeg``) or zips of frame images (sorted by name, numbers numerically), read frame by frame.
Every bad input raises :class:`DemoError` with a message meant for the page.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image

from ..data.frames import IMAGE_SUFFIXES, open_frames, read_label_file
from ..data.io import DataError
from ..data.readers._common import frame_sort_key
from ..inference.inputs import to_rgb_array

VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".gif")
ZIP_SUFFIXES = (".zip",)
ALPHA_DRAWN = 128  # a layer pixel with at least this alpha counts as painted


class DemoError(ValueError):
    """A bad input; its message is shown on the page as it is."""


def image_array(image, name: str = "image") -> np.ndarray:
    """``H x W x 3`` uint8 RGB from a numpy array, a PIL image or an editor value; ``DemoError`` if missing."""
    if isinstance(image, Mapping):
        image = image.get("background")
    if image is None:
        raise DemoError(f"Upload {name} first.")
    try:
        return to_rgb_array(image, name)
    except (TypeError, ValueError) as exc:
        raise DemoError(f"Cannot use {name}: {exc}") from exc


def _layers(value) -> list[np.ndarray]:
    layers = value.get("layers") if isinstance(value, Mapping) else None
    return [np.asarray(layer) for layer in (layers or []) if layer is not None]


def _fit(array: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A 2-D uint8 map resized (nearest) to ``shape`` (h, w) when a layer and its background differ in size."""
    if array.shape == shape:
        return array
    return np.asarray(Image.fromarray(array).resize((shape[1], shape[0]), Image.NEAREST))


def painted(value, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray] | None:
    """The editor's painted pixels at ``shape`` (h, w): ``(H x W bool where painted, H x W x 3 uint8 colour of
    the topmost painted layer)``, or ``None`` when nothing is painted."""
    drawn = np.zeros(shape, dtype=bool)
    colour = np.zeros((*shape, 3), dtype=np.uint8)
    for layer in _layers(value):
        if layer.ndim != 3 or layer.shape[2] != 4:
            raise DemoError(f"a drawing layer must be RGBA (H x W x 4), got shape {layer.shape}")
        here = _fit(np.ascontiguousarray(layer[..., 3]), shape) >= ALPHA_DRAWN
        for c in range(3):
            colour[..., c] = np.where(here, _fit(np.ascontiguousarray(layer[..., c]), shape), colour[..., c])
        drawn |= here
    return (drawn, colour) if drawn.any() else None


def editor_mask(value, shape: tuple[int, int]) -> np.ndarray | None:
    """``H x W`` bool: what was painted on the editor (any colour), or ``None`` when nothing was."""
    found = painted(value, shape)
    return None if found is None else found[0]


def editor_labels(value, colours: np.ndarray) -> np.ndarray | None:
    """``H x W`` uint8 object ids of a painted first frame: a painted pixel gets ``k + 1`` for the nearest of
    ``colours`` (``N x 3`` uint8, object ``k + 1``'s brush colour); ``None`` when nothing was painted."""
    background = image_array(value, "the first frame")
    found = painted(value, background.shape[:2])
    if found is None:
        return None
    drawn, colour = found
    colours = np.asarray(colours, dtype=np.int32).reshape(-1, 3)
    distance = ((colour[drawn].astype(np.int32)[:, None, :] - colours[None]) ** 2).sum(-1)
    labels = np.zeros(drawn.shape, dtype=np.uint8)
    labels[drawn] = distance.argmin(1).astype(np.uint8) + 1
    return labels


def mask_file(path, shape: tuple[int, int], name: str = "the mask") -> np.ndarray:
    """``H x W`` uint8 labels of an uploaded mask (palette PNG: ids; else 0/1), checked against ``shape``."""
    try:
        labels = read_label_file(path)
    except DataError as exc:
        raise DemoError(f"Cannot read {name}: {exc}") from exc
    if labels.shape != tuple(shape):
        raise DemoError(f"{name} ({Path(path).name}) is {labels.shape[1]} x {labels.shape[0]} pixels but its image is "
                        f"{shape[1]} x {shape[0]}; upload a mask of the image's size")
    return labels


# ----------------------------------------------------------------------------------------- videos
def open_video(path, max_frames: int) -> Video:
    """An uploaded video file or zip of frame images, checked now (type, readable, at least one frame) and
    read lazily (:meth:`Video.iter_frames`), so a long video is never held in memory."""
    if path is None:
        raise DemoError("Upload a video first: an .mp4 (or .mov, .avi, .mkv, .webm, .gif) file or a .zip of frames.")
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in ZIP_SUFFIXES:
        video = Video(path, max_frames, _zip_members(path))
    elif suffix in VIDEO_SUFFIXES:
        video = Video(path, max_frames)
    else:
        raise DemoError(f"{path.name}: not a video ({suffix or 'no extension'}); upload an .mp4 (or "
                        f"{', '.join(VIDEO_SUFFIXES[1:])}) file or a .zip of frame images")
    video.first_frame()  # unreadable or empty: say so now
    return video


class Video:
    """Frames of an uploaded video (see :func:`open_video`): ``H x W x 3`` uint8, all one size, at most
    ``max_frames``; ``members`` are a zip's frame images in order (``None`` for a video file)."""

    def __init__(self, path: Path, max_frames: int, members: list[str] | None = None) -> None:
        self.path, self.max_frames, self.members = Path(path), max_frames, members
        self.truncated = members is not None and len(members) > max_frames  # video files: known once read

    @property
    def total(self) -> int | None:
        """How many frames will be tracked, when known beforehand (zips; video files: their metadata)."""
        if self.members is not None:
            return min(len(self.members), self.max_frames)
        try:
            import imageio.v3 as iio

            meta = iio.immeta(self.path)
            return min(self.max_frames, max(1, round(float(meta["fps"]) * float(meta["duration"]))))
        except Exception:  # noqa: BLE001 - an unknown count only means a progress bar without a total
            return None

    def first_frame(self) -> np.ndarray:
        for _, frame in self.iter_frames(limit=1):
            return frame
        raise DemoError(f"{self.path.name} holds no frames")

    def iter_frames(self, limit: int | None = None) -> Iterator[tuple[str, np.ndarray]]:
        """``(unique name, frame)`` in order, up to ``limit`` (default ``max_frames``); sets ``truncated``
        when a video file has more."""
        limit = self.max_frames if limit is None else limit
        frames = self._zip_frames() if self.members is not None else self._file_frames()
        first = None
        for i, (name, frame) in enumerate(frames):
            if i == limit:
                self.truncated = self.truncated or limit == self.max_frames
                return
            first = frame.shape if first is None else first
            if frame.shape != first:
                raise DemoError(f"{self.path.name}: frame {name} is {frame.shape[1]} x {frame.shape[0]} but the first "
                                f"frame is {first[1]} x {first[0]}; all frames must have one size")
            yield name, frame

    def _file_frames(self) -> Iterator[tuple[str, np.ndarray]]:
        try:
            yield from open_frames(self.path)
        except DataError as exc:
            raise DemoError(f"Cannot read the video {self.path.name}: {exc}") from exc

    def _zip_frames(self) -> Iterator[tuple[str, np.ndarray]]:
        stems = [PurePosixPath(m).stem for m in self.members]
        unique = len(set(stems)) == len(stems)
        with zipfile.ZipFile(self.path) as zf:
            for i, member in enumerate(self.members):
                try:
                    with Image.open(io.BytesIO(zf.read(member))) as im:
                        frame = np.asarray(im.convert("RGB"), dtype=np.uint8)
                except (OSError, SyntaxError, ValueError, zipfile.BadZipFile) as exc:
                    raise DemoError(f"{self.path.name}: cannot decode {member}: {exc}") from exc
                yield (stems[i] if unique else f"{i:05d}"), frame


def _zip_members(path: Path) -> list[str]:
    """The zip's frame images in frame order (hidden files and ``__MACOSX`` skipped)."""
    try:
        with zipfile.ZipFile(path) as zf:
            members = [m.filename for m in zf.infolist() if not m.is_dir() and _is_frame(PurePosixPath(m.filename))]
    except (zipfile.BadZipFile, OSError) as exc:
        raise DemoError(f"{path.name} is not a readable zip file ({exc})") from exc
    if not members:
        raise DemoError(f"{path.name} holds no frame images ({', '.join(IMAGE_SUFFIXES)})")
    return sorted(members, key=lambda m: frame_sort_key(PurePosixPath(m).name))


def _is_frame(name: PurePosixPath) -> bool:
    return (name.suffix.lower() in IMAGE_SUFFIXES and not name.name.startswith(".")
            and "__MACOSX" not in name.parts)

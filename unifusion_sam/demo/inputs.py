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
import re
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image, ImageOps

from ..data.frames import IMAGE_SUFFIXES, open_frames, read_label_file
from ..data.io import DataError
from ..data.readers._common import frame_sort_key
from ..inference.inputs import to_rgb_array
from .archive import ArchiveError, check_sizes, read_member, zip_entries
from .config import MB, DemoConfig

VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".gif")
ZIP_SUFFIXES = (".zip",)
ALPHA_DRAWN = 128  # a layer pixel with at least this alpha counts as painted
# what Pillow raises for a file that is not a readable image (a decompression bomb included)
IMAGE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError)


class DemoError(ValueError):
    """A bad input; its message is shown on the page as it is."""


# ----------------------------------------------------------------------------------------- limits
def check_upload(path, config: DemoConfig, what: str = "the upload") -> Path | None:
    """``path`` (``None`` passes) when the file exists and is at most ``max_upload_mb``; ``DemoError`` otherwise."""
    if path is None:
        return None
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise DemoError(f"Cannot read {what} ({path.name}): {exc.strerror or exc}") from exc
    if size > config.max_upload_bytes:
        raise DemoError(f"{what} ({path.name}) is {size / MB:.1f} MB; the demo takes files of at most "
                        f"{config.max_upload_mb:g} MB (max_upload_mb)")
    return path


def check_pixels(width: int, height: int, config: DemoConfig, what: str) -> None:
    """``DemoError`` when a ``width x height`` image is larger than ``max_image_pixels``."""
    if width * height > config.max_image_pixels:
        raise DemoError(f"{what} is {width} x {height} = {width * height:,} pixels; the demo takes images of at "
                        f"most {config.max_image_pixels:,} pixels (max_image_pixels): downscale it first")


def read_image(value, config: DemoConfig, name: str = "the image"):
    """An uploaded image as ``H x W x 3`` uint8 RGB, within the limits: a file path is checked (size, then the
    dimensions its header declares) before it is decoded; an array (or editor value) is checked as it is.
    ``None`` stays ``None`` (the handlers say what is missing)."""
    if value is None:
        return None
    if isinstance(value, Mapping):  # an editor value: Gradio decoded it (under Pillow's pixel limit)
        return value if value.get("background") is None else check_array(value, config, name)
    if isinstance(value, np.ndarray):
        return check_array(value, config, name)
    path = check_upload(value, config, name)
    try:
        with Image.open(path) as im:
            check_pixels(im.width, im.height, config, f"{name} ({path.name})")
            return np.asarray(ImageOps.exif_transpose(im).convert("RGB"), dtype=np.uint8).copy()
    except DemoError:
        raise
    except IMAGE_ERRORS as exc:
        raise DemoError(unreadable(f"{name} ({path.name})", exc, config)) from exc


def unreadable(what: str, exc: BaseException, config: DemoConfig | None = None) -> str:
    """The page's message for an image Pillow cannot open: a decompression bomb (Pillow refuses images
    over twice its ``MAX_IMAGE_PIXELS`` when it opens them) says so with the limits, anything else is
    "not an image" (Pillow's own message names a temporary path, not the upload)."""
    if isinstance(exc, Image.DecompressionBombError):
        found = re.search(r"\((\d+) pixels\)", str(exc))
        size = f"{int(found.group(1)):,} pixels" if found else f"too large ({exc})"
        if config is None:
            return f"{what} is {size}: too large to be read"
        return f"{what} is {size}; the demo takes images of at most {config.max_image_pixels:,} pixels (max_image_pixels)"
    if isinstance(exc, Image.UnidentifiedImageError):
        return f"Cannot read {what}: not an image this demo can decode (PNG, JPEG, BMP, WebP, TIFF, GIF)"
    return f"Cannot read {what}: not an image this demo can decode ({exc})"


def check_array(value, config: DemoConfig, name: str):
    """``value`` (an array or an editor value) when its image is within ``max_image_pixels``."""
    array = np.asarray(value.get("background") if isinstance(value, Mapping) else value)
    if array.ndim >= 2:
        check_pixels(array.shape[1], array.shape[0], config, name)
    return value


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
    """``H x W`` uint8 labels of an uploaded mask (palette PNG: ids; else 0/1), checked against ``shape``
    from its header before it is decoded (so a mask can never be larger than its image)."""
    path = Path(path)
    try:
        with Image.open(path) as im:
            width, height = im.size
    except IMAGE_ERRORS as exc:
        raise DemoError(unreadable(f"{name} ({path.name})", exc)) from exc
    if (height, width) != tuple(shape):
        raise DemoError(f"{name} ({path.name}) is {width} x {height} pixels but its image is "
                        f"{shape[1]} x {shape[0]}; upload a mask of the image's size")
    try:
        labels = read_label_file(path)
    except DataError as exc:
        raise DemoError(f"Cannot read {name}: {exc}") from exc
    if labels.shape != tuple(shape):
        raise DemoError(f"{name} ({path.name}) is {labels.shape[1]} x {labels.shape[0]} pixels but its image is "
                        f"{shape[1]} x {shape[0]}; upload a mask of the image's size")
    return labels


# ----------------------------------------------------------------------------------------- videos
def open_video(path, max_frames: int | None = None, config: DemoConfig | None = None) -> Video:
    """An uploaded video file or zip of frame images, checked now (type, size, readable, a zip's members and
    sizes, the first frame's pixels) and read lazily (:meth:`Video.iter_frames`), so a long video is never
    held in memory. At most ``max_frames`` frames (default ``config.max_frames``) are read: a longer video
    is cut there (``Video.truncated``), not refused."""
    config = config or DemoConfig()
    if path is None:
        raise DemoError("Upload a video first: an .mp4 (or .mov, .avi, .mkv, .webm, .gif) file or a .zip of frames.")
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in ZIP_SUFFIXES + VIDEO_SUFFIXES:
        raise DemoError(f"{path.name}: not a video ({suffix or 'no extension'}); upload an .mp4 (or "
                        f"{', '.join(VIDEO_SUFFIXES[1:])}) file or a .zip of frame images")
    check_upload(path, config, "the video")
    max_frames = config.max_frames if max_frames is None else max_frames
    if suffix in ZIP_SUFFIXES:
        video = Video(path, max_frames, _zip_members(path, config, max_frames), config)
    else:
        video = Video(path, max_frames, config=config)
    video.first_frame()  # unreadable, empty or too large: say so now
    return video


class Video:
    """Frames of an uploaded video (see :func:`open_video`): ``H x W x 3`` uint8, all one size, at most
    ``max_frames``; ``members`` are a zip's frame images in order (``None`` for a video file)."""

    def __init__(self, path: Path, max_frames: int, members: list[zipfile.ZipInfo] | None = None,
                 config: DemoConfig | None = None) -> None:
        self.path, self.max_frames, self.members = Path(path), max_frames, members
        self.config = config or DemoConfig()
        self.truncated = False  # set once more frames than max_frames are seen (zips: known now)
        if members is not None:
            self.truncated = len(members) > max_frames
            self.members = members[:max_frames]

    @property
    def total(self) -> int | None:
        """How many frames will be tracked, when known beforehand (zips; video files: their metadata)."""
        if self.members is not None:
            return len(self.members)
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
            if first is None:
                check_pixels(frame.shape[1], frame.shape[0], self.config, f"{self.path.name}: frame {name}")
                first = frame.shape
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
        stems = [PurePosixPath(m.filename).stem for m in self.members]
        unique = len(set(stems)) == len(stems)
        budget = self.config.max_unzipped_bytes  # what the frames may expand to, counted as they are read
        try:
            with zipfile.ZipFile(self.path) as zf:
                for i, member in enumerate(self.members):
                    data = read_member(zf, member, self.config, budget)
                    budget -= len(data)
                    yield (stems[i] if unique else f"{i:05d}"), self._decode(member.filename, data)
        except ArchiveError as exc:
            raise DemoError(str(exc)) from exc
        except (zipfile.BadZipFile, OSError) as exc:
            raise DemoError(f"{self.path.name} is not a readable zip file ({exc})") from exc

    def _decode(self, member: str, data: bytes) -> np.ndarray:
        """A zip member's image, its declared size checked before it is decoded."""
        try:
            with Image.open(io.BytesIO(data)) as im:
                check_pixels(im.width, im.height, self.config, f"{self.path.name}: {member}")
                return np.asarray(im.convert("RGB"), dtype=np.uint8)
        except DemoError:
            raise
        except Image.DecompressionBombError as exc:
            raise DemoError(unreadable(f"{self.path.name}: {member}", exc, self.config)) from exc
        except IMAGE_ERRORS as exc:
            raise DemoError(f"{self.path.name}: cannot decode {member}: {exc}") from exc


def _zip_members(path: Path, config: DemoConfig, max_frames: int) -> list[zipfile.ZipInfo]:
    """The zip's frame images in frame order (hidden files and ``__MACOSX`` skipped), every entry checked
    (:func:`.archive.zip_entries`) and the first ``max_frames`` frames' declared sizes too."""
    try:
        infos = zip_entries(path, config)
        members = [m for m in infos if not m.is_dir() and _is_frame(PurePosixPath(m.filename.replace("\\", "/")))]
        if not members:
            raise DemoError(f"{path.name} holds no frame images ({', '.join(IMAGE_SUFFIXES)})")
        members.sort(key=lambda m: frame_sort_key(PurePosixPath(m.filename).name))
        check_sizes(path, members[:max_frames], config)
    except ArchiveError as exc:
        raise DemoError(str(exc)) from exc
    return members


def _is_frame(name: PurePosixPath) -> bool:
    return (name.suffix.lower() in IMAGE_SUFFIXES and not name.name.startswith(".")
            and "__MACOSX" not in name.parts)

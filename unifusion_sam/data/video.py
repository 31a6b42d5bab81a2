"""Reading and writing video as a stream, one frame at a time, through the ffmpeg that ``imageio-ffmpeg`` ships
(``pip install "unifusion-sam[video]"``): memory stays flat however long the video.

- :func:`open_video_source` reads a video file, a camera (``/dev/video0``, or ``camera:0``) or a stream URL
  (``rtsp://``, ``http(s)://`` ...) that ffmpeg can open, or a folder of frame images; it checks the source
  now (a clear :class:`~.io.DataError` naming it) and yields ``(name, H x W x 3 uint8)`` lazily.
- :class:`Mp4Writer` encodes frames as they come into a *fragmented* MP4 (H.264, yuv420p): every fragment is
  playable on its own, so a run that is interrupted, or killed, leaves a playable prefix.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .frames import IMAGE_SUFFIXES, open_frames
from .io import DataError

VIDEO_HINT = 'streaming video needs imageio-ffmpeg: pip install "unifusion-sam[video]"'
_URL = re.compile(r"^[a-z][a-z0-9+.-]*://", re.I)
_CAMERA = re.compile(r"^(?:camera:(\d+)|/dev/video\d+)$")


@dataclass
class VideoSource:
    """An opened source: ``frames`` yields ``(name, frame)``; ``fps`` and ``num_frames`` when ffmpeg knows them
    (a camera or a live stream has no frame count); ``kind`` is ``"folder"``, ``"file"``, ``"camera"`` or
    ``"stream"``."""

    frames: Iterator[tuple[str, np.ndarray]]
    kind: str
    fps: float | None = None
    num_frames: int | None = None


def _ffmpeg():
    try:
        import imageio_ffmpeg
    except ImportError:
        raise DataError(VIDEO_HINT) from None
    return imageio_ffmpeg


def open_video_source(source: str | os.PathLike) -> VideoSource:
    """Open ``source`` (see the module docstring); a source that cannot be opened is a ``DataError`` naming it."""
    text = str(source)
    path = Path(text).expanduser()
    if path.is_dir():
        count = sum(1 for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        return VideoSource(open_frames(path), "folder", num_frames=count)
    camera = _CAMERA.match(text)
    if camera:
        device = f"/dev/video{camera.group(1)}" if camera.group(1) is not None else text
        kind, input_params = "camera", ["-f", "v4l2"]
    elif _URL.match(text):
        device, kind, input_params = text, "stream", None
    else:
        if not path.is_file():
            raise DataError(f"video not found: {source} (give a video file, a folder of frames, a camera such as "
                            "/dev/video0 or camera:0, or a stream URL)")
        device, kind, input_params = str(path), "file", None
    reader = _ffmpeg().read_frames(device, input_params=input_params)
    try:
        meta = next(reader)
    except (OSError, RuntimeError, StopIteration) as exc:
        reader.close()
        raise DataError(f"cannot open the video source {source}: {str(exc).strip().splitlines()[-1] if str(exc) else exc}"
                        ) from exc
    width, height = (int(v) for v in meta["size"])
    fps = float(meta["fps"]) if meta.get("fps") else None
    count = None
    if kind == "file" and meta.get("duration") and fps:
        count = max(1, round(float(meta["duration"]) * fps))
    return VideoSource(_frames(reader, width, height, source), kind, fps, count)


def _frames(reader, width: int, height: int, source) -> Iterator[tuple[str, np.ndarray]]:
    try:
        for i, raw in enumerate(reader):
            frame = np.frombuffer(raw, np.uint8)
            if frame.size != width * height * 3:
                raise DataError(f"{source}: frame {i} has {frame.size} bytes, not {width} x {height} x 3")
            yield f"{i:05d}", frame.reshape(height, width, 3)
    except RuntimeError as exc:  # ffmpeg failed mid-stream
        raise DataError(f"cannot read the video source {source}: {exc}") from exc
    finally:
        reader.close()


class Mp4Writer:
    """Frames ``H x W x 3`` uint8 -> a fragmented H.264 MP4 at ``path``, encoded as they are written (ffmpeg runs
    beside the process; nothing is kept in memory). Odd sizes are padded by one black row / column (yuv420p
    needs even ones). Use as a context manager, or call :meth:`close`; what was written before an interruption
    stays playable."""

    def __init__(self, path: str | os.PathLike, fps: float = 8.0) -> None:
        if not fps or fps <= 0:
            raise ValueError(f"fps must be a positive number, got {fps!r}")
        self.path, self.fps = Path(path), float(fps)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._writer = None
        self._size: tuple[int, int] | None = None
        self.frames = 0

    def write(self, frame: np.ndarray) -> None:
        frame = np.asarray(frame, np.uint8)
        h, w = frame.shape[:2]
        if self._writer is None:
            self._size = (h, w)
            padded = (w + w % 2, h + h % 2)
            self._writer = _ffmpeg().write_frames(
                str(self.path), padded, fps=self.fps, codec="libx264", pix_fmt_out="yuv420p", macro_block_size=1,
                output_params=["-movflags", "frag_keyframe+empty_moov+default_base_moof", "-g", str(max(1, round(self.fps)))],
                ffmpeg_log_level="error")
            self._writer.send(None)  # start ffmpeg
        if (h, w) != self._size:
            raise ValueError(f"frame {self.frames} is {w} x {h} but the video's frames are {self._size[1]} x {self._size[0]}")
        if h % 2 or w % 2:
            frame = np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)))
        self._writer.send(np.ascontiguousarray(frame))
        self.frames += 1

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def __enter__(self) -> Mp4Writer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

"""The Video tab's work as a job that can pause: track up to a frame, show it, take clicks that correct an object
there (``VideoSession.correct``), and go on; the corrections carry on through the following frames.

A :class:`VideoJob` holds the video's frame iterator, the tracking session and what is written so far (one
palette PNG per frame, the GIF's thumbnails); nothing here knows about Gradio (:mod:`.app` keeps the job in the
page's session state as a key into :class:`PausedJobs`, which bounds how many paused jobs the server keeps).
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import visualize
from ..data.io import save_palette_png
from ..data.writers import DavisWriter, make_submission_zip
from ..families import family_of_model
from ..inference import VideoSession
from .config import DemoConfig
from .inputs import DemoError, Video


@dataclass
class VideoJob:
    """A tracking run in progress: ``done`` frames tracked of ``total`` (``None`` when unknown), ``frame`` /
    ``result`` the last one (what a pause shows), ``finished`` once the video is through."""

    session: VideoSession
    frames: Iterator[tuple[str, np.ndarray]]
    folder: Path
    writer: DavisWriter
    caption: str | None
    description: str
    total: int | None
    truncated: Callable[[], bool]
    config: DemoConfig
    done: int = 0
    name: str | None = None
    frame: np.ndarray | None = None
    result: object = None
    thumbs: list = field(default_factory=list)
    clicks: dict[int, list[tuple[float, float, int]]] = field(default_factory=dict)
    finished: bool = False

    def overlay(self) -> np.ndarray:
        """The last tracked frame with its masks (and the clicks of the current corrections)."""
        picture = visualize.captioned_overlay(self.frame, np.asarray(self.result.label_map, np.uint8), self.caption)
        for points in self.clicks.values():
            picture = visualize.draw_points(picture, np.asarray([p[:2] for p in points]), [p[2] for p in points])
        return picture


def start_video_job(model, video: Video, *, masks: dict[int, np.ndarray] | None, text: str | None, folder: Path,
                    config: DemoConfig) -> VideoJob:
    """A job over ``video`` following the first-frame ``masks`` (VOS) or the object ``text`` describes (RVOS)."""
    session = VideoSession(model, sigma=0.3 if text is not None else 0.4, max_short_side=config.max_short_side or None)
    try:
        if text is not None:
            session.add_text_object(1, text)
        for obj_id, mask in (masks or {}).items():
            session.add_object(obj_id, mask)
    except (TypeError, ValueError) as exc:
        raise DemoError(f"Cannot track this video: {exc}") from exc
    what = f"{len(masks)} object{'s' * (len(masks) > 1)} from the first-frame mask" if masks else f"\"{text}\""
    return VideoJob(session, video.iter_frames(), folder, DavisWriter(folder / "palette"), text, what, video.total,
                    lambda: video.truncated, config)


class PausedJobs:
    """The paused jobs of every page, by key: at most ``capacity`` (a new one closes the oldest), each for at most
    ``ttl_s`` seconds after it was stored; a closed job's frames are released (its zip is closed)."""

    def __init__(self, capacity: int, ttl_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.capacity, self.ttl_s, self.clock = capacity, ttl_s, clock
        self.jobs: OrderedDict[str, tuple[float, VideoJob]] = OrderedDict()
        self.lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.jobs)

    def put(self, job: VideoJob, key: str | None = None) -> str:
        """Keep ``job`` (under ``key`` again when it was stored before, else a new key); its key."""
        with self.lock:
            if key in self.jobs:
                self.jobs.move_to_end(key)
                return key
            self._expire()
            while len(self.jobs) >= self.capacity:
                _close(self.jobs.popitem(last=False)[1][1])
            key = secrets.token_hex(8)
            self.jobs[key] = (self.clock(), job)
            return key

    def get(self, key: str | None) -> VideoJob:
        """The job under ``key``; ``DemoError`` when nothing is paused or the job was closed."""
        with self.lock:
            self._expire()
            if key is None:
                raise DemoError("Nothing is paused: press Track first (with a frame to pause at).")
            if key not in self.jobs:
                raise DemoError(f"This paused video was closed: the demo keeps at most {self.capacity} paused videos, "
                                f"each for {self.ttl_s / 60:g} minutes (max_paused_videos, keep_minutes). Press Track "
                                "again.")
            return self.jobs[key][1]

    def drop(self, key: str | None) -> None:
        with self.lock:
            item = self.jobs.pop(key, None)
        if item is not None:
            _close(item[1])

    def _expire(self) -> None:
        now = self.clock()
        for key in [k for k, (made, _) in self.jobs.items() if now - made > self.ttl_s]:
            _close(self.jobs.pop(key)[1])


def _close(job: VideoJob) -> None:
    close = getattr(job.frames, "close", None)
    if close is not None:
        close()


def pause_frame(text) -> int | None:
    """The frame to pause at, from the page's text box: ``None`` (empty: to the end) or an int >= 0."""
    text = "" if text is None else str(text).strip()
    if not text:
        return None
    try:
        value = int(float(text))
    except ValueError:
        raise DemoError(f"the frame to pause at must be a frame number, got {text!r}") from None
    if value < 0:
        raise DemoError(f"the frame to pause at must be 0 or more, got {value}")
    return value


def advance(job: VideoJob, until: int | None = None,
            progress: Callable[[int, int | None], None] | None = None) -> VideoJob:
    """Track frames until frame ``until`` (0-based, inclusive) is done, or to the end of the video."""
    job.clicks.clear()
    if progress is not None:
        progress(job.done, job.total)
    try:
        while not job.finished and (until is None or job.done <= until):
            item = next(job.frames, None)
            if item is None:
                job.finished = True
                break
            job.name, job.frame = item
            job.result = job.session.step(job.frame)
            _record(job)
            job.done += 1
            if progress is not None:
                progress(job.done, max(job.total, job.done) if job.total else None)
    except DemoError:  # a frame of another size, an undecodable frame: already said for the page
        raise
    except (TypeError, ValueError) as exc:
        raise DemoError(f"Cannot track this video: {exc}") from exc
    if job.done == 0 and job.finished:
        raise DemoError("the video holds no frames")
    return job


def correct(job: VideoJob, obj_id: int, points: Sequence[tuple[float, float, int]]) -> VideoJob:
    """Correct object ``obj_id`` on the paused frame from clicks ``(x, y, label)`` (1 = the object, 0 = not):
    it is decoded again there with every click so far and re-anchored on that frame (SAM family only)."""
    family = family_of_model(job.session.model)
    if not family.supports_prompts:
        raise DemoError(f"Clicks are SAM prompts: the {family.title} served here cannot take them; it corrects "
                        "nothing on a paused frame.")
    if job.result is None:
        raise DemoError("Track up to a frame first, then click on it to correct an object.")
    if obj_id not in job.session.objects:
        raise DemoError(f"There is no object {obj_id} in this video (objects: {sorted(job.session.objects)}).")
    job.clicks.setdefault(obj_id, []).extend(points)
    clicks = job.clicks[obj_id]
    try:
        job.result = job.session.correct(obj_id, points=[c[:2] for c in clicks], labels=[c[2] for c in clicks])
    except (TypeError, ValueError) as exc:
        raise DemoError(f"Cannot correct object {obj_id}: {exc}") from exc
    job.thumbs.pop()
    _record(job, overwrite=True)
    return job


def finish(job: VideoJob) -> tuple[Path, Path, str]:
    """Once the video is through: the GIF, the zip of palette PNGs and a message."""
    gif = visualize.save_gif(job.folder / "track.gif", job.thumbs, fps=job.config.gif_fps)
    archive = make_submission_zip(job.folder / "palette", job.folder / "masks.zip", "davis")
    note = f" (only the first {job.config.max_frames} frames)" if job.truncated() else ""
    return gif, archive, f"tracked {job.description} through {job.done} frames{note}"


def _record(job: VideoJob, overwrite: bool = False) -> None:
    if overwrite:  # the corrected frame replaces its PNG (the writer refuses a frame name twice)
        save_palette_png(job.writer.path("masks", job.name), job.result.label_map)
    else:
        job.writer.write_frame("masks", job.name, job.result.label_map)
    job.thumbs.append(visualize.thumbnail(job.overlay()))

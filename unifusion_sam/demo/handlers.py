"""The demo's work, one pure function per tab: a model and numpy / PIL inputs in, pictures and files out.

Nothing here knows about Gradio; :mod:`.app` turns page values into these arguments (with
:mod:`.inputs`) and :class:`~.inputs.DemoError` into a message on the page. Images are ``H x W x 3``
uint8 RGB, masks ``H x W`` bool, label maps ``H x W`` uint8 object ids. Models are used only through
``predict`` and ``track`` (both families); the predictor caches image embeddings by content, so
clicking points on one image encodes it once. Files are written to a fresh folder under ``out_dir``
per request.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .. import visualize
from ..families import family_of_model
from .config import DemoConfig
from .inputs import DemoError, Video, image_array, mask_file
from .video import VideoJob, advance, finish, start_video_job

POINT_LABELS = {"positive": 1, "negative": 0}
NO_SENTENCE = "Type a sentence that describes the object, e.g. \"the red circle on the left\"."


@dataclass
class ImageResult:
    """``overlay`` ``H x W x 3`` uint8 (the mask tinted and outlined on the image), ``mask`` ``H x W`` bool,
    ``score`` (the model's object score), ``mask_path`` (the mask as a 0/255 PNG) and ``message``."""

    overlay: np.ndarray
    mask: np.ndarray
    score: float
    mask_path: Path
    message: str


@dataclass
class VideoResult:
    """``gif_path`` (the tracked overlays, thumbnails), ``zip_path`` (``masks/<frame>.png`` palette PNGs,
    ids = objects), ``frames`` (how many were tracked) and ``message``."""

    gif_path: Path
    zip_path: Path
    frames: int
    message: str


def sentence_or_none(text: str | None) -> str | None:
    """The sentence with surrounding blanks removed, or ``None`` when there is none."""
    if text is not None and not isinstance(text, str):
        raise DemoError(f"a sentence must be text, got {type(text).__name__}")
    text = (text or "").strip()
    return text or None


RESULT_PREFIXES = ("sentence-", "examples-", "points-", "video-")


def _fresh_dir(out_dir: str | Path, prefix: str) -> Path:
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=prefix, dir=out_dir))


def prune_results(out_dir: str | Path, max_age_s: float, now: float | None = None) -> int:
    """Delete the request folders (``sentence-*``, ``video-*``, ...) under ``out_dir`` last changed more than
    ``max_age_s`` seconds ago; how many were deleted. Nothing else in ``out_dir`` is touched."""
    now = time.time() if now is None else now
    removed = 0
    for child in Path(out_dir).glob("*"):
        try:
            old = child.is_dir() and child.name.startswith(RESULT_PREFIXES) and now - child.stat().st_mtime > max_age_s
        except OSError:
            continue
        if old:
            shutil.rmtree(child, ignore_errors=True)
            removed += 1
    return removed


def _predict(model, image: np.ndarray, **kwargs):
    try:
        return model.predict(image, **kwargs)
    except (TypeError, ValueError) as exc:  # the model's own input checks name the offending value
        raise DemoError(str(exc)) from exc


def _result(rgb: np.ndarray, prediction, picture: np.ndarray, out_dir: str | Path, prefix: str) -> ImageResult:
    mask = np.asarray(prediction.mask, dtype=bool)
    path = _fresh_dir(out_dir, prefix) / "mask.png"
    visualize.save_png(Image.fromarray(mask.astype(np.uint8) * 255, mode="L"), path)
    share = 100.0 * mask.mean()
    found = f"{int(mask.sum())} pixels ({share:.1f}% of the image)" if mask.any() else "an empty mask (nothing found)"
    return ImageResult(picture, mask, float(prediction.score), path, f"score {prediction.score:.3f}: {found}")


# ----------------------------------------------------------------------------------------- images
def segment_sentence(model, image, sentence: str | None, out_dir: str | Path) -> ImageResult:
    """Referring segmentation: the object ``sentence`` describes in ``image``."""
    rgb = image_array(image, "an image")
    text = sentence_or_none(sentence)
    if text is None:
        raise DemoError(NO_SENTENCE)
    prediction = _predict(model, rgb, text=text)
    picture = visualize.draw_caption(visualize.overlay_mask(rgb, prediction.mask), text)
    return _result(rgb, prediction, picture, out_dir, "sentence-")


def example_pair(image, drawn: np.ndarray | None, mask_path, k: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Example ``k`` (1-based) as ``(image, H x W bool mask)``; an uploaded mask file wins over a drawn mask.
    ``None`` for an empty slot; ``DemoError`` for an image without a mask or a mask without an image."""
    if image is None:
        if mask_path is not None:
            raise DemoError(f"example {k} has a mask but no image: upload the example image too")
        return None
    rgb = image_array(image, f"example {k}")
    if mask_path is not None:
        mask = mask_file(mask_path, rgb.shape[:2], f"the mask of example {k}") != 0
    else:
        mask = drawn
    if mask is None or not np.asarray(mask).any():
        raise DemoError(f"example {k} has no mask: paint over the object on the example image, or upload its mask")
    return rgb, np.asarray(mask, dtype=bool)


def segment_examples(model, query, examples: Sequence[tuple[np.ndarray, np.ndarray] | None],
                     out_dir: str | Path) -> ImageResult:
    """Few-shot segmentation: in ``query``, the kind of object the K ``(image, mask)`` examples mark
    (``None`` entries, empty slots, are skipped)."""
    rgb = image_array(query, "a query image")
    pairs = [pair for pair in examples if pair is not None]
    if not pairs:
        raise DemoError("Add at least one example: an image with the object painted over (or its mask uploaded).")
    prediction = _predict(model, rgb, ref_images=[p[0] for p in pairs], ref_masks=[p[1] for p in pairs])
    result = _result(rgb, prediction, visualize.overlay_mask(rgb, prediction.mask), out_dir, "examples-")
    result.message = f"{len(pairs)}-shot, {result.message}"
    return result


# ----------------------------------------------------------------------------------------- points
def add_point(points: Sequence[tuple[float, float, int]] | None, x: float, y: float, kind: str) -> list:
    """``points`` with ``(x, y, label)`` appended; ``kind`` is ``"positive"`` (label 1) or ``"negative"`` (0)."""
    if kind not in POINT_LABELS:
        raise DemoError(f"a point is {' or '.join(POINT_LABELS)}, got {kind!r}")
    return [*(points or []), (float(x), float(y), POINT_LABELS[kind])]


def segment_points(model, image, points: Sequence[tuple[float, float, int]] | None, sentence: str | None,
                   out_dir: str | Path) -> ImageResult:
    """SAM-style prompts: ``(x, y, label)`` points in pixels (1 foreground, 0 background), optionally
    with a sentence. The full UniRef++ model takes no prompts: ``DemoError`` says so."""
    family = family_of_model(model)
    if not family.supports_prompts:
        raise DemoError(f"Points are SAM prompts: the {family.title} served here takes a sentence or example "
                        "masks only (use the Sentence or Examples tab).")
    rgb = image_array(image, "an image")
    text = sentence_or_none(sentence)
    points = list(points or [])
    if not points and text is None:
        raise DemoError("Click on the object to add a positive point (or type a sentence).")
    kwargs: dict = {"text": text} if text is not None else {}
    if points:
        coords = np.asarray([p[:2] for p in points], dtype=np.float64)
        kwargs.update(point_coords=coords, point_labels=np.asarray([int(p[2]) for p in points]))
    prediction = _predict(model, rgb, **kwargs)
    picture = visualize.overlay_mask(rgb, prediction.mask)
    if points:
        picture = visualize.draw_points(picture, kwargs["point_coords"], kwargs["point_labels"])
    if text is not None:
        picture = visualize.draw_caption(picture, text)
    return _result(rgb, prediction, picture, out_dir, "points-")


# ----------------------------------------------------------------------------------------- video
def first_frame_labels(video: Video, drawn: np.ndarray | None, mask_path) -> np.ndarray | None:
    """The first frame's ``H x W`` uint8 object ids: an uploaded mask file wins over the painted ones;
    ``None`` when neither marks anything."""
    shape = video.first_frame().shape[:2]
    labels = mask_file(mask_path, shape, "the first-frame mask") if mask_path is not None else drawn
    if labels is None or not np.asarray(labels).any():
        return None
    if labels.shape != shape:
        raise DemoError(f"the first-frame mask is {labels.shape[1]} x {labels.shape[0]} pixels but the video is "
                        f"{shape[1]} x {shape[0]}")
    return np.asarray(labels, dtype=np.uint8)


def start_track(model, video: Video, *, labels: np.ndarray | None, sentence: str | None, out_dir: str | Path,
                config: DemoConfig | None = None) -> VideoJob:
    """A pausable tracking job (:mod:`.video`) for the objects of the first-frame label map (VOS) or the object
    a sentence describes (RVOS); nothing is tracked yet."""
    config = config or DemoConfig()
    text = sentence_or_none(sentence)
    has_masks = labels is not None and np.asarray(labels).any()
    if has_masks and text is not None:
        raise DemoError("Give either first-frame masks or a sentence, not both: clear the drawing (and the uploaded "
                        "mask) to track by the sentence, or clear the sentence.")
    if not has_masks and text is None:
        raise DemoError("Paint the objects on the first frame (one brush colour per object), upload the first "
                        "frame's mask, or type a sentence.")
    masks = {int(i): labels == i for i in np.unique(labels) if i != 0} if has_masks else None
    return start_video_job(model, video, masks=masks, text=text, folder=_fresh_dir(out_dir, "video-"), config=config)


def track_video(model, video: Video, *, labels: np.ndarray | None, sentence: str | None, out_dir: str | Path,
                config: DemoConfig | None = None,
                progress: Callable[[int, int | None], None] | None = None) -> VideoResult:
    """Track the objects of the first-frame label map (VOS) or the object a sentence describes (RVOS)
    through ``video``, one frame in memory at a time; ``progress(done, total or None)`` after every frame."""
    job = advance(start_track(model, video, labels=labels, sentence=sentence, out_dir=out_dir, config=config),
                  None, progress)
    gif, archive, message = finish(job)
    return VideoResult(gif, archive, job.done, message)

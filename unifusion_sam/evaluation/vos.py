"""Running a model over a semi-supervised VOS video reader and writing the results in the official layout.

One video at a time: the objects' masks are taken from the annotations where each object first
appears (the first frame for DAVIS; later frames for objects that join late in YouTube-VOS / LVOS),
the model tracks them online (:meth:`~unifusion_sam.inference.mixin.ReferenceInferenceMixin.track`), and every frame's
label map is written as a palette PNG ``<results>/<video>/<frame>.png`` with the dataset's palette
(read from the video's first annotation). Videos are split across ``accelerate`` processes with
:func:`~unifusion_sam.evaluation.distributed.share`; each process writes its own videos' PNGs and
may score them (per-object J / F), and the main process gathers the :class:`VideoOutcome` s.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..data.io import DataError, davis_palette, load_label_map
from ..data.readers import load_video_annotation, load_video_frame
from ..data.types import VideoRecord
from ..data.writers import DavisWriter, read_palette
from ..metrics import ObjectScores, VOSMeter
from ..metrics.davis_scoring import ground_truth_frames, score_davis_video
from .distributed import Gather, default_state, share


@dataclass
class VideoOutcome:
    """What one process reports about one video: frames run, files written, and per-object scores
    (``scores[group]``; one group ``"davis"`` for VOS, ``"anno_<k>"`` for Ref-DAVIS17) when scored locally."""

    video: str
    num_frames: int
    num_written: int
    scores: dict[str, list[ObjectScores]] = field(default_factory=dict)


def video_palette(record: VideoRecord) -> np.ndarray:
    """The palette of the video's first annotation PNG (the dataset's palette), else the DAVIS palette."""
    for index in sorted(record.annotations):
        ann = record.annotations[index]
        if isinstance(ann, (str, os.PathLike)):
            try:
                return read_palette(ann)
            except DataError:
                break
    return davis_palette()


def given_masks(record: VideoRecord) -> dict[int, dict[int, np.ndarray]]:
    """``{frame index: {object id: H x W bool}}``: each object's mask on the frame where it first appears."""
    given: dict[int, dict[int, np.ndarray]] = {}
    labels: dict[int, np.ndarray] = {}
    for obj, index in sorted(record.first_frame.items()):
        if index not in labels:
            labels[index] = load_video_annotation(record, index)
        mask = labels[index] == obj
        if not mask.any():
            raise DataError(f"video {record.name!r}: object {obj} is empty in the annotation of frame "
                            f"{record.frame_names[index]} ({record.annotations[index]})")
        given.setdefault(index, {})[obj] = mask
    if not given:
        raise DataError(f"video {record.name!r} has no object to track (no first-frame annotation)")
    return given


def track_video(model, record: VideoRecord, *, sigma: float | str, max_short_side: int | None) -> Iterator:
    """Track the record's objects; yields one :class:`~unifusion_sam.inference.session.FrameResult` per frame."""
    frames = (load_video_frame(record, i) for i in range(len(record)))
    return model.track(frames, new_objects=given_masks(record), sigma=sigma, max_short_side=max_short_side)


def write_vos_video(model, record: VideoRecord, results: str | os.PathLike, *, sigma: float | str,
                    max_short_side: int | None, keep_frames: set[str] | None = None) -> int:
    """Track one video and write ``<results>/<video>/<frame>.png``; ``keep_frames`` limits the frames
    written (e.g. YouTube-VOS's evaluated frames when running on all frames). Returns the count written."""
    writer = DavisWriter(results, video_palette(record))
    written = 0
    for result in track_video(model, record, sigma=sigma, max_short_side=max_short_side):
        name = record.frame_names[result.index]
        if keep_frames is None or name in keep_frames:
            writer.write_frame(record.name, name, result.label_map)
            written += 1
    return written


def score_davis_layout(root: str | os.PathLike, video: str, results: str | os.PathLike,
                       resolution: str = "480p") -> list[ObjectScores]:
    """DAVIS-2017 semi-supervised per-object scores of one video's result PNGs, read as the official tool does."""
    meter = VOSMeter(drop_first_last=False)
    score_davis_video(meter, video, ground_truth_frames(root, video, resolution), Path(results))
    return meter.object_scores()


def score_dense_video(record: VideoRecord, results: str | os.PathLike) -> list[ObjectScores]:
    """DAVIS-protocol scores of a video whose every frame has a label map (first and last frame dropped;
    objects ``1..max(object ids)``); results read from ``<results>/<video>/<frame>.png``."""
    if len(record.annotations) != len(record):
        raise DataError(f"video {record.name!r} has {len(record.annotations)} label maps for {len(record)} frames; "
                        "local scoring needs one per frame")
    meter = VOSMeter(drop_first_last=True)
    meter.start_video(record.name, n_objects=max(record.object_ids, default=0))
    for i, name in enumerate(record.frame_names):
        path = Path(results) / record.name / f"{name}.png"
        if not path.is_file():
            raise DataError(f"missing result frame {path}")
        meter.update(record.name, load_label_map(path), load_video_annotation(record, i), frame=name)
    return meter.object_scores()


ScoreFn = Callable[[VideoRecord], list[ObjectScores]]


def run_vos(
    model,
    reader,
    results: str | os.PathLike,
    *,
    sigma: float | str,
    max_short_side: int | None = 480,
    score: ScoreFn | None = None,
    keep_eval_frames: bool = False,
    state=None,
    gather: Gather | None = None,
    progress: bool = True,
) -> list[VideoOutcome] | None:
    """Run ``model`` over every video of ``reader`` (split across processes) and write the results.

    ``score(record)`` (run on the process that wrote the video) gives its per-object scores;
    ``keep_eval_frames`` writes only ``record.meta["eval_frame_names"]``. Returns the outcomes of all
    videos, in reader order, on the main process and ``None`` on the others.
    """
    state = state or default_state()

    def one(index: int) -> VideoOutcome:
        record = reader[index]
        keep = set(record.meta["eval_frame_names"]) if keep_eval_frames and "eval_frame_names" in record.meta else None
        written = write_vos_video(model, record, results, sigma=sigma, max_short_side=max_short_side, keep_frames=keep)
        scores = {"davis": score(record)} if score is not None else {}
        return VideoOutcome(record.name, len(record), written, scores)

    return share(range(len(reader)), state, one, gather=gather, progress=progress, desc="videos", unit="video")

"""Running a model over referring-VOS videos (Ref-YouTube-VOS, Ref-DAVIS17) and writing the results.

- Ref-YouTube-VOS: every expression is tracked on its own (the sentence is object 1 of a fresh
  session) and written as ``<results>/Annotations/<video>/<exp_id>/<frame>.png`` (0/255), the layout
  the evaluation server takes.
- Ref-DAVIS17 (ReferFormer's protocol): the expressions form four sets (annotator 1 / 2 x first-frame /
  full-video description); for each set the objects of a video are tracked together from their
  sentences (one session, soft aggregation), and the label maps are written as palette PNGs
  ``<results>/anno_<k>/<video>/<frame>.png``. Each set is scored with the DAVIS unsupervised
  protocol against ``Annotations_unsupervised``; the benchmark number is the mean over the sets.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..data.readers import load_video_frame
from ..data.readers._common import image_size
from ..data.types import VideoRecord
from ..data.writers import DavisWriter, RefYouTubeVOSWriter
from .davis_unsupervised import score_unsupervised_video, unsupervised_ground_truth
from .distributed import Gather, default_state, share
from .vos import VideoOutcome, video_palette

REF_DAVIS_SETS = ((1, "first"), (1, "full"), (2, "first"), (2, "full"))
"""Expression sets ``anno_0`` .. ``anno_3`` of Ref-DAVIS17 (annotator, kind), in ReferFormer's order."""


def _frames(record: VideoRecord):
    return (load_video_frame(record, i) for i in range(len(record)))


def write_ref_youtube_vos_video(model, record: VideoRecord, results: str | os.PathLike, *, sigma: float | str,
                                max_short_side: int | None) -> int:
    """Track each expression of one video and write its masks; returns the number of PNGs written."""
    writer = RefYouTubeVOSWriter(results)
    written = 0
    for exp_id, (_, sentence) in sorted(record.expressions.items(), key=lambda kv: _exp_order(kv[0])):
        for result in model.track(_frames(record), text=sentence, sigma=sigma, max_short_side=max_short_side):
            writer.write_frame(record.name, exp_id, record.frame_names[result.index], result.masks[1])
            written += 1
    return written


def _frame_size(record: VideoRecord, index: int) -> tuple[int, int]:
    frame = record.frames[index]
    return frame.shape[:2] if isinstance(frame, np.ndarray) else image_size(frame)


def _exp_order(exp_id: str) -> tuple[int, str]:
    return (int(exp_id), exp_id) if str(exp_id).isdigit() else (1 << 30, str(exp_id))


def ref_davis_sentences(record: VideoRecord) -> list[dict[int, str]]:
    """``[{object id: sentence}]`` for the four expression sets ``anno_0`` .. ``anno_3`` of a Ref-DAVIS17 video."""
    info = record.meta.get("expression_info", {})
    sets: list[dict[int, str]] = [{} for _ in REF_DAVIS_SETS]
    for exp_id, (obj, sentence) in record.expressions.items():
        meta = info.get(exp_id)
        k = REF_DAVIS_SETS.index((meta["annotator"], meta["kind"])) if meta else int(exp_id) % len(REF_DAVIS_SETS)
        sets[k][obj] = sentence
    return sets


def write_ref_davis_video(model, record: VideoRecord, results: str | os.PathLike, *, sigma: float | str,
                          max_short_side: int | None) -> int:
    """Track the four expression sets of one video; writes ``<results>/anno_<k>/<video>/<frame>.png``.

    A set without a sentence for this video gets empty label maps (its objects then score 0)."""
    palette = video_palette(record)
    written = 0
    for k, texts in enumerate(ref_davis_sentences(record)):
        writer = DavisWriter(Path(results) / f"anno_{k}", palette)
        if texts:
            maps = (r.label_map for r in model.track(_frames(record), text=texts, sigma=sigma,
                                                      max_short_side=max_short_side))
        else:
            maps = (np.zeros(_frame_size(record, i), dtype=np.uint8) for i in range(len(record)))
        written += len(writer.write_video(record.name, record.frame_names, maps))
    return written


def score_ref_davis_video(video: str, davis_root: str | os.PathLike, results: str | os.PathLike,
                          resolution: str = "480p") -> dict[str, list]:
    """Unsupervised-protocol per-object scores of each ``anno_<k>`` result set of one video."""
    gt = unsupervised_ground_truth(davis_root, video, resolution)
    return {f"anno_{k}": score_unsupervised_video(video, gt, Path(results) / f"anno_{k}" / video)
            for k in range(len(REF_DAVIS_SETS))}


def run_rvos(
    model,
    reader,
    results: str | os.PathLike,
    *,
    benchmark: str,
    sigma: float | str = "rvos",
    max_short_side: int | None = 480,
    score: bool = True,
    state=None,
    gather: Gather | None = None,
    progress: bool = True,
) -> list[VideoOutcome] | None:
    """Run ``model`` over a Ref-YouTube-VOS (``benchmark="ref_youtube_vos"``) or Ref-DAVIS17
    (``"ref_davis17"``; scored per process when ``score``) reader; outcomes on the main process."""
    if benchmark not in ("ref_youtube_vos", "ref_davis17"):
        raise ValueError(f"benchmark must be 'ref_youtube_vos' or 'ref_davis17', got {benchmark!r}")
    state = state or default_state()

    def one(index: int) -> VideoOutcome:
        record = reader[index]
        if benchmark == "ref_youtube_vos":
            written = write_ref_youtube_vos_video(model, record, results, sigma=sigma, max_short_side=max_short_side)
            return VideoOutcome(record.name, len(record), written)
        written = write_ref_davis_video(model, record, results, sigma=sigma, max_short_side=max_short_side)
        scores = {}
        if score:
            scores = score_ref_davis_video(record.name, reader.davis.root, results, reader.davis.resolution)
        return VideoOutcome(record.name, len(record), written, scores)

    return share(range(len(reader)), state, one, gather=gather, progress=progress, desc="videos", unit="video")

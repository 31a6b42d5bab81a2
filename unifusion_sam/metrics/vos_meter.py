"""Online accumulator for semi-supervised VOS scoring under the DAVIS-2017 protocol."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ._checks import as_2d
from .boundary import DEFAULT_BOUND_TH
from .davis import VOID_LABEL, ObjectScores, check_label_map, count_objects, davis_summary, frame_scores


@dataclass
class _VideoState:
    n_objects: int | None = None
    n_frames: int = 0
    j_rows: list[np.ndarray] = field(default_factory=list)
    f_rows: list[np.ndarray] = field(default_factory=list)
    pending_error: str | None = None
    objects: list[ObjectScores] | None = None  # set when the video is ended


class VOSMeter:
    """Accumulates per-frame ``H x W`` label maps of videos, frame by frame, into DAVIS statistics.

    Usage::

        meter = VOSMeter()
        for frame_pred, frame_gt in video_frames:           # in temporal order
            meter.update("bike-packing", frame_pred, frame_gt)
        meter.end_video("bike-packing")                     # optional: compute() ends open videos
        scores = meter.compute()                            # {"J&F-Mean": ..., "per_object": {...}}

    With ``drop_first_last=True`` (the DAVIS-2017 semi-supervised protocol) the first frame of each
    video is not scored and the last frame is dropped when the video ends. The objects of a video are
    ids ``1..max(first ground-truth frame)`` (void label excluded) unless ``start_video`` was given
    ``n_objects``. Objects missing from a prediction score as empty masks. A prediction id above that
    range raises ``ValueError`` naming the video and frame, but only for frames that are scored, as
    in the official toolkit.
    """

    def __init__(
        self,
        *,
        bound_th: float = DEFAULT_BOUND_TH,
        drop_first_last: bool = True,
        void_label: int | None = VOID_LABEL,
    ) -> None:
        self.bound_th = bound_th
        self.drop_first_last = drop_first_last
        self.void_label = void_label
        self._videos: dict[str, _VideoState] = {}

    def reset(self) -> None:
        """Forget all videos."""
        self._videos.clear()

    @property
    def videos(self) -> list[str]:
        """Names of the videos seen so far, in order of arrival."""
        return list(self._videos)

    def start_video(self, video: str, n_objects: int | None = None) -> None:
        """Begin ``video``; ``n_objects`` fixes its object ids to ``1..n_objects`` (default: from the first GT frame)."""
        if video in self._videos:
            raise ValueError(f"video {video!r} was already started")
        if n_objects is not None and n_objects < 0:
            raise ValueError(f"n_objects must be >= 0, got {n_objects}")
        self._videos[video] = _VideoState(n_objects=n_objects)

    def update(self, video: str, pred: np.ndarray, gt: np.ndarray, *, frame: str | None = None) -> None:
        """Add the next frame of ``video``: ``pred`` and ``gt`` are ``H x W`` integer label maps (0 = background).

        ``frame`` names the frame in error messages. Raises ``ValueError`` naming both shapes when the
        sizes differ.
        """
        state = self._videos.get(video)
        if state is None:
            self.start_video(video)
            state = self._videos[video]
        if state.objects is not None:
            raise ValueError(f"video {video!r} was already ended; frames cannot be added to it")
        where = f"video {video!r}, frame {frame if frame is not None else '#' + str(state.n_frames)}"
        pred = as_2d(pred, f"prediction ({where})")
        gt = as_2d(gt, f"ground truth ({where})")
        if pred.shape != gt.shape:
            raise ValueError(
                f"prediction and ground truth sizes differ ({where}): prediction shape {pred.shape}, "
                f"ground truth shape {gt.shape}"
            )
        check_label_map(pred, f"prediction ({where})")
        check_label_map(gt, f"ground truth ({where})")
        index = state.n_frames
        if state.n_objects is None:
            state.n_objects = count_objects(gt, self.void_label)
        state.n_frames += 1
        if self.drop_first_last and index == 0:
            return
        if state.pending_error is not None:
            raise ValueError(state.pending_error)
        j, f = frame_scores(pred, gt, state.n_objects, bound_th=self.bound_th, void_label=self.void_label)
        top = int(pred.max(initial=0))
        if top > state.n_objects:
            message = (
                f"prediction has object id {top} but the ground truth has only {state.n_objects} "
                f"object(s), ids 1..{state.n_objects} ({where})"
            )
            if not self.drop_first_last:
                raise ValueError(message)
            state.pending_error = message  # raised only if this frame turns out not to be the last
        state.j_rows.append(j)
        state.f_rows.append(f)

    def end_video(self, video: str) -> None:
        """Close ``video`` (drops its last frame under the DAVIS protocol)."""
        state = self._videos.get(video)
        if state is None:
            raise ValueError(f"unknown video {video!r}")
        if state.objects is not None:
            return
        if self.drop_first_last and state.n_frames < 3:
            raise ValueError(
                f"video {video!r} has {state.n_frames} frame(s); the DAVIS protocol drops the first and "
                "last frames, so at least 3 are needed"
            )
        if state.n_frames == 0:
            raise ValueError(f"video {video!r} has no frames")
        rows_j, rows_f = state.j_rows, state.f_rows
        if self.drop_first_last:
            rows_j, rows_f = rows_j[:-1], rows_f[:-1]
        j = np.stack(rows_j, axis=1)  # (n_objects, T)
        f = np.stack(rows_f, axis=1)
        state.objects = [ObjectScores(video, k + 1, j[k].copy(), f[k].copy()) for k in range(j.shape[0])]
        state.j_rows, state.f_rows, state.pending_error = [], [], None

    def object_scores(self) -> list[ObjectScores]:
        """Per-object per-frame J/F of all videos (ends any open video)."""
        out: list[ObjectScores] = []
        for video, state in self._videos.items():
            if state.objects is None:
                self.end_video(video)
            out.extend(state.objects or [])
        return out

    def compute(self) -> dict:
        """DAVIS statistics over all objects; see :func:`~unifusion_sam.metrics.davis_summary`."""
        summary = davis_summary(self.object_scores())
        summary["num_videos"] = len(self._videos)
        return summary

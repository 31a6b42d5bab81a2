"""Score a folder of palette-PNG results against a DAVIS-2017 root, like the official semi-supervised tool.

Layout read (as ``davis2017-evaluation``'s ``DAVIS`` / ``Results`` classes):

* video list: ``<root>/ImageSets/2017/<split>.txt`` (one name per line);
* ground truth: ``<root>/Annotations/<resolution>/<video>/*.png`` (palette indices = object ids),
  sorted by name; the first and last frames are dropped;
* results: ``<results>/<video>/<frame>.png`` for every remaining ground-truth frame name (the
  toolkit reads nothing else, so result PNGs for the first / last frame are optional).

Unlike the toolkit, ``JPEGImages`` is not needed, and every problem raises
:class:`~unifusion_sam.data.io.DataError` naming the file instead of printing and exiting.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from tqdm import tqdm

from ..data.io import DataError, load_label_map
from .boundary import DEFAULT_BOUND_TH
from .davis import SUMMARY_KEYS, VOID_LABEL, clean_ground_truth, count_objects
from .vos_meter import VOSMeter


def read_davis_video_list(root: str | os.PathLike, split: str = "val", year: str = "2017") -> list[str]:
    """Video names of ``<root>/ImageSets/<year>/<split>.txt``, in file order."""
    path = Path(root) / "ImageSets" / year / f"{split}.txt"
    if not path.is_file():
        raise DataError(f"video list for split {split!r} not found: {path}")
    names = [line.strip() for line in path.read_text().splitlines()]
    names = [n for n in names if n]
    if not names:
        raise DataError(f"video list {path} is empty")
    return names


def ground_truth_frames(
    root: str | os.PathLike, video: str, resolution: str = "480p", *, folder: str = "Annotations", min_frames: int = 3
) -> list[Path]:
    """Sorted annotation PNGs of ``video`` in ``<root>/<folder>/<resolution>/<video>`` (``folder`` is
    ``Annotations_unsupervised`` for the unsupervised protocol); raises :class:`DataError` if there are none."""
    path = Path(root) / folder / resolution / video
    if not path.is_dir():
        raise DataError(f"annotation folder of video {video!r} not found: {path}")
    frames = sorted(path.glob("*.png"))
    if not frames:
        raise DataError(f"video {video!r} has no frames: no *.png annotations in {path}")
    if len(frames) < min_frames:
        raise DataError(
            f"video {video!r} has {len(frames)} annotated frame(s) in {path}; the DAVIS protocol drops "
            "the first and last frames, so at least 3 are needed"
        )
    return frames


def score_davis_video(meter: VOSMeter, video: str, gt_files: list[Path], results: Path) -> None:
    """Add one video to ``meter`` (a ``VOSMeter(drop_first_last=False)``), reading frames ``gt_files[1:-1]``."""
    n_objects = count_objects(load_label_map(gt_files[0]), VOID_LABEL)
    if n_objects == 0:
        warnings.warn(f"video {video!r}: first annotation {gt_files[0]} has no object; it adds no score", stacklevel=2)
    result_dir = results / video
    if not result_dir.is_dir():
        raise DataError(f"results folder of video {video!r} not found: {result_dir}")
    meter.start_video(video, n_objects=n_objects)
    for gt_file in gt_files[1:-1]:
        res_file = result_dir / f"{gt_file.stem}.png"
        if not res_file.is_file():
            raise DataError(f"missing result frame {res_file} (ground truth {gt_file})")
        pred = load_label_map(res_file)
        gt = clean_ground_truth(load_label_map(gt_file), VOID_LABEL)
        if pred.shape != gt.shape:
            raise DataError(
                f"result frame {res_file} has size {pred.shape[1]}x{pred.shape[0]} (shape {pred.shape}) but "
                f"ground truth {gt_file} has size {gt.shape[1]}x{gt.shape[0]} (shape {gt.shape})"
            )
        top = int(pred.max(initial=0))
        if top > n_objects:
            raise DataError(
                f"result frame {res_file} contains object id {top}, but video {video!r} has only "
                f"{n_objects} object(s) (ids 1..{n_objects}, from {gt_files[0]})"
            )
        meter.update(video, pred, gt, frame=gt_file.stem)
    meter.end_video(video)


def score_davis_results(
    root: str | os.PathLike,
    results: str | os.PathLike,
    *,
    split: str = "val",
    resolution: str = "480p",
    videos: list[str] | None = None,
    bound_th: float = DEFAULT_BOUND_TH,
    progress: bool = True,
) -> dict:
    """DAVIS-2017 semi-supervised scores of the result PNGs under ``results``.

    Returns the dict of :func:`~unifusion_sam.metrics.davis_summary` (``J&F-Mean``, ``J-Mean``,
    ``J-Recall``, ``J-Decay``, ``F-Mean``, ``F-Recall``, ``F-Decay`` as fractions, ``per_object``,
    ``num_objects``) plus ``num_videos``. ``videos`` overrides the split's video list.
    """
    root, results = Path(root), Path(results)
    if not root.is_dir():
        raise DataError(f"DAVIS root not found: {root}")
    if not results.is_dir():
        raise DataError(f"results folder not found: {results}")
    names = read_davis_video_list(root, split) if videos is None else list(videos)
    meter = VOSMeter(bound_th=bound_th, drop_first_last=False, void_label=VOID_LABEL)
    for video in tqdm(names, desc="videos", unit="video", disable=not progress):
        score_davis_video(meter, video, ground_truth_frames(root, video, resolution), results)
    try:
        summary = meter.compute()
    except ValueError as exc:
        raise DataError(f"nothing to score under {root}: {exc}") from exc
    return summary


def format_davis_table(summary: dict, *, per_object: bool = True) -> str:
    """Readable text table of a DAVIS summary (global scores, then one line per object)."""
    width = max(len(k) for k in SUMMARY_KEYS)
    lines = ["  ".join(f"{k:>{width}}" for k in SUMMARY_KEYS)]
    lines.append("  ".join(f"{summary[k]:>{width}.3f}" for k in SUMMARY_KEYS))
    if per_object and summary.get("per_object"):
        objects = summary["per_object"]
        name_w = max(len("Object"), *(len(n) for n in objects))
        lines.append("")
        lines.append(f"{'Object':<{name_w}}  {'J&F-Mean':>8}  {'J-Mean':>8}  {'F-Mean':>8}")
        for name, s in objects.items():
            lines.append(f"{name:<{name_w}}  {s['J&F-Mean']:>8.3f}  {s['J-Mean']:>8.3f}  {s['F-Mean']:>8.3f}")
    return "\n".join(lines)

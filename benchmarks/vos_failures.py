"""Where tracking loses quality on a finished run's held-out synthetic videos (VOS, DAVIS protocol).

Three measurements, per object (IoU of its own mask, the objects of a video tracked together as the
run's evaluation tracks them, ``sigma="davis"``):

- **drift**: the mean IoU at each frame since the object's given mask (frame 0 is the given mask);
- **ceiling**: each object's given frame tracked once more with itself as both references (first and
  previous): how exactly the model reproduces a mask it has just been shown on the same image, which
  tracking can hardly beat; also by object area (pixels), since a pixel of boundary error costs a small
  object more;
- **lost**: tracks whose last three frames are empty although the object is visible in them;
- **teacher-forced drift**: the drift again, with each frame's previous-frame reference replaced by the
  object's true mask on that frame (``VideoSession.set_previous_mask``): what is left of the drift when
  the tracker's own errors are not fed back (later frames are harder: occlusions, motion since the first
  frame), so the gap to the drift above is the cost of the fed-back errors;
- **resolution bound** (UniFusion-SAM runs): the true mask area-pooled to SAM's low-resolution logits
  (a quarter of the network input) and post-processed exactly as a prediction: the IoU the pipeline's
  resolution alone allows, so a ceiling far below it is the model's imprecision, not the grid's.

    python benchmarks/vos_failures.py --run outputs/default [--videos 48] [--json PATH]

Runs of either family load as in ``benchmarks/paper_ablations.py`` (the held-out split is read from the
run's ``run_config.json``).
"""

from __future__ import annotations

import argparse
import sys
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from paper_ablations import load_run, run_split, write_json

from unifusion_sam import UniFusionSam
from unifusion_sam.data.synthetic import SyntheticDataset
from unifusion_sam.inference.session import VideoSession
from unifusion_sam.interface import Decoded

AREA_BINS = (0, 300, 600, 1200, 1 << 30)  # object area at its given frame (pixels)


def iou(pred: np.ndarray, gt: np.ndarray) -> float:
    union = int((pred | gt).sum())
    return 1.0 if union == 0 else float((pred & gt).sum()) / union


def tracked(model, video, labels: list[np.ndarray], teacher: bool):
    """The video's objects tracked together from their given masks (``sigma="davis"``), frame by frame;
    with ``teacher`` each object's previous-frame reference is then its true mask on that frame."""
    session = VideoSession(model, sigma="davis")
    for t, frame in enumerate(video.frames):
        for k, f in video.first_frame.items():
            if f == t:
                session.add_object(k, labels[t] == k)
        result = session.step(frame)
        if teacher:
            for k, f in video.first_frame.items():
                if f < t:
                    session.set_previous_mask(k, labels[t] == k)
        yield result


def video_tracks(model, video, teacher: bool = False) -> tuple[dict[int, list[float]], dict[int, float], dict[int, int], int]:
    """``(IoU per frame since the object's given frame, ceiling IoU, area at the given frame, lost tracks)``
    of one video's objects (the ceiling is not measured with ``teacher``: an empty dict)."""
    labels = [np.asarray(video.annotations[t]) for t in range(len(video.frames))]
    curves: dict[int, list[float]] = {k: [] for k in video.first_frame}
    visible_empty: dict[int, list[bool]] = {k: [] for k in video.first_frame}
    for t, result in enumerate(tracked(model, video, labels, teacher)):
        for k, f in video.first_frame.items():
            if t >= f:
                gt, pred = labels[t] == k, result.label_map == k
                curves[k].append(iou(pred, gt))
                visible_empty[k].append(bool(gt.any()) and not pred.any())
    lost = sum(1 for flags in visible_empty.values() if len(flags) >= 3 and all(flags[-3:]))
    ceiling, area = {}, {}
    for k, f in ([] if teacher else video.first_frame.items()):
        gt = labels[f] == k
        again = list(model.track([video.frames[f]] * 2, masks={k: gt}, sigma=0.0))[1]
        ceiling[k], area[k] = iou(again.masks[k], gt), int(gt.sum())
    return curves, ceiling, area, lost


def resolution_bound(model, frame, gt: np.ndarray) -> float | None:
    """IoU of ``gt`` after SAM's resolution round trip: the mask at the network input ``[S, S]``, area-pooled
    to the low-resolution logits ``[S/4, S/4]`` (logit 20 * (coverage - 0.5)), post-processed as a prediction.
    ``None`` for the full UniRef++ family (its masks are not SAM's low-resolution logits)."""
    if not isinstance(model, UniFusionSam):
        return None
    prepared = model.prepare_image(np.asarray(frame), "video")
    coverage = F.avg_pool2d(model.prepare_mask(gt, prepared)[None, None].float(), 4)  # [1, 1, S/4, S/4]
    result = model.postprocess(Decoded(20.0 * (coverage - 0.5), torch.ones(1)), prepared, "video")
    return iou(result.masks[0].cpu().numpy(), gt)


def measure(model, config, n_videos: int, progress: bool = True) -> dict:
    """``{"drift": [mean IoU per frame], "ceiling": mean, "ceiling_by_area": {bin: (n, mean)}, "lost": n,
    "objects": n, "drift_teacher_forced": [...], "lost_teacher_forced": n, "resolution_bound": mean or None}``
    over the first ``n_videos`` held-out videos."""
    from tqdm.auto import tqdm

    dataset = SyntheticDataset("heldout", "vos", n_videos, config)
    curves, forced, ceilings, bounds, areas, lost, lost_forced = [], [], [], [], [], 0, 0
    with torch.no_grad():
        for i in tqdm(range(n_videos), desc="vos failures", disable=not progress, leave=False):
            video = dataset.video(i)
            cache = getattr(getattr(model, "predictor", None), "cache", None)
            with cache.holding(len(video.frames)) if cache is not None else nullcontext():
                c, ceil, area, n_lost = video_tracks(model, video)
                forced_curves, _, _, n_lost_forced = video_tracks(model, video, teacher=True)
            curves += list(c.values())
            forced += list(forced_curves.values())
            ceilings += [ceil[k] for k in c]
            bounds += [resolution_bound(model, video.frames[f], np.asarray(video.annotations[f]) == k)
                       for k, f in video.first_frame.items()]
            areas += [area[k] for k in c]
            lost += n_lost
            lost_forced += n_lost_forced
    ceilings_a, areas_a = np.array(ceilings), np.array(areas)
    by_area = {}
    for lo, hi in zip(AREA_BINS[:-1], AREA_BINS[1:]):
        sel = (areas_a >= lo) & (areas_a < hi)
        if sel.any():
            by_area[f"{lo}-{hi if hi < AREA_BINS[-1] else ''}"] = (int(sel.sum()), float(ceilings_a[sel].mean()))
    return {"drift": mean_by_frame(curves), "ceiling": float(ceilings_a.mean()), "ceiling_by_area": by_area,
            "lost": lost, "objects": len(curves), "drift_teacher_forced": mean_by_frame(forced),
            "lost_teacher_forced": lost_forced,
            "resolution_bound": None if None in bounds else float(np.mean(bounds))}


def mean_by_frame(curves: list[list[float]]) -> list[float]:
    """The mean of per-object IoU curves at each frame since the given mask (over the objects that long)."""
    length = max(len(c) for c in curves)
    return [float(np.mean([c[t] for c in curves if len(c) > t])) for t in range(length)]


def format_report(r: dict, n_videos: int) -> str:
    lines = [f"{r['objects']} objects in {n_videos} held-out videos",
             "mean IoU by frames since the given mask (drift):",
             "  " + " ".join(f"{t}:{v:.2f}" for t, v in enumerate(r["drift"])),
             f"ceiling (the given frame as its own first and previous reference): IoU {r['ceiling']:.3f}"]
    for name, (n, value) in r["ceiling_by_area"].items():
        lines.append(f"  area {name:>10} px: {n:>3} objects, IoU {value:.3f}")
    if r["resolution_bound"] is not None:
        lines.append(f"resolution bound (true masks through the low-res logits and post-processing): IoU "
                     f"{r['resolution_bound']:.3f}")
    lines.append(f"lost (last 3 frames empty while visible): {r['lost']} of {r['objects']} tracks")
    lines += ["teacher-forced drift (the previous reference is the true mask of the previous frame):",
              "  " + " ".join(f"{t}:{v:.2f}" for t, v in enumerate(r["drift_teacher_forced"])),
              f"lost when teacher-forced: {r['lost_teacher_forced']} of {r['objects']} tracks"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", default="outputs/default", help="a finished run's output folder (either family)")
    parser.add_argument("--videos", type=int, default=None, help="held-out videos (default: the run's eval_videos)")
    parser.add_argument("--json", type=Path, default=None, help="write the measurements here")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.videos is not None and args.videos < 1:
        parser.error(f"--videos must be >= 1, got {args.videos}")
    torch.set_num_threads(max(1, args.threads))
    try:
        model, family = load_run(args.run)
    except FileNotFoundError as exc:
        raise SystemExit(str(exc)) from exc
    _, config, n_videos, _ = run_split(args.run, family)
    n_videos = args.videos or n_videos
    print(f"{args.run} ({family}): held-out seed {config.seed}, {config.image_size[0]} px", file=sys.stderr)
    report = measure(model.eval(), config, n_videos, progress=not args.no_progress)
    print(format_report(report, n_videos))
    write_json(args.json, report)
    return report


if __name__ == "__main__":
    main()

"""Where tracking loses quality on a finished run's held-out synthetic videos (VOS, DAVIS protocol).

Three measurements, per object (IoU of its own mask, the objects of a video tracked together as the
run's evaluation tracks them, ``sigma="davis"``):

- **drift**: the mean IoU at each frame since the object's given mask (frame 0 is the given mask);
- **ceiling**: each object's given frame tracked once more with itself as both references (first and
  previous): how exactly the model reproduces a mask it has just been shown on the same image, which
  tracking can hardly beat; also by object area (pixels), since a pixel of boundary error costs a small
  object more;
- **lost**: tracks whose last three frames are empty although the object is visible in them.

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
from paper_ablations import load_run, run_split, write_json

from unifusion_sam.data.synthetic import SyntheticDataset

AREA_BINS = (0, 300, 600, 1200, 1 << 30)  # object area at its given frame (pixels)


def iou(pred: np.ndarray, gt: np.ndarray) -> float:
    union = int((pred | gt).sum())
    return 1.0 if union == 0 else float((pred & gt).sum()) / union


def video_tracks(model, video) -> tuple[dict[int, list[float]], dict[int, float], dict[int, int], int]:
    """``(IoU per frame since the object's given frame, ceiling IoU, area at the given frame, lost tracks)``
    of one video's objects."""
    labels = [np.asarray(video.annotations[t]) for t in range(len(video.frames))]
    first = {k: labels[f] == k for k, f in video.first_frame.items() if f == 0}
    late: dict[int, dict[int, np.ndarray]] = {}
    for k, f in video.first_frame.items():
        if f > 0:
            late.setdefault(f, {})[k] = labels[f] == k
    curves: dict[int, list[float]] = {k: [] for k in video.first_frame}
    visible_empty: dict[int, list[bool]] = {k: [] for k in video.first_frame}
    for t, result in enumerate(model.track(video.frames, masks=first, new_objects=late, sigma="davis")):
        for k, f in video.first_frame.items():
            if t >= f:
                gt, pred = labels[t] == k, result.label_map == k
                curves[k].append(iou(pred, gt))
                visible_empty[k].append(bool(gt.any()) and not pred.any())
    lost = sum(1 for flags in visible_empty.values() if len(flags) >= 3 and all(flags[-3:]))
    ceiling, area = {}, {}
    for k, f in video.first_frame.items():
        gt = labels[f] == k
        again = list(model.track([video.frames[f]] * 2, masks={k: gt}, sigma=0.0))[1]
        ceiling[k], area[k] = iou(again.masks[k], gt), int(gt.sum())
    return curves, ceiling, area, lost


def measure(model, config, n_videos: int, progress: bool = True) -> dict:
    """``{"drift": [mean IoU per frame], "ceiling": mean, "ceiling_by_area": {bin: (n, mean)}, "lost": n,
    "objects": n}`` over the first ``n_videos`` held-out videos."""
    from tqdm.auto import tqdm

    dataset = SyntheticDataset("heldout", "vos", n_videos, config)
    curves, ceilings, areas, lost = [], [], [], 0
    with torch.no_grad():
        for i in tqdm(range(n_videos), desc="vos failures", disable=not progress, leave=False):
            video = dataset.video(i)
            cache = getattr(getattr(model, "predictor", None), "cache", None)
            with cache.holding(len(video.frames)) if cache is not None else nullcontext():
                c, ceil, area, n_lost = video_tracks(model, video)
            curves += list(c.values())
            ceilings += [ceil[k] for k in c]
            areas += [area[k] for k in c]
            lost += n_lost
    length = max(len(c) for c in curves)
    drift = [float(np.mean([c[t] for c in curves if len(c) > t])) for t in range(length)]
    ceilings_a, areas_a = np.array(ceilings), np.array(areas)
    by_area = {}
    for lo, hi in zip(AREA_BINS[:-1], AREA_BINS[1:]):
        sel = (areas_a >= lo) & (areas_a < hi)
        if sel.any():
            by_area[f"{lo}-{hi if hi < AREA_BINS[-1] else ''}"] = (int(sel.sum()), float(ceilings_a[sel].mean()))
    return {"drift": drift, "ceiling": float(ceilings_a.mean()), "ceiling_by_area": by_area, "lost": lost,
            "objects": len(curves)}


def format_report(r: dict, n_videos: int) -> str:
    lines = [f"{r['objects']} objects in {n_videos} held-out videos",
             "mean IoU by frames since the given mask (drift):",
             "  " + " ".join(f"{t}:{v:.2f}" for t, v in enumerate(r["drift"])),
             f"ceiling (the given frame as its own first and previous reference): IoU {r['ceiling']:.3f}"]
    for name, (n, value) in r["ceiling_by_area"].items():
        lines.append(f"  area {name:>10} px: {n:>3} objects, IoU {value:.3f}")
    lines.append(f"lost (last 3 frames empty while visible): {r['lost']} of {r['objects']} tracks")
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

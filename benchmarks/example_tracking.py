"""Example-prompted tracking against first-frame-mask tracking, on a finished run's held-out synthetic videos.

Every object of every held-out video is tracked twice, each object as if alone (``independent``): once from
its mask on the frame where it first appears (VOS, as the run's evaluation does) and once from examples,
pictures of the same object drawn into other scenes (``object_examples``, seeded per object), given from frame
0 on, so the model has to find the object first. Scored with the DAVIS protocol (first and last frames
dropped) per object; also when each example-given object is first found (frames after it first appears),
how many are "found" before they appear (a look-alike taken for them: the score must say an object is not
there yet) and how many are never found; and where the gap comes from (per-object mean IoU by how each was
found: with a good or a poor mask, on a look-alike, never). ``--search-bound`` also decodes every object from
its examples alone on every frame and reports what a per-frame oracle choosing between that and the track
would score: a bound on re-finding an object while tracking it.

    python benchmarks/example_tracking.py --run outputs/default           # the UniFusion-SAM default run
    python benchmarks/example_tracking.py --run outputs/uniref_default    # the full UniRef++ default run
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from paper_ablations import load_run, run_split, write_json
from tqdm.auto import tqdm

from unifusion_sam.data.synthetic import SyntheticDataset, example_key, object_examples, sample_video
from unifusion_sam.inference import VideoSession
from unifusion_sam.metrics import VOSMeter


def track(model, frames, objects: dict, late: dict, sigma: float) -> tuple[list[np.ndarray], dict[int, int | None]]:
    """Per-frame masks ``{id: H x W}`` of one session and each object's ``found_at`` frame."""
    session = VideoSession(model, sigma=sigma, independent=True)
    for obj_id, reference in objects.items():
        session.add(obj_id, reference)
    outputs = []
    for result in session.run(frames, late):
        outputs.append(result.masks)
    return outputs, {k: o.found_at for k, o in session.objects.items()}


def search_bound(model, frames, labels, obj: int, shown, tracked) -> tuple[float, float]:
    """Per-object mean IoU over the scored frames of the examples-only decode (``predict`` with the examples,
    on every frame: the search, never tracking) and of a per-frame oracle taking the better of that and the
    tracked mask (``tracked``: per-frame IoUs): a bound on any rule that re-finds an object while tracking."""
    images, masks = [e[0] for e in shown], [e[1] for e in shown]
    alone = [_iou(model.predict(frames[t], ref_images=images, ref_masks=masks).mask, labels[t] == obj)
             for t in range(1, len(labels) - 1)]
    return float(np.mean(alone)), float(np.mean(np.maximum(alone, tracked)))


@torch.no_grad()
def measure(model, config, n_videos: int, shots: int, progress: bool = True, bound: bool = False) -> dict:
    videos = SyntheticDataset("heldout", "vos", n_videos, config)
    meters = {"mask": VOSMeter(), "examples": VOSMeter()}
    delays, never, count = [], 0, 0
    bounds: list[tuple[float, float]] = []
    groups: dict[str, list[tuple[float, float]]] = {}  # per-object mean IoU (mask, examples) by how it was found
    for i in tqdm(range(n_videos), desc="videos", disable=not progress):
        video, spec = videos.video(i), sample_video(config, "heldout", i)
        labels = [np.asarray(video.annotations[t]) for t in range(len(video.frames))]
        first = {k: f for k, f in video.first_frame.items()}
        given = {k: labels[f] == k for k, f in first.items() if f == 0}
        late: dict[int, dict] = {}
        for k, f in first.items():
            if f > 0:
                late.setdefault(f, {})[k] = labels[f] == k
        shown = {k: object_examples(config, "heldout", example_key(i, k), spec.shapes[k - 1], shots)
                 for k in video.object_ids}
        runs = {"mask": track(model, video.frames, given, late, sigma=0.3)[0]}
        runs["examples"], found = track(model, video.frames, shown, {}, sigma=0.3)
        for k in video.object_ids:
            name = f"{video.name}_{k}"
            iou = {mode: np.mean([_iou(outputs[t].get(k), labels[t] == k) for t in range(1, len(labels) - 1)])
                   for mode, outputs in runs.items()}
            f = found[k]
            group = "never found" if f is None else "found before it appears" if f < first[k] else \
                "found, mask IoU >= 0.5" if _iou(runs["examples"][f].get(k), labels[f] == k) >= 0.5 else \
                "found, mask IoU < 0.5"
            groups.setdefault(group, []).append((iou["mask"], iou["examples"]))
            if bound:
                tracked = [_iou(runs["examples"][t].get(k), labels[t] == k) for t in range(1, len(labels) - 1)]
                bounds.append(search_bound(model, video.frames, labels, k, shown[k], tracked))
            for mode, outputs in runs.items():
                meters[mode].start_video(name, n_objects=1)
                for t, masks in enumerate(outputs):
                    pred = masks.get(k, np.zeros(labels[t].shape, bool))  # a late object: nothing before it joins
                    meters[mode].update(name, pred.astype(np.uint8), (labels[t] == k).astype(np.uint8))
            count += 1
            if found[k] is None:
                never += 1
            else:
                delays.append(found[k] - first[k])  # < 0: "found" before it is there (a look-alike)
    mask_jf, example_jf = (float(meters[m].compute()["J&F-Mean"]) for m in ("mask", "examples"))
    per_object = [b for rows in groups.values() for b in rows]
    extra = {} if not bound else {"search_bound": {
        "iou_mask": float(np.mean([m for m, _ in per_object])), "iou_examples": float(np.mean([e for _, e in per_object])),
        "iou_examples_only": float(np.mean([a for a, _ in bounds])), "iou_best_per_frame": float(np.mean([b for _, b in bounds]))}}
    return extra | {"objects": count, "mask_jf": mask_jf, "examples_jf": example_jf, "gap": mask_jf - example_jf,
            "found_same_frame": float(np.mean([d == 0 for d in delays])) if delays else 0.0,
            "found_before_appearing": sum(d < 0 for d in delays),
            "mean_frames_to_find": float(np.mean([d for d in delays if d >= 0])) if any(d >= 0 for d in delays) else None,
            "never_found": never, "shots": shots, "breakdown": _breakdown(groups)}


def _iou(pred: np.ndarray | None, truth: np.ndarray) -> float:
    """IoU of a predicted mask (``None``: nothing) with the truth; 1 when both are empty."""
    pred = np.zeros(truth.shape, bool) if pred is None else pred.astype(bool)
    union = (pred | truth).sum()
    return 1.0 if union == 0 else float((pred & truth).sum() / union)


def _breakdown(groups: dict[str, list[tuple[float, float]]]) -> dict:
    """Where the gap comes from: per group of objects (by how the examples found them) their count, mean IoU
    over the scored frames from the mask and from examples, and their share of the summed IoU gap."""
    total = sum(m - e for rows in groups.values() for m, e in rows) or 1.0
    return {g: {"objects": len(rows), "iou_mask": float(np.mean([m for m, _ in rows])),
                "iou_examples": float(np.mean([e for _, e in rows])),
                "share_of_gap": float(sum(m - e for m, e in rows) / total)} for g, rows in groups.items()}


def format_report(r: dict, n_videos: int) -> str:
    return "\n".join([
        f"{r['objects']} objects in {n_videos} held-out videos, {r['shots']} example(s) each",
        f"J&F from the first-frame mask: {r['mask_jf']:.3f}",
        f"J&F from examples:            {r['examples_jf']:.3f}   (gap {r['gap']:+.3f})",
        f"found on the frame it first appears: {100 * r['found_same_frame']:.0f} % of the found objects; "
        f"mean frames to find: {r['mean_frames_to_find'] if r['mean_frames_to_find'] is None else round(r['mean_frames_to_find'], 2)}; "
        f"found before it appears (a look-alike): {r['found_before_appearing']}; "
        f"never found: {r['never_found']} of {r['objects']}",
        "per-object mean IoU (from the mask / from examples, share of the gap):",
        *(f"  {g}: {b['objects']} objects, {b['iou_mask']:.3f} / {b['iou_examples']:.3f}, {100 * b['share_of_gap']:.0f} %"
          for g, b in r["breakdown"].items()),
        *([] if "search_bound" not in r else [
            "per-object mean IoU: from the mask {iou_mask:.3f}, tracked from examples {iou_examples:.3f}, the "
            "examples-only decode on every frame {iou_examples_only:.3f}, the better of the last two on each frame "
            "(an oracle) {iou_best_per_frame:.3f}".format(**r["search_bound"])]),
    ])


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", default="outputs/default", help="a finished run's output folder (either family)")
    parser.add_argument("--videos", type=int, default=None, help="held-out videos (default: the run's eval_videos)")
    parser.add_argument("--shots", type=int, default=2, help="examples per object (default 2)")
    parser.add_argument("--json", type=Path, default=None, help="write the measurements here")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--search-bound", action="store_true",
                        help="also decode each object from its examples alone on every frame, and report the "
                             "per-frame oracle of that and the track (one more decode per object and frame)")
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, args.threads))
    try:
        model, family = load_run(args.run)
    except FileNotFoundError as exc:
        raise SystemExit(f"{exc}; run the recipe (make demo) first") from exc
    _, config, n_videos, _ = run_split(args.run, family)
    n_videos = args.videos or n_videos
    print(f"{args.run} ({family}): held-out seed {config.seed}, {config.image_size[0]} px", file=sys.stderr)
    report = measure(model.eval(), config, n_videos, args.shots, progress=not args.no_progress, bound=args.search_bound)
    print(format_report(report, n_videos))
    write_json(args.json, report)
    return report


if __name__ == "__main__":
    main()

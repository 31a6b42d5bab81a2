"""DAVIS-2017 *unsupervised*-task scoring (the protocol Ref-DAVIS17 is evaluated with).

Reproduces ``davis2017-evaluation``'s ``DAVISEvaluation(task="unsupervised")``:

* ground truth: ``<root>/Annotations_unsupervised/<resolution>/<video>/*.png`` sorted by name, **all**
  frames scored (no first / last frame dropped); void (255) is background; the objects are the ids
  ``1..max(first frame)``;
* results: ``<results>/<video>/<frame>.png`` for every ground-truth frame; the proposals are the ids
  ``1..max(all result frames)`` (at most 20); missing proposals are empty masks;
* per (proposal, object) pair the per-frame J and F; proposals are assigned to objects by the
  Hungarian algorithm on ``(mean J + mean F) / 2``; each object gets its assigned proposal's J / F.

The statistics (Mean / Recall / Decay) are then those of the semi-supervised protocol
(:func:`~unifusion_sam.metrics.davis_summary`). Per-object names are ``<video>_<ground-truth id>``
(the toolkit numbers them by the position of the assignment, which gives the same totals).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from scipy.optimize import linear_sum_assignment

from ..data.io import DataError, load_label_map
from ..metrics import ObjectScores, boundary_f, clean_ground_truth, jaccard
from ..metrics.boundary import DEFAULT_BOUND_TH
from ..metrics.davis_scoring import ground_truth_frames

MAX_PROPOSALS = 20


def unsupervised_ground_truth(root: str | os.PathLike, video: str, resolution: str = "480p") -> list[Path]:
    """Sorted ``Annotations_unsupervised`` PNGs of ``video`` (raises :class:`DataError` naming the folder)."""
    return ground_truth_frames(root, video, resolution, folder="Annotations_unsupervised", min_frames=1)


def score_unsupervised_video(video: str, gt_files: list[Path], result_dir: str | os.PathLike,
                             *, bound_th: float = DEFAULT_BOUND_TH) -> list[ObjectScores]:
    """Per-object J / F of one video's results under the unsupervised protocol (module docstring)."""
    result_dir = Path(result_dir)
    gts = [clean_ground_truth(load_label_map(f)) for f in gt_files]
    preds = []
    for gt_file, gt in zip(gt_files, gts):
        res_file = result_dir / f"{gt_file.stem}.png"
        if not res_file.is_file():
            raise DataError(f"missing result frame {res_file} (ground truth {gt_file})")
        pred = load_label_map(res_file)
        if pred.shape != gt.shape:
            raise DataError(f"result frame {res_file} has shape {pred.shape} but ground truth {gt_file} has {gt.shape}")
        preds.append(pred)
    n_gt = int(gts[0].max(initial=0))
    n_res = max(int(p.max(initial=0)) for p in preds)
    if n_res > MAX_PROPOSALS:
        raise DataError(f"results of video {video!r} in {result_dir} hold object id {n_res}; the unsupervised "
                        f"protocol allows at most {MAX_PROPOSALS} proposals")
    if n_gt == 0:
        return []
    n_res = max(n_res, n_gt)  # missing proposals are empty masks (the toolkit pads with zeros)
    j = np.zeros((n_res, n_gt, len(gts)))
    f = np.zeros((n_res, n_gt, len(gts)))
    for t, (pred, gt) in enumerate(zip(preds, gts)):
        for g in range(n_gt):
            gt_mask = gt == g + 1
            for r in range(n_res):
                pred_mask = pred == r + 1
                j[r, g, t] = jaccard(pred_mask, gt_mask)
                f[r, g, t] = boundary_f(pred_mask, gt_mask, bound_th)
    rows, cols = linear_sum_assignment(-(j.mean(axis=2) + f.mean(axis=2)) / 2)
    return sorted(
        (ObjectScores(video, int(g) + 1, j[r, g].copy(), f[r, g].copy()) for r, g in zip(rows, cols)),
        key=lambda o: o.object_id,
    )

"""Referring image segmentation metrics: oIoU, mIoU and Prec@X, accumulated sentence by sentence.

Conventions follow LAVT's ``test.py`` (yz93/LAVT-RIS), the reference most RefCOCO/+/g numbers use:

* per-sentence IoU = I / U, and ``0.0`` when the union is empty;
* ``oIoU`` = sum of I / sum of U over all sentences; ``mIoU`` = mean per-sentence IoU;
* ``Prec@X`` = fraction of sentences with ``IoU >= X`` (LAVT: ``this_iou >= eval_seg_iou``). Note that
  MTTR/ReferFormer's ``calculate_precision_at_k_and_iou_metrics`` uses a strict ``>`` (and an
  epsilon-smoothed IoU); the two differ only for sentences whose IoU equals a threshold exactly.

Masks are compared at whatever resolution they are given; the protocol is the original image size.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .region import intersection_union

RIS_THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9)


class RISMeter:
    """Streaming oIoU / mIoU / Prec@X over referring sentences.

    ``update(pred, gt)`` takes one sentence's ``H x W`` predicted and ground-truth masks (non-zero =
    foreground); ``compute()`` returns ``{"oIoU", "mIoU", "Prec@0.5", ..., "Prec@0.9",
    "num_sentences"}`` as fractions.
    """

    def __init__(self, thresholds: Sequence[float] = RIS_THRESHOLDS) -> None:
        self.thresholds = tuple(float(t) for t in thresholds)
        self.reset()

    def reset(self) -> None:
        """Forget all sentences."""
        self.total_intersection = 0
        self.total_union = 0
        self.ious: list[float] = []

    def update(self, pred: np.ndarray, gt: np.ndarray) -> float:
        """Add one sentence (``H x W`` masks); returns its IoU. ``ValueError`` naming both shapes if sizes differ."""
        inter, union = intersection_union(pred, gt)
        return self.update_counts(inter, union)

    def update_counts(self, intersection: int, union: int) -> float:
        """Add one sentence from its pixel counts; returns its IoU (0 when the union is empty)."""
        if intersection < 0 or union < intersection:
            raise ValueError(f"need 0 <= intersection <= union, got intersection={intersection}, union={union}")
        iou = intersection / union if union > 0 else 0.0
        self.total_intersection += int(intersection)
        self.total_union += int(union)
        self.ious.append(float(iou))
        return float(iou)

    def merge(self, other: RISMeter) -> None:
        """Add the sentences of another meter (e.g. from another process) to this one."""
        if other.thresholds != self.thresholds:
            raise ValueError(f"cannot merge meters with thresholds {self.thresholds} and {other.thresholds}")
        self.total_intersection += other.total_intersection
        self.total_union += other.total_union
        self.ious.extend(other.ious)

    def compute(self) -> dict[str, float]:
        """``{"oIoU", "mIoU", "Prec@<t>" for each threshold, "num_sentences"}``; ``ValueError`` if empty."""
        if not self.ious:
            raise ValueError("RISMeter.compute() called before any update()")
        ious = np.asarray(self.ious, dtype=np.float64)
        out: dict[str, float] = {
            "oIoU": self.total_intersection / self.total_union if self.total_union > 0 else 0.0,
            "mIoU": float(ious.mean()),
        }
        for t in self.thresholds:
            out[f"Prec@{t:g}"] = float(np.mean(ious >= t))
        out["num_sentences"] = len(self.ious)
        return out

"""Few-shot segmentation metrics (FSS-1000 protocol): per-class foreground mIoU and FB-IoU.

Conventions follow HSNet (juhongm999/hsnet, ``common/logger.py`` ``AverageMeter.compute_iou`` and
``common/evaluation.py`` ``Evaluator.classify_prediction``), the reference code of the FSS-1000 numbers:

* each episode adds its background and foreground intersection / union pixel counts to its class;
* per-class IoU = sum I / max(sum U, 1) over the class's episodes (foreground);
  ``mIoU`` = mean over the classes of interest (a listed class never updated counts as 0);
* ``FB-IoU`` = mean over {background, foreground} of (sum I over all classes / sum U over all
  classes). This is what HSNet's code computes: the sums are pooled over classes first, it is *not*
  the per-class mean of (fg IoU + bg IoU) / 2.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable

import numpy as np

from ._checks import mask_pair


class FSSMeter:
    """Streaming per-class foreground IoU and FB-IoU over few-shot episodes.

    ``class_ids``: the classes to average over (e.g. the 240 FSS-1000 test classes); with ``None``,
    every class seen by :meth:`update`. ``update(pred, gt, class_id)`` takes one query's ``H x W``
    predicted and ground-truth masks (non-zero = foreground).
    """

    def __init__(self, class_ids: Iterable[Hashable] | None = None) -> None:
        self.class_ids = None if class_ids is None else list(dict.fromkeys(class_ids))
        self.reset()

    def reset(self) -> None:
        """Forget all episodes."""
        # class -> [bg_inter, fg_inter, bg_union, fg_union]
        self._counts: dict[Hashable, list[int]] = {}
        self.num_episodes = 0

    def update(self, pred: np.ndarray, gt: np.ndarray, class_id: Hashable) -> float:
        """Add one episode; returns its foreground IoU (0 if the union is empty).

        Raises ``ValueError`` naming both shapes when the sizes differ, or for a class outside ``class_ids``.
        """
        p, g = mask_pair(pred, gt)
        fg_i = int(np.count_nonzero(p & g))
        fg_u = int(np.count_nonzero(p | g))
        bg_i = int(np.count_nonzero(~p & ~g))
        bg_u = int(np.count_nonzero(~p | ~g))
        self.update_counts(class_id, fg_i, fg_u, bg_i, bg_u)
        return fg_i / fg_u if fg_u else 0.0

    def update_counts(self, class_id: Hashable, fg_inter: int, fg_union: int, bg_inter: int, bg_union: int) -> None:
        """Add one episode from its foreground / background pixel counts."""
        if self.class_ids is not None and class_id not in self.class_ids:
            raise ValueError(f"class {class_id!r} is not one of the meter's class_ids")
        counts = self._counts.setdefault(class_id, [0, 0, 0, 0])
        counts[0] += int(bg_inter)
        counts[1] += int(fg_inter)
        counts[2] += int(bg_union)
        counts[3] += int(fg_union)
        self.num_episodes += 1

    def _classes(self) -> list[Hashable]:
        return list(self._counts) if self.class_ids is None else list(self.class_ids)

    def per_class_iou(self) -> dict[Hashable, float]:
        """Foreground IoU of each class of interest: sum I / max(sum U, 1) over its episodes."""
        out = {}
        for cls in self._classes():
            c = self._counts.get(cls, [0, 0, 0, 0])
            out[cls] = c[1] / max(c[3], 1)
        return out

    def compute(self) -> dict:
        """``{"mIoU", "FB-IoU", "per_class_iou": {class: fg IoU}, "num_classes", "num_episodes"}`` (fractions)."""
        if self.num_episodes == 0:
            raise ValueError("FSSMeter.compute() called before any update()")
        per_class = self.per_class_iou()
        totals = np.zeros(4, dtype=np.float64)
        for cls in per_class:
            totals += np.asarray(self._counts.get(cls, [0, 0, 0, 0]), dtype=np.float64)
        bg_iou = totals[0] / totals[2] if totals[2] > 0 else float("nan")
        fg_iou = totals[1] / totals[3] if totals[3] > 0 else float("nan")
        return {
            "mIoU": float(np.mean(list(per_class.values()))),
            "FB-IoU": float((bg_iou + fg_iou) / 2),
            "per_class_iou": per_class,
            "num_classes": len(per_class),
            "num_episodes": self.num_episodes,
        }

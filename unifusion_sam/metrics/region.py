"""Region similarity J (Jaccard index / IoU of two masks), DAVIS convention.

Reproduces ``db_eval_iou`` of the official DAVIS-2017 toolkit
(davisvideochallenge/davis2017-evaluation, ``davis2017/metrics.py``) without void pixels:
``J = |P & G| / |P | G|``, and ``J = 1`` when the union is empty (both masks empty).
"""

from __future__ import annotations

import numpy as np

from ._checks import mask_pair


def intersection_union(pred: np.ndarray, gt: np.ndarray) -> tuple[int, int]:
    """Pixel counts ``(|pred & gt|, |pred | gt|)`` of two ``H x W`` masks (non-zero = foreground).

    Raises ``ValueError`` naming both shapes when the sizes differ.
    """
    p, g = mask_pair(pred, gt)
    return int(np.count_nonzero(p & g)), int(np.count_nonzero(p | g))


def jaccard(pred: np.ndarray, gt: np.ndarray) -> float:
    """Region similarity J of an ``H x W`` predicted mask against an ``H x W`` ground-truth mask.

    Non-zero pixels are foreground. Returns ``|P & G| / |P | G|``; ``1.0`` if both masks are empty
    (DAVIS ``db_eval_iou``). Raises ``ValueError`` naming both shapes when the sizes differ.
    """
    inter, union = intersection_union(pred, gt)
    if union == 0:
        return 1.0
    return inter / union

"""Input checks shared by the metric functions (explicit ``ValueError``s, never ``assert``)."""

from __future__ import annotations

import numpy as np


def as_2d(array: np.ndarray, name: str) -> np.ndarray:
    """Return ``array`` as an ``H x W`` numpy array, or raise ``ValueError`` naming its shape."""
    arr = np.asarray(array)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D H x W array, got shape {arr.shape}")
    return arr


def as_mask(array: np.ndarray, name: str) -> np.ndarray:
    """Return an ``H x W`` bool mask (non-zero = foreground, as the DAVIS toolkit's ``astype(bool)``)."""
    arr = as_2d(array, name)
    return arr if arr.dtype == np.bool_ else arr.astype(bool)


def check_same_shape(
    pred: np.ndarray, gt: np.ndarray, pred_name: str = "prediction", gt_name: str = "ground truth"
) -> None:
    """Raise ``ValueError`` naming both shapes when ``pred`` and ``gt`` differ in size."""
    if pred.shape != gt.shape:
        raise ValueError(
            f"{pred_name} and {gt_name} sizes differ: {pred_name} shape {tuple(pred.shape)}, "
            f"{gt_name} shape {tuple(gt.shape)}"
        )


def mask_pair(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validate and convert a (prediction, ground truth) pair of ``H x W`` masks to bool."""
    p = as_mask(pred, "prediction")
    g = as_mask(gt, "ground truth")
    check_same_shape(p, g)
    return p, g

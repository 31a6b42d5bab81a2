"""Boundary accuracy F, DAVIS convention.

Reproduces ``f_measure`` / ``_seg2bmap`` of the official DAVIS-2017 toolkit
(davisvideochallenge/davis2017-evaluation, ``davis2017/metrics.py``), without void pixels and without
OpenCV / scikit-image:

* boundaries: :func:`seg2bmap` (1-pixel boundaries offset half a pixel towards the origin, built from
  the east / south / south-east neighbour XOR rule, with the toolkit's special last row / column);
* tolerance: ``bound_pix = bound_th if bound_th >= 1 else ceil(bound_th * norm(image_shape))``
  (8 pixels at 480 x 854 with the default ``bound_th = 0.008``);
* each boundary is dilated with scikit-image's ``disk(bound_pix)`` exactly as ``cv2.dilate`` does
  (anchor at the kernel centre ``ksize // 2``, nothing outside the image);
* precision = matched predicted boundary pixels / predicted boundary pixels, recall likewise for the
  ground truth; empty boundaries: both empty -> P = R = 1 (F = 1); predicted empty only -> P = 1,
  R = 0; ground truth empty only -> P = 0, R = 1 (F = 0 in both cases).
  Note that an object covering the whole image has an *empty* boundary under this rule.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from ._checks import as_mask, mask_pair

DEFAULT_BOUND_TH = 0.008


def disk(radius: float) -> np.ndarray:
    """scikit-image's ``disk(radius)``: a ``(2r+1) x (2r+1)`` bool array with ``x**2 + y**2 <= r**2``.

    Built like ``skimage.morphology.disk`` (``L = arange(-r, r + 1)``), so a non-integer radius gives
    the same (possibly even-sized) kernel as scikit-image does.
    """
    if not np.isfinite(radius) or radius < 0:
        raise ValueError(f"disk radius must be a finite number >= 0, got {radius!r}")
    coords = np.arange(-radius, radius + 1)
    x, y = np.meshgrid(coords, coords)
    return (x**2 + y**2) <= radius**2


def boundary_radius(shape: tuple[int, ...], bound_th: float = DEFAULT_BOUND_TH) -> float:
    """Boundary tolerance in pixels for an image of ``shape`` (``H, W``), as the DAVIS toolkit computes it.

    ``bound_th`` if ``bound_th >= 1``, else ``ceil(bound_th * sqrt(H**2 + W**2))``.
    """
    if bound_th < 0:
        raise ValueError(f"bound_th must be >= 0, got {bound_th}")
    if bound_th >= 1:
        return float(bound_th)
    return float(np.ceil(bound_th * np.linalg.norm(tuple(shape))))


def seg2bmap(seg: np.ndarray, width: int | None = None, height: int | None = None) -> np.ndarray:
    """Binary boundary map of an ``H x W`` mask (non-zero = foreground); returns ``height x width`` bool.

    A pixel is on the boundary if it differs from its east, south or south-east neighbour (neighbours
    outside the image count as background); on the last row only the east neighbour is used, on the
    last column only the south one, and the bottom-right pixel is never a boundary pixel.

    ``width`` / ``height`` (default: the mask's) reproduce the toolkit's resampling branch, including
    its index formula ``j = 1 + floor(y - 1 + height / H)``, ``i = 1 + floor(x - 1 + width / H)``.
    The toolkit's ``assert`` on the target size is mis-parenthesised and never fires; here a target
    larger than the mask, with another aspect ratio (> 0.01), or one the formula maps out of range
    raises ``ValueError``.
    """
    seg = as_mask(seg, "seg")
    h, w = seg.shape
    if h == 0 or w == 0:
        raise ValueError(f"seg must be non-empty, got shape {seg.shape}")
    width = w if width is None else int(width)
    height = h if height is None else int(height)

    east = np.zeros_like(seg)
    south = np.zeros_like(seg)
    south_east = np.zeros_like(seg)
    east[:, :-1] = seg[:, 1:]
    south[:-1, :] = seg[1:, :]
    south_east[:-1, :-1] = seg[1:, 1:]

    b = (seg ^ east) | (seg ^ south) | (seg ^ south_east)
    b[-1, :] = seg[-1, :] ^ east[-1, :]
    b[:, -1] = seg[:, -1] ^ south[:, -1]
    b[-1, -1] = False

    if width == w and height == h:
        return b

    if width <= 0 or height <= 0 or width > w or height > h or abs(width / height - w / h) > 0.01:
        raise ValueError(f"can't convert {w}x{h} seg to {width}x{height} bmap")
    ys, xs = np.nonzero(b)
    rows = 1 + np.floor((ys - 1) + height / h).astype(np.int64)
    cols = 1 + np.floor((xs - 1) + width / h).astype(np.int64)
    if ys.size and (rows.max() >= height or cols.max() >= width):
        raise ValueError(f"can't convert {w}x{h} seg to {width}x{height} bmap: boundary maps out of range")
    bmap = np.zeros((height, width), dtype=bool)
    bmap[rows, cols] = True
    return bmap


def dilate_disk(mask: np.ndarray, radius: float) -> np.ndarray:
    """``cv2.dilate(mask, disk(radius))`` for an ``H x W`` bool mask; returns ``H x W`` bool.

    An integer radius uses an exact Euclidean distance transform (a pixel is set iff some foreground
    pixel lies at squared distance ``<= radius**2``); any other radius correlates with the
    scikit-image disk using OpenCV's anchor (``ksize // 2``), which scipy's correlate shares.
    """
    mask = as_mask(mask, "mask")
    if not np.isfinite(radius) or radius < 0:
        raise ValueError(f"dilation radius must be a finite number >= 0, got {radius!r}")
    if not np.any(mask):
        return np.zeros_like(mask)
    if float(radius).is_integer():
        if radius == 0:
            return mask.copy()
        dist = ndimage.distance_transform_edt(~mask)
        return dist <= radius
    kernel = disk(radius).astype(np.int32)
    hits = ndimage.correlate(mask.astype(np.int32), kernel, mode="constant", cval=0)
    return hits > 0


def _bbox(mask: np.ndarray) -> tuple[slice, slice]:
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)


def boundary_precision_recall(
    pred: np.ndarray, gt: np.ndarray, bound_th: float = DEFAULT_BOUND_TH
) -> tuple[float, float, float]:
    """``(precision, recall, F)`` of the boundary of an ``H x W`` prediction against an ``H x W`` ground truth.

    DAVIS ``f_measure`` semantics (see the module docstring for the empty-boundary conventions).
    Raises ``ValueError`` naming both shapes when the sizes differ.
    """
    p, g = mask_pair(pred, gt)
    radius = boundary_radius(p.shape, bound_th)
    fg_b = seg2bmap(p)
    gt_b = seg2bmap(g)
    n_fg = int(np.count_nonzero(fg_b))
    n_gt = int(np.count_nonzero(gt_b))

    if n_fg == 0 and n_gt > 0:
        precision, recall = 1.0, 0.0
    elif n_fg > 0 and n_gt == 0:
        precision, recall = 0.0, 1.0
    elif n_fg == 0 and n_gt == 0:
        precision, recall = 1.0, 1.0
    else:
        # Matches only depend on boundary pixels, all of which lie in this box: cropping is exact.
        box = _bbox(fg_b | gt_b)
        fg_c, gt_c = fg_b[box], gt_b[box]
        fg_match = np.count_nonzero(fg_c & dilate_disk(gt_c, radius))
        gt_match = np.count_nonzero(gt_c & dilate_disk(fg_c, radius))
        precision = fg_match / n_fg
        recall = gt_match / n_gt

    if precision + recall == 0:
        f = 0.0
    else:
        f = 2 * precision * recall / (precision + recall)
    return float(precision), float(recall), float(f)


def boundary_f(pred: np.ndarray, gt: np.ndarray, bound_th: float = DEFAULT_BOUND_TH) -> float:
    """Boundary accuracy F of an ``H x W`` predicted mask against an ``H x W`` ground-truth mask (DAVIS)."""
    return boundary_precision_recall(pred, gt, bound_th)[2]

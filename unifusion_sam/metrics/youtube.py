"""YouTube-VOS / LVOS overall score: the mean of J_seen, F_seen, J_unseen and F_unseen."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _object_value(value: float | Sequence[float] | np.ndarray) -> float:
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim == 0:
        return float(arr)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"a per-object value must be a number or a non-empty 1-D sequence, got shape {arr.shape}")
    return float(arr.mean())


def youtube_vos_overall(
    j: Sequence[float | Sequence[float]],
    f: Sequence[float | Sequence[float]],
    seen: Sequence[bool],
) -> dict[str, float]:
    """Overall YouTube-VOS / LVOS score from per-object J and F and a seen/unseen flag per object.

    ``j[i]`` / ``f[i]``: object ``i``'s J / F, either a number (its mean over frames) or its per-frame
    values, shape ``(T_i,)`` (then averaged). ``seen[i]``: whether the object's category is a training
    ("seen") category. ``J_seen`` is the mean of the per-object J over seen objects, and so on;
    ``Overall = (J_seen + F_seen + J_unseen + F_unseen) / 4``. A group without objects gives ``nan``
    for its two scores and for ``Overall``.
    """
    if not (len(j) == len(f) == len(seen)):
        raise ValueError(f"j, f and seen must have the same length, got {len(j)}, {len(f)}, {len(seen)}")
    j_vals = np.array([_object_value(v) for v in j], dtype=np.float64)
    f_vals = np.array([_object_value(v) for v in f], dtype=np.float64)
    flags = np.array([bool(s) for s in seen], dtype=bool)

    def group_mean(values: np.ndarray, select: np.ndarray) -> float:
        return float(values[select].mean()) if select.any() else float("nan")

    out = {
        "J_seen": group_mean(j_vals, flags),
        "F_seen": group_mean(f_vals, flags),
        "J_unseen": group_mean(j_vals, ~flags),
        "F_unseen": group_mean(f_vals, ~flags),
    }
    out["Overall"] = (out["J_seen"] + out["F_seen"] + out["J_unseen"] + out["F_unseen"]) / 4
    return out

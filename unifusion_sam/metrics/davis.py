"""DAVIS-2017 semi-supervised statistics: per-frame J/F of label maps, per-object Mean/Recall/Decay.

Reproduces the official toolkit (davisvideochallenge/davis2017-evaluation): ``davis2017/utils.py``
``db_statistics``, ``davis2017/evaluation.py`` ``_evaluate_semisupervised`` / ``evaluate`` and
``evaluation_method.py``'s final table:

* objects of a video are the ids ``1..max(first ground-truth frame)``; the void label 255 is
  background in the ground truth; an object missing from the results scores as an empty mask (the
  toolkit pads with zeros); a result id above that range is an error (the toolkit aborts);
* per object: ``Mean = nanmean(v)``, ``Recall = mean(v > 0.5)``, ``Decay = nanmean(first bin) -
  nanmean(last bin)`` over 4 overlapping bins ``ids = round(linspace(1, n, 5) + 1e-10) - 1``,
  ``bin_i = v[ids[i] : ids[i + 1] + 1]``;
* dataset: ``J-Mean`` etc. are plain means over all objects; ``J&F-Mean = (J-Mean + F-Mean) / 2``.

One deliberate difference: the toolkit casts the bin ids to ``uint8``, which overflows from 256
evaluated frames on (at exactly 256 its Decay becomes nan); here they are ``int64``. Results are
identical for sequences of up to 255 evaluated frames, which covers every DAVIS sequence.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from ._checks import as_2d, check_same_shape
from .boundary import DEFAULT_BOUND_TH, boundary_f
from .region import jaccard

N_BINS = 4
VOID_LABEL = 255
SUMMARY_KEYS = ("J&F-Mean", "J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay")


def db_statistics(per_frame_values: np.ndarray) -> tuple[float, float, float]:
    """``(mean, recall, decay)`` of one object's per-frame values, shape ``(T,)``, T >= 1 (DAVIS)."""
    values = np.asarray(per_frame_values, dtype=np.float64)
    if values.ndim != 1 or values.size == 0:
        raise ValueError(f"per_frame_values must be a non-empty 1-D array, got shape {values.shape}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)
        mean = np.nanmean(values)
        recall = np.nanmean(values > 0.5)
        ids = (np.round(np.linspace(1, len(values), N_BINS + 1) + 1e-10) - 1).astype(np.int64)
        bins = [values[ids[i] : ids[i + 1] + 1] for i in range(N_BINS)]
        decay = np.nanmean(bins[0]) - np.nanmean(bins[3])
    return float(mean), float(recall), float(decay)


@dataclass(frozen=True)
class ObjectScores:
    """Per-frame scores of one object: ``j`` and ``f`` have shape ``(T,)`` (evaluated frames only)."""

    video: str
    object_id: int
    j: np.ndarray
    f: np.ndarray

    @property
    def name(self) -> str:
        """The toolkit's per-object key, ``"<video>_<object id>"``."""
        return f"{self.video}_{self.object_id}"


def clean_ground_truth(gt: np.ndarray, void_label: int | None = VOID_LABEL) -> np.ndarray:
    """Copy of an ``H x W`` ground-truth label map with the void label set to background (0)."""
    gt = np.array(as_2d(gt, "ground truth"), copy=True)
    if void_label is not None:
        gt[gt == void_label] = 0
    return gt


def count_objects(first_gt: np.ndarray, void_label: int | None = VOID_LABEL) -> int:
    """Number of objects of a video: the largest id in its first ``H x W`` ground-truth frame (void excluded)."""
    gt = clean_ground_truth(first_gt, void_label)
    return int(gt.max(initial=0))


def check_label_map(arr: np.ndarray, name: str) -> None:
    """Raise ``ValueError`` unless ``arr`` holds non-negative integer (or bool) labels."""
    if not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == np.bool_):
        raise ValueError(f"{name} must be an integer label map, got dtype {arr.dtype}")
    if arr.size and np.issubdtype(arr.dtype, np.signedinteger) and arr.min() < 0:
        raise ValueError(f"{name} has negative labels (min {arr.min()})")


def frame_scores(
    pred: np.ndarray,
    gt: np.ndarray,
    n_objects: int,
    *,
    bound_th: float = DEFAULT_BOUND_TH,
    void_label: int | None = VOID_LABEL,
) -> tuple[np.ndarray, np.ndarray]:
    """J and F of objects ``1..n_objects`` in one frame; returns two arrays of shape ``(n_objects,)``.

    ``pred`` and ``gt`` are ``H x W`` integer label maps (0 = background). Void pixels of the ground
    truth count as background; prediction ids above ``n_objects`` are ignored here (callers check them,
    as :class:`~unifusion_sam.metrics.VOSMeter` does). Raises ``ValueError`` naming both shapes when the
    sizes differ.
    """
    pred = as_2d(pred, "prediction")
    gt = as_2d(gt, "ground truth")
    check_same_shape(pred, gt)
    check_label_map(pred, "prediction")
    check_label_map(gt, "ground truth")
    gt = clean_ground_truth(gt, void_label)
    j = np.zeros(n_objects, dtype=np.float64)
    f = np.zeros(n_objects, dtype=np.float64)
    for k in range(n_objects):
        pred_k = pred == k + 1
        gt_k = gt == k + 1
        j[k] = jaccard(pred_k, gt_k)
        f[k] = boundary_f(pred_k, gt_k, bound_th)
    return j, f


def object_statistics(obj: ObjectScores) -> dict[str, float]:
    """``J-Mean, J-Recall, J-Decay, F-Mean, F-Recall, F-Decay`` of one object."""
    jm, jr, jd = db_statistics(obj.j)
    fm, fr, fd = db_statistics(obj.f)
    return {"J-Mean": jm, "J-Recall": jr, "J-Decay": jd, "F-Mean": fm, "F-Recall": fr, "F-Decay": fd}


def davis_summary(objects: Iterable[ObjectScores]) -> dict:
    """Dataset statistics over all objects, as the official DAVIS-2017 semi-supervised tool reports them.

    Returns ``{"J&F-Mean", "J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay"}`` as
    fractions, ``"per_object": {"<video>_<id>": {"J&F-Mean", "J-Mean", "F-Mean"}}`` and
    ``"num_objects"``. Raises ``ValueError`` when there are no objects, or two with the same key.
    """
    stats: dict[str, list[float]] = {key: [] for key in SUMMARY_KEYS[1:]}
    per_object: dict[str, dict[str, float]] = {}
    for obj in objects:
        if obj.name in per_object:
            raise ValueError(f"object {obj.name!r} appears twice")
        s = object_statistics(obj)
        for key, value in s.items():
            stats[key].append(value)
        per_object[obj.name] = {
            "J&F-Mean": (s["J-Mean"] + s["F-Mean"]) / 2,
            "J-Mean": s["J-Mean"],
            "F-Mean": s["F-Mean"],
        }
    if not per_object:
        raise ValueError("no objects were scored: nothing to summarise")
    summary: dict = {key: float(np.mean(values)) for key, values in stats.items()}
    summary = {"J&F-Mean": (summary["J-Mean"] + summary["F-Mean"]) / 2, **summary}
    summary["per_object"] = per_object
    summary["num_objects"] = len(per_object)
    return summary

"""Referring image segmentation benchmarks (RefCOCO / RefCOCO+ / RefCOCOg): predict every sentence and score.

Each sentence's mask is predicted at the original image size (``model.predict(image, text=...)``) and
compared with the referred object's mask; :class:`~unifusion_sam.metrics.RISMeter` gives oIoU, mIoU and
Prec@0.5..0.9. Sentences are split across ``accelerate`` processes; each process sends back its
per-sentence intersection / union counts and the main process accumulates them in reader order.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..data.io import DataError, load_rgb
from ..data.readers import RefCOCO
from ..data.types import ReferringExpression
from ..metrics import RISMeter, intersection_union
from .distributed import Gather, default_state, share

RIS_BENCHMARKS = ("refcoco", "refcoco+", "refcocog")


@dataclass
class SentenceOutcome:
    """One sentence's pixel counts (at the original resolution) and its ids."""

    index: int
    ref_id: str
    sent_id: int | None
    intersection: int
    union: int
    score: float


def open_ris_reader(root: str | os.PathLike, benchmark: str = "refcoco", split: str = "val", *,
                    image_dir: str | os.PathLike | None = None, split_by: str | None = None) -> RefCOCO:
    """The :class:`RefCOCO` reader of a split (``DataError`` naming a missing path, ``ValueError`` a bad split)."""
    if benchmark not in RIS_BENCHMARKS:
        raise ValueError(f"benchmark must be one of {list(RIS_BENCHMARKS)}, got {benchmark!r}")
    if not Path(root).is_dir():
        raise DataError(f"refer data root not found (or not a folder): {root}")
    return RefCOCO(root, benchmark, split, split_by=split_by, image_dir=image_dir)


def predict_sentence(model, record: ReferringExpression):
    """The model's prediction (``.mask`` H x W bool at the image size, ``.score``) for one sentence."""
    image = record.image if not isinstance(record.image, (str, os.PathLike)) else load_rgb(record.image)
    return model.predict(image, text=record.sentence)


def run_ris(model, reader, *, state=None, gather: Gather | None = None, progress: bool = True) -> list | None:
    """Predict every sentence of ``reader`` (split across processes); main process: the outcomes in order."""
    state = state or default_state()

    def one(index: int) -> SentenceOutcome:
        record = reader[index]
        pred = predict_sentence(model, record)
        inter, union = intersection_union(pred.mask, record.mask)
        return SentenceOutcome(index, record.ref_id, record.meta.get("sent_id"), inter, union, pred.score)

    return share(range(len(reader)), state, one, gather=gather, progress=progress, desc="sentences", unit="sent")


def ris_meter(outcomes: list[SentenceOutcome]) -> RISMeter:
    """A :class:`RISMeter` holding the gathered sentences."""
    meter = RISMeter()
    for o in outcomes:
        meter.update_counts(o.intersection, o.union)
    return meter


def evaluate_ris(
    model,
    root: str | os.PathLike,
    benchmark: str = "refcoco",
    split: str = "val",
    *,
    image_dir: str | os.PathLike | None = None,
    split_by: str | None = None,
    reader=None,
    state=None,
    gather: Gather | None = None,
    progress: bool = True,
) -> dict | None:
    """oIoU, mIoU, Prec@X (fractions) of ``model`` on a RefCOCO-family split; ``None`` off the main process.

    ``reader``: the split's :class:`RefCOCO` reader when already opened (see :func:`open_ris_reader`)."""
    if reader is None:
        reader = open_ris_reader(root, benchmark, split, image_dir=image_dir, split_by=split_by)
    outcomes = run_ris(model, reader, state=state, gather=gather, progress=progress)
    if outcomes is None:
        return None
    summary = ris_meter(outcomes).compute()
    return {"benchmark": reader.dataset, "split": reader.split, "split_by": reader.split_by, **summary}


def format_ris_table(summary: dict) -> str:
    """The RIS scores as a two-line table, in percent."""
    keys = [k for k in summary if k in ("oIoU", "mIoU") or k.startswith("Prec@")]
    width = max(8, *(len(k) for k in keys))
    return "\n".join([
        "  ".join(f"{k:>{width}}" for k in keys),
        "  ".join(f"{100 * summary[k]:>{width}.2f}" for k in keys),
    ])

"""FSS-1000 few-shot segmentation: seeded K-shot episodes, per-class foreground IoU and FB-IoU.

Each episode's query mask is predicted from its K support pairs
(``model.predict(query, ref_images=supports, ref_masks=masks)``) at the query's original size, and
its foreground / background counts go to :class:`~unifusion_sam.metrics.FSSMeter`. Episodes are
split across ``accelerate`` processes and gathered in reader order on the main process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..data.io import DataError, load_rgb
from ..data.readers import FSS1000
from ..data.types import FewShotEpisode
from ..metrics import FSSMeter
from .distributed import Gather, default_state, share


@dataclass
class EpisodeOutcome:
    """One episode's foreground / background intersection and union pixel counts."""

    index: int
    episode_id: str
    class_name: str
    fg_inter: int
    fg_union: int
    bg_inter: int
    bg_union: int


def open_fss_reader(root: str | os.PathLike, *, shot: int = 1, split: str = "test",
                    episodes_per_class: int | None = None, seed: int = 0,
                    split_file: str | os.PathLike | None = None) -> FSS1000:
    """The seeded :class:`FSS1000` episodes (``DataError`` naming a missing path)."""
    if not Path(root).is_dir():
        raise DataError(f"FSS-1000 root not found (or not a folder): {root}")
    return FSS1000(root, split, shot=shot, episodes_per_class=episodes_per_class, seed=seed, split_file=split_file)


def _rgb(image):
    return load_rgb(image) if isinstance(image, (str, os.PathLike)) else image


def predict_episode(model, episode: FewShotEpisode):
    """The model's prediction (``.mask`` at the query size) from the episode's support pairs."""
    return model.predict(_rgb(episode.query_image), ref_images=[_rgb(im) for im in episode.support_images],
                         ref_masks=list(episode.support_masks))


def episode_counts(pred: np.ndarray, gt: np.ndarray) -> tuple[int, int, int, int]:
    """``(fg_inter, fg_union, bg_inter, bg_union)`` of two ``H x W`` masks."""
    p, g = np.asarray(pred, dtype=bool), np.asarray(gt, dtype=bool)
    if p.shape != g.shape:
        raise ValueError(f"prediction shape {p.shape} and ground-truth shape {g.shape} differ")
    return (int(np.count_nonzero(p & g)), int(np.count_nonzero(p | g)),
            int(np.count_nonzero(~p & ~g)), int(np.count_nonzero(~p | ~g)))


def run_fss(model, reader, *, state=None, gather: Gather | None = None, progress: bool = True) -> list | None:
    """Predict every episode of ``reader`` (split across processes); main process: the outcomes in order."""
    state = state or default_state()

    def one(index: int) -> EpisodeOutcome:
        episode = reader[index]
        pred = predict_episode(model, episode)
        return EpisodeOutcome(index, episode.episode_id, episode.class_name, *episode_counts(pred.mask, episode.query_mask))

    return share(range(len(reader)), state, one, gather=gather, progress=progress, desc="episodes", unit="episode")


def fss_meter(outcomes: list[EpisodeOutcome]) -> FSSMeter:
    """An :class:`FSSMeter` holding the gathered episodes."""
    meter = FSSMeter()
    for o in outcomes:
        meter.update_counts(o.class_name, o.fg_inter, o.fg_union, o.bg_inter, o.bg_union)
    return meter


def evaluate_fss(
    model,
    root: str | os.PathLike,
    *,
    shot: int = 1,
    split: str = "test",
    episodes_per_class: int | None = None,
    seed: int = 0,
    split_file: str | os.PathLike | None = None,
    reader=None,
    state=None,
    gather: Gather | None = None,
    progress: bool = True,
) -> dict | None:
    """``mIoU``, ``FB-IoU`` and per-class IoU (fractions) of ``model`` on FSS-1000; ``None`` off the main process.

    ``reader``: the :class:`FSS1000` reader when already opened (then the episode options are its own)."""
    if reader is None:
        reader = open_fss_reader(root, shot=shot, split=split, episodes_per_class=episodes_per_class, seed=seed,
                                 split_file=split_file)
    outcomes = run_fss(model, reader, state=state, gather=gather, progress=progress)
    if outcomes is None:
        return None
    summary = fss_meter(outcomes).compute()
    return {"benchmark": "fss1000", "split": reader.split, "shot": reader.shot, "seed": reader.seed,
            "episodes_per_class": reader.episodes_per_class, **summary}


def format_fss_table(summary: dict, *, per_class: bool = False) -> str:
    """The FSS scores (percent), optionally followed by one line per class."""
    lines = [f"{'mIoU':>8}  {'FB-IoU':>8}  {'classes':>8}  {'episodes':>8}",
             f"{100 * summary['mIoU']:>8.2f}  {100 * summary['FB-IoU']:>8.2f}  {summary['num_classes']:>8d}  "
             f"{summary['num_episodes']:>8d}"]
    if per_class:
        items = summary["per_class_iou"].items()
        width = max(len("class"), *(len(str(c)) for c, _ in items))
        lines += ["", f"{'class':<{width}}  {'IoU':>8}"]
        lines += [f"{str(c):<{width}}  {100 * v:>8.2f}" for c, v in items]
    return "\n".join(lines)

"""Held-out evaluation on the synthetic data, with the library's own metrics (one implementation).

Scores RIS (mIoU, oIoU), FSS (mIoU), VOS (J&F, DAVIS protocol: first and last frames not scored)
and RVOS (J&F of each expression's track) of a model of either family, and optionally writes overlay
PNGs and a GIF of one tracked video. :func:`score_videos` scores the videos alone, with the video
session's reference switches (``mask_refs``, ``rvos_refs``) for the paper's ablations
(``benchmarks/paper_ablations.py``).
"""

from __future__ import annotations

import os
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..data.synthetic import SyntheticConfig, SyntheticDataset
from ..inference.session import MASK_REFS, RVOS_REFS, check_refs
from ..metrics import FSSMeter, RISMeter, VOSMeter

VIDEO_TASKS = ("vos", "rvos")


def _datasets(config: SyntheticConfig, n_images: int, n_videos: int):
    return (
        SyntheticDataset("heldout", "ris", n_images, config),
        SyntheticDataset("heldout", "fss", n_images, config),
        SyntheticDataset("heldout", "vos", n_videos, config),
    )


@torch.no_grad()
def evaluate_synthetic(
    model,
    config: SyntheticConfig,
    *,
    n_images: int = 48,
    n_videos: int = 12,
    out_dir: str | os.PathLike | None = None,
    progress: bool = True,
) -> dict[str, float]:
    """Returns ``ris_miou``, ``ris_oiou``, ``fss_miou``, ``vos_jf``, ``rvos_jf`` as fractions.

    With ``out_dir``, also writes ``overlays/ris_*.png``, ``overlays/fss_*.png`` and
    ``tracked_video.gif`` (the first held-out video tracked from its first-frame masks).
    """
    was_training = model.training
    model.eval()
    ris_ds, fss_ds, vid_ds = _datasets(config, n_images, n_videos)
    ris, fss = RISMeter(), FSSMeter()
    overlays = []
    bar = tqdm(total=2 * n_images + n_videos, desc="evaluate", disable=not progress, leave=False)
    for i in range(n_images):
        rec = ris_ds.scene(i)
        pred = model.predict(rec.image, text=rec.sentence)
        ris.update(pred.mask, rec.mask)
        if i < 4:
            overlays.append(("ris", i, rec.image, pred.mask, rec.sentence))
        bar.update()
    for i in range(n_images):
        ep = fss_ds.episode(i)
        pred = model.predict(ep.query_image, ref_images=ep.support_images, ref_masks=ep.support_masks)
        fss.update(pred.mask, ep.query_mask, ep.class_name)
        if i < 4:
            overlays.append(("fss", i, ep.query_image, pred.mask, f"1-shot: {ep.class_name}"))
        bar.update()
    videos, gif_frames = _score_videos(model, vid_ds, n_videos, bar=bar, keep_first=True)
    bar.close()
    r, f = ris.compute(), fss.compute()
    metrics = {
        "ris_miou": float(r["mIoU"]),
        "ris_oiou": float(r["oIoU"]),
        "fss_miou": float(f["mIoU"]),
        **videos,
    }
    if out_dir is not None:
        _write_pictures(Path(out_dir), overlays, gif_frames)
    model.train(was_training)
    return metrics


@torch.no_grad()
def score_videos(
    model,
    config: SyntheticConfig,
    *,
    n_videos: int = 12,
    mask_refs: str = "first+previous",
    rvos_refs: str = "language+mask",
    tasks: tuple[str, ...] = VIDEO_TASKS,
    progress: bool = True,
) -> dict[str, float]:
    """J&F (fractions) of the first ``n_videos`` held-out synthetic videos of ``config``, exactly as
    :func:`evaluate_synthetic` scores them (VOS: ``sigma="davis"``, DAVIS protocol; RVOS: one track per
    expression, ``sigma="rvos"``), with the video session's reference switches ``mask_refs`` (one of
    ``MASK_REFS``) and ``rvos_refs`` (one of ``RVOS_REFS``). ``tasks``: a subset of ``("vos", "rvos")``.
    Returns ``{"vos_jf": ..., "rvos_jf": ...}`` (the keys of ``tasks``)."""
    check_refs("mask_refs", mask_refs, MASK_REFS)
    check_refs("rvos_refs", rvos_refs, RVOS_REFS)
    tasks = tuple(tasks)
    if not tasks or any(t not in VIDEO_TASKS for t in tasks):
        raise ValueError(f"tasks must be a non-empty subset of {list(VIDEO_TASKS)}, got {tasks!r}")
    if isinstance(n_videos, bool) or not isinstance(n_videos, int) or n_videos < 1:
        raise ValueError(f"n_videos must be a positive int, got {n_videos!r}")
    was_training = model.training
    model.eval()
    dataset = SyntheticDataset("heldout", "vos", n_videos, config)
    bar = tqdm(total=n_videos, desc=f"{'+'.join(tasks)} {mask_refs} / {rvos_refs}", disable=not progress, leave=False)
    try:
        scores, _ = _score_videos(model, dataset, n_videos, bar=bar, mask_refs=mask_refs, rvos_refs=rvos_refs,
                                  tasks=tasks)
    finally:
        bar.close()
        model.train(was_training)
    return scores


def _score_videos(model, dataset: SyntheticDataset, n_videos: int, *, bar, keep_first: bool = False,
                  mask_refs: str = "first+previous", rvos_refs: str = "language+mask",
                  tasks: tuple[str, ...] = VIDEO_TASKS):
    """The video loop of :func:`evaluate_synthetic` and :func:`score_videos`: ``({"vos_jf", "rvos_jf"} of
    ``tasks``, (frames, label maps) of the first video's VOS track or ``None``)``."""
    vos, rvos = VOSMeter(), VOSMeter()
    gif_frames = None
    for i in range(n_videos):
        video = dataset.video(i)
        cache = getattr(getattr(model, "predictor", None), "cache", None)
        with cache.holding(len(video.frames)) if cache is not None else nullcontext():  # every track reuses the clip
            gif_frames = _score_video(model, video, i, vos, rvos, keep_first, mask_refs, rvos_refs, tasks, gif_frames)
        bar.update()
    scores = {}
    if "vos" in tasks:
        scores["vos_jf"] = float(vos.compute()["J&F-Mean"])
    if "rvos" in tasks:
        scores["rvos_jf"] = float(rvos.compute()["J&F-Mean"])
    return scores, gif_frames


def _score_video(model, video, i, vos, rvos, keep_first, mask_refs, rvos_refs, tasks, gif_frames):
    """One held-out video into the meters: a VOS track of all its objects and an RVOS track per
    expression. Returns the GIF frames (set from the first video when ``keep_first``)."""
    labels = [np.asarray(video.annotations[t]) for t in range(len(video.frames))]
    if "vos" in tasks:
        n_obj = max(video.object_ids)
        first = {k: labels[f] == k for k, f in video.first_frame.items() if f == 0}
        late = {}
        for k, f in video.first_frame.items():
            if f > 0:
                late.setdefault(f, {})[k] = labels[f] == k
        vos.start_video(video.name, n_objects=n_obj)
        track = []
        for t, result in enumerate(model.track(video.frames, masks=first, new_objects=late, sigma="davis",
                                               mask_refs=mask_refs, rvos_refs=rvos_refs)):
            vos.update(video.name, result.label_map, labels[t])
            if i == 0 and keep_first:
                track.append(result.label_map)
        if i == 0 and keep_first:
            gif_frames = (video.frames, track)
    if "rvos" in tasks:  # every expression tracked as if alone, all in one batched pass over the clip
        exps = sorted(video.expressions.items())
        texts = {j + 1: sentence for j, (_, (_, sentence)) in enumerate(exps)}
        names = [f"{video.name}_{exp_id}" for exp_id, _ in exps]
        for name in names:
            rvos.start_video(name, n_objects=1)
        for t, result in enumerate(model.track(video.frames, text=texts, sigma="rvos", mask_refs=mask_refs,
                                               rvos_refs=rvos_refs, independent=True)):
            for j, (name, (_, (obj, _))) in enumerate(zip(names, exps)):
                rvos.update(name, result.masks[j + 1].astype(np.uint8), (labels[t] == obj).astype(np.uint8))
    return gif_frames


def _write_pictures(out: Path, overlays, gif_frames) -> None:
    try:
        from ..visualize import save_overlay, track_to_gif
    except ImportError:  # pragma: no cover - visualize ships with the library
        return
    (out / "overlays").mkdir(parents=True, exist_ok=True)
    for task, i, image, mask, caption in overlays:
        save_overlay(out / "overlays" / f"{task}_{i}.png", image, mask, caption=caption)
    if gif_frames is not None:
        frames, labels = gif_frames
        track_to_gif(out / "tracked_video.gif", frames, labels)

"""Held-out evaluation on the synthetic data, with the library's own metrics (one implementation).

Scores RIS (mIoU, oIoU), FSS (mIoU), VOS (J&F, DAVIS protocol: first and last frames not scored)
and RVOS (J&F of each expression's track) of a UniFusion-SAM model, and optionally writes overlay
PNGs and a GIF of one tracked video.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..data.synthetic import SyntheticConfig, SyntheticDataset
from ..metrics import FSSMeter, RISMeter, VOSMeter


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
    vos, rvos = VOSMeter(), VOSMeter()
    gif_frames = None
    for i in range(n_videos):
        video = vid_ds.video(i)
        labels = [np.asarray(video.annotations[t]) for t in range(len(video.frames))]
        n_obj = max(video.object_ids)
        first = {k: labels[f] == k for k, f in video.first_frame.items() if f == 0}
        late = {}
        for k, f in video.first_frame.items():
            if f > 0:
                late.setdefault(f, {})[k] = labels[f] == k
        vos.start_video(video.name, n_objects=n_obj)
        track = []
        for t, result in enumerate(model.track(video.frames, masks=first, new_objects=late, sigma="davis")):
            vos.update(video.name, result.label_map, labels[t])
            if i == 0:
                track.append(result.label_map)
        if i == 0:
            gif_frames = (video.frames, track)
        for exp_id, (obj, sentence) in sorted(video.expressions.items()):
            name = f"{video.name}_{exp_id}"
            rvos.start_video(name, n_objects=1)
            for t, result in enumerate(model.track(video.frames, text=sentence, sigma="rvos")):
                rvos.update(name, (result.label_map == 1).astype(np.uint8), (labels[t] == obj).astype(np.uint8))
        bar.update()
    bar.close()
    r, f, v, rv = ris.compute(), fss.compute(), vos.compute(), rvos.compute()
    metrics = {
        "ris_miou": float(r["mIoU"]),
        "ris_oiou": float(r["oIoU"]),
        "fss_miou": float(f["mIoU"]),
        "vos_jf": float(v["J&F-Mean"]),
        "rvos_jf": float(rv["J&F-Mean"]),
    }
    if out_dir is not None:
        _write_pictures(Path(out_dir), overlays, gif_frames)
    model.train(was_training)
    return metrics


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

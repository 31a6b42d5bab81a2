"""How much the matching initialisation of UniFusion speeds up learning from mask references.

Trains the tiny UniFusion-SAM adapter on synthetic VOS samples only (reference frame + mask ->
a later frame) with ``fusion.match_logit`` = 0 (PyTorch's default q/k initialisation) and with the
default (q = k projections, sharp feature matching), the same data and seed, then measures the
held-out one-step IoU (frame 0 with its ground-truth mask -> frame 1) of both and prints the ratio.

    python benchmarks/matching_init.py [--steps 150] [--batch-size 8]

Measured on the 2-core development machine: see the README's benchmark table.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from unifusion_sam.data.synthetic import SyntheticConfig, SyntheticDataset
from unifusion_sam.fusion import UniFusionConfig
from unifusion_sam.sam import build_sam, wrap_sam
from unifusion_sam.training import DataSource, MixtureDataset, build_source, collate, compute_loss, parameter_groups


def one_step_iou(model, videos: SyntheticDataset) -> float:
    """Mean IoU of frame 1 segmented from frame 0 and its ground-truth mask, over every object."""
    model.eval()
    ious = []
    with torch.no_grad():
        for i in range(len(videos)):
            video = videos.video(i)
            first, second = np.asarray(video.annotations[0]), np.asarray(video.annotations[1])
            for k in (k for k in np.unique(first) if k > 0):
                pred = model.predict(video.frames[1], ref_images=[video.frames[0]], ref_masks=[first == k]).mask
                gt = second == k
                ious.append((pred & gt).sum() / max((pred | gt).sum(), 1))
    return float(np.mean(ious))


def train_and_score(match_logit: float, steps: int, batch_size: int, videos: SyntheticDataset) -> tuple[float, float]:
    torch.manual_seed(0)
    model = wrap_sam(build_sam("tiny"), adapter="sam-tiny", fusion={"match_logit": match_logit})
    model.train()
    model.text_encoder.freeze()
    source = build_source(DataSource(kind="synthetic", task="vos"), 128, 0)
    data = MixtureDataset([source], [1.0], model.predictor.transform, length=steps * batch_size,
                          batch_size=batch_size, seed=0, stage="video")
    loader = torch.utils.data.DataLoader(data, batch_size=batch_size, collate_fn=collate, num_workers=1)
    optimizer = torch.optim.AdamW(parameter_groups(model, lr=1e-3, text_lr=0.0, weight_decay=0.05), lr=1e-3)
    tic = time.perf_counter()
    for batch in loader:
        loss = compute_loss(model, batch, None)["loss"]
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
    return one_step_iou(model, videos), time.perf_counter() - tic


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--videos", type=int, default=10)
    args = parser.parse_args()
    videos = SyntheticDataset("heldout", "vos", args.videos, SyntheticConfig(seed=1000, image_size=(128, 128)))
    plain, t0 = train_and_score(0.0, args.steps, args.batch_size, videos)
    matching, t1 = train_and_score(UniFusionConfig().match_logit, args.steps, args.batch_size, videos)
    print(f"one-step VOS IoU after {args.steps} steps of batch {args.batch_size}: "
          f"default init {plain:.3f} ({t0:.0f} s), matching init {matching:.3f} ({t1:.0f} s)")
    print(f"ratio matching / default: {matching / max(plain, 1e-9):.2f}")


if __name__ == "__main__":
    main()

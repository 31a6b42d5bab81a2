"""How much UniFusion's initialisations speed up learning from mask references.

Trains the tiny UniFusion-SAM adapter on synthetic VOS samples only (reference frame + mask ->
a later frame), the same data and seed, three times: ``fusion.match_logit`` = 0 (PyTorch's default
q/k initialisation) without the locality prior; the matching initialisation (q = k projections,
sharp feature matching) without it; and the matching initialisation with the locality prior
(``fusion.mask_pos_logit``, the presets' value). Then it tracks frame 0 (ground-truth masks) -> 1 of
held-out videos with ``model.track`` and prints the one-step IoU of each and the ratios.

    python benchmarks/matching_init.py [--steps 150] [--batch-size 8]

Measured on the 2-core development machine: see the benchmark table of docs/results/benchmarks.md.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from unifusion_sam.data.synthetic import SyntheticConfig, SyntheticDataset
from unifusion_sam.fusion import UniFusionConfig
from unifusion_sam.sam import build_sam, load_preset, wrap_sam
from unifusion_sam.sam.training import SamSamplePrep, collate_sam, sam_loss, sam_parameter_groups
from unifusion_sam.training import DataSource, MixtureDataset, build_source


def one_step_iou(model, videos: SyntheticDataset) -> float:
    """Mean IoU of frame 1 tracked from frame 0 and its ground-truth masks, over every object."""
    ious = []
    for i in range(len(videos)):
        video = videos.video(i)
        first, second = np.asarray(video.annotations[0]), np.asarray(video.annotations[1])
        ids = [int(k) for k in np.unique(first) if k > 0]
        # sigma -inf: every mask counts, whatever its score (this measures the masks, not the scores)
        *_, result = model.track(video.frames[:2], masks={k: first == k for k in ids}, sigma=float("-inf"))
        for k in ids:
            pred, gt = result.label_map == k, second == k
            ious.append((pred & gt).sum() / max((pred | gt).sum(), 1))
    return float(np.mean(ious))


def train_and_score(match_logit: float, pos_logit: float, steps: int, batch_size: int,
                    videos: SyntheticDataset) -> tuple[float, float]:
    torch.manual_seed(0)
    fusion = {"match_logit": match_logit, "mask_pos_logit": pos_logit}
    model = wrap_sam(build_sam("tiny"), adapter="sam-tiny", fusion=fusion)
    model.train()
    model.text_encoder.freeze()
    source = build_source(DataSource(kind="synthetic", task="vos"), 128, 0)
    data = MixtureDataset([source], [1.0], SamSamplePrep(model.transform), length=steps * batch_size,
                          batch_size=batch_size, seed=0, stage="video")
    loader = torch.utils.data.DataLoader(data, batch_size=batch_size, collate_fn=collate_sam, num_workers=1)
    optimizer = torch.optim.AdamW(sam_parameter_groups(model, lr=1e-3, text_lr=0.0, weight_decay=0.05), lr=1e-3)
    tic = time.perf_counter()
    for batch in loader:
        loss = sam_loss(model, batch, None)["loss"]
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
    match, pos = UniFusionConfig().match_logit, load_preset("sam-tiny").fusion.mask_pos_logit
    plain, t0 = train_and_score(0.0, 0.0, args.steps, args.batch_size, videos)
    matching, t1 = train_and_score(match, 0.0, args.steps, args.batch_size, videos)
    local, t2 = train_and_score(match, pos, args.steps, args.batch_size, videos)
    print(f"one-step VOS IoU after {args.steps} steps of batch {args.batch_size}: default init {plain:.3f} "
          f"({t0:.0f} s), matching init {matching:.3f} ({t1:.0f} s), + locality prior {local:.3f} ({t2:.0f} s)")
    print(f"ratio matching / default: {matching / max(plain, 1e-9):.2f}; "
          f"ratio matching + locality / matching: {local / max(matching, 1e-9):.2f}")


if __name__ == "__main__":
    main()

"""What limits a trained full UniRef++ model on VOS: its mask references and its query ranking.

Loads a finished run of ``recipes/train_uniref.py`` (``<run>/model``, e.g. ``outputs/uniref_default``
after ``make demo-uniref``) and, on the first ``--videos`` held-out synthetic videos (the split the
recipe evaluates on: its ``eval_seed``):

- **reference sensitivity**: the mask references of two objects of the same frame, relative difference
  of their UniFusion values per level (keys are the frame's visual features, the same for both): near
  0 means the mask encoder ignores the mask and every object of a frame gets the same reference;
- **query ranking**: each object of frame 0 as the only reference, frames 3 and 6 segmented: the mean
  mask IoU of the query the model chooses (top class score) and of the best of its queries (oracle),
  and the median rank of the best query by class score (0 = chosen).

    python benchmarks/uniref_queries.py --run outputs/uniref_default [--videos 8]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import unifusion_sam
from unifusion_sam.data.synthetic import SyntheticConfig, SyntheticDataset
from unifusion_sam.interface import ObjectQuery
from unifusion_sam.metrics.region import jaccard


@torch.no_grad()
def diagnose(model, dataset: SyntheticDataset, n_videos: int, frames=(3, 6)) -> dict:
    sensitivity, chosen, oracle, rank = [], [], [], []
    for i in range(n_videos):
        video = dataset.video(i)
        labels = [np.asarray(video.annotations[t]) for t in range(len(video.frames))]
        first = model.prepare_image(np.asarray(video.frames[0]), "video")
        first_features = model.encode_frame(first)
        ids = [k for k, f in sorted(video.first_frame.items()) if f == 0]
        refs = {k: model.encode_masks([first_features], [first], model.prepare_mask(labels[0] == k, first)[None])[0]
                for k in ids}
        if len(ids) >= 2:
            a, b = refs[ids[0]], refs[ids[1]]
            sensitivity.append([float((x.values - y.values).norm() / x.values.norm()) for x, y in zip(a.levels, b.levels)])
        for t in frames:
            if t >= len(video.frames):
                continue
            prepared = model.prepare_image(np.asarray(video.frames[t]), "video")
            features = model.encode_frame(prepared)
            h, w = prepared.input_size
            for k in ids:
                decoded, det, rows = model.run_objects(features, [ObjectQuery(masks=[refs[k]])], "video")
                logits = model.mask_logits(model.mask_features_of(det, rows), det, rows)[0]  # [Q, Hp/4, Wp/4]
                logits = F.interpolate(logits[None], scale_factor=4, mode="bilinear", align_corners=False)[0, :, :h, :w]
                target = torch.from_numpy(labels[t] == k)[None, None].float()
                target = F.interpolate(target, size=(h, w), mode="nearest")[0, 0] > 0.5
                ious = np.array([jaccard(m, target.numpy()) for m in (logits > 0).numpy()])  # each query's mask
                scores = det.logits.sigmoid()[0].max(-1).values.numpy()
                q = int(decoded.extras["query"][0])
                chosen.append(float(ious[q]))
                oracle.append(float(ious.max()))
                rank.append(int((scores > scores[ious.argmax()]).sum()))
    levels = np.mean(sensitivity, axis=0).tolist() if sensitivity else []
    return {"reference_difference_per_level": levels, "chosen_iou": float(np.mean(chosen)),
            "oracle_iou": float(np.mean(oracle)), "median_rank_of_best": float(np.median(rank)),
            "queries": int(model.config.num_queries), "segmentations": len(chosen)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", default="outputs/uniref_default", help="a finished train_uniref.py run folder")
    parser.add_argument("--videos", type=int, default=8)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    run = Path(args.run)
    model = unifusion_sam.from_pretrained(run).eval()
    config = json.loads((run / "run_config.json").read_text())
    size = int(config.get("synthetic_image_size", 128))
    seed = int(config.get("eval_seed", 1000))
    dataset = SyntheticDataset("heldout", "vos", args.videos, SyntheticConfig(seed=seed, image_size=(size, size)))
    result = diagnose(model, dataset, args.videos)
    diff = ", ".join(f"{d:.3f}" for d in result["reference_difference_per_level"])
    print(f"{run}: {result['segmentations']} segmentations of {args.videos} held-out videos, {result['queries']} queries")
    print(f"two objects' mask references, relative difference of their values per level: {diff}")
    print(f"mean IoU of the chosen query {result['chosen_iou']:.3f}, of the best query {result['oracle_iou']:.3f}; "
          f"median rank of the best query by class score {result['median_rank_of_best']:.1f} (0 = chosen)")


if __name__ == "__main__":
    main()

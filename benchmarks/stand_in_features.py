"""What the stand-in SAMs' frozen image encoders know: the random tiny ViT and the pretrained Lite0.

A linear probe (logistic regression on the frozen ``[256]`` embedding of each 16 x 16 patch) is fitted
on patches of training-split synthetic scenes and scored on others: the colour and the shape class of
the object covering most of a patch. For each ``--sam`` (default: ``tiny`` then ``lite0``) the probe's
foreground accuracy is printed before and after ``--steps`` of stand-in pre-training (the recipe's
``stand_in`` block: the whole random ViT trains; only Lite0's neck trains, on its frozen ImageNet
backbone; with ``--decoder_weight``, as in the default run, SAM's prompt encoder and mask decoder learn
point prompts in the same steps), then a side-by-side table (shape class chance: 1 in 6).

    python benchmarks/stand_in_features.py --steps 100 [--decoder_weight 1.0]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F

from unifusion_sam.data.synthetic import SyntheticConfig, SyntheticDataset
from unifusion_sam.data.synthetic.shapes import COLOURS, SHAPE_CLASSES
from unifusion_sam.sam import build_sam
from unifusion_sam.sam.backends import make_backend
from unifusion_sam.sam.backends.transforms import SamTransform
from unifusion_sam.sam.builders.stand_in import StandInConfig, pretrain_image_encoder


def patch_data(sam, scenes: SyntheticDataset, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Frozen patch embeddings ``[N, 256]`` and per-patch colour / shape labels ``[N]`` (0 = background)."""
    transform = SamTransform(sam.image_encoder.img_size, sam.pixel_mean, sam.pixel_std)
    xs, colours, shapes = [], [], []
    with torch.no_grad():
        for i in range(n):
            rec = scenes.scene(i)
            ids = torch.from_numpy(rec.meta["label_map"].astype(np.int64))
            features = sam.image_encoder(transform.image(rec.image).pixels)  # [1, D, g, g]
            emb = make_backend(sam).image_embedding(features)[0]  # [256, g, g] (lite0_hr: without its maps)
            share = F.adaptive_avg_pool2d(F.one_hot(ids, int(ids.max()) + 1).permute(2, 0, 1).float()[None],
                                          emb.shape[-2:])[0]
            major = share.argmax(0).flatten()
            colour = torch.zeros(int(ids.max()) + 1, dtype=torch.long)
            shape = torch.zeros_like(colour)
            for obj in rec.meta["objects"]:
                colour[obj["id"]] = 1 + list(COLOURS).index(obj["colour"])
                shape[obj["id"]] = 1 + list(SHAPE_CLASSES).index(obj["shape"])
            xs.append(emb.flatten(1).T)
            colours.append(colour[major])
            shapes.append(shape[major])
    return torch.cat(xs), torch.cat(colours), torch.cat(shapes)


def probe(x: torch.Tensor, y: torch.Tensor, split: int) -> float:
    """Foreground accuracy of a linear classifier fitted on the first ``split`` rows."""
    mean, std = x[:split].mean(0), x[:split].std(0) + 1e-6
    x = (x - mean) / std
    lin = torch.nn.Linear(x.shape[1], int(y.max()) + 1)
    opt = torch.optim.Adam(lin.parameters(), lr=1e-2)
    for _ in range(300):
        loss = F.cross_entropy(lin(x[:split]), y[:split])
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        pred, truth = lin(x[split:]).argmax(1), y[split:]
        fg = truth > 0
        return float((pred[fg] == truth[fg]).float().mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=200, help="stand-in pre-training steps")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=StandInConfig.lr)
    parser.add_argument("--decoder_weight", type=float, default=1.0,
                        help="the decoder term's weight (the default run's; 0: the encoder alone)")
    parser.add_argument("--scenes", type=int, default=300, help="probe scenes (3/4 fit, 1/4 scored)")
    parser.add_argument("--sam", nargs="+", default=["tiny", "lite0"], help="stand-in SAM sizes to compare")
    args = parser.parse_args()
    syn = SyntheticConfig(seed=0, image_size=(128, 128))
    probe_scenes = SyntheticDataset("train", "ris", args.scenes, SyntheticConfig(seed=5, image_size=(128, 128)))
    results = {}
    for size in args.sam:
        torch.manual_seed(0)
        sam = build_sam(size)
        for stage in ("as built", "stand-in trained"):
            if stage == "stand-in trained":
                tic = time.perf_counter()
                pretrain_image_encoder(sam, syn, StandInConfig(steps=args.steps, batch_size=args.batch_size,
                                                               lr=args.lr, decoder_weight=args.decoder_weight),
                                       progress=False)
                print(f"{size}: stand-in pre-training, {args.steps} steps of {args.batch_size} scenes in "
                      f"{time.perf_counter() - tic:.0f} s")
            x, colour, shape = patch_data(sam, probe_scenes, args.scenes)
            results[(size, stage)] = (probe(x, colour, int(0.75 * len(x))), probe(x, shape, int(0.75 * len(x))))
            print(f"{size} {stage}: linear probe, foreground patches: colour {results[(size, stage)][0]:.3f}, "
                  f"shape class {results[(size, stage)][1]:.3f}")
    print("\n| SAM | encoder | colour probe | shape-class probe |\n| --- | --- | --- | --- |")
    for (size, stage), (colour, shape) in results.items():
        print(f"| {size} | {stage} | {colour:.3f} | {shape:.3f} |")


if __name__ == "__main__":
    main()

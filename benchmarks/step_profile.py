"""Where a training step of the default run spends its time (issue 35): seconds per part of a step.

Builds the default run's model (``recipes/configs/default.yaml``: the Lite0 stand-in SAM, without its
pre-training, which changes values, not cost), draws each stage's batches exactly as the run does
(:class:`~unifusion_sam.training.mixing.MixtureDataset`, one worker-free process) and times every part of
``--steps`` optimiser steps per stage, after ``--warmup`` untimed ones:

- ``data``: samples generated, augmented and prepared, and collated (in the run a DataLoader worker does this
  beside the training process);
- ``image encoder``: the frozen encoder on embedding-cache misses;
- ``text encoder``, ``mask encoder`` (the mask-reference encoder and its pooling), ``fusion + decoder``
  (UniFusion, SAM's prompt encoder and mask decoder), ``loss``;
- ``backward``, ``optimizer`` (zero-filled unused gradients, clipping, fused AdamW).

    python benchmarks/step_profile.py [--steps 30] [--warmup 5] [--config recipes/configs/default.yaml]
        [--stages video] [--threads 1] [--json out.json] [--set KEY=VALUE ...]

Prints a table (seconds per step and share) per stage; ``--json`` writes it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time
from collections import defaultdict
from pathlib import Path

import torch

from unifusion_sam.sam.training import SamTrainConfig, SamTrainFamily
from unifusion_sam.training import MixtureDataset, build_source
from unifusion_sam.training.config import apply_overrides

ROOT = Path(__file__).resolve().parents[1]
PARTS = ["data", "image encoder", "text encoder", "mask encoder", "fusion + decoder", "loss", "backward", "optimizer"]


class Clock:
    """Accumulates wall seconds per named part."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.on = False

    @contextlib.contextmanager
    def part(self, name: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            if self.on:
                self.seconds[name] += time.perf_counter() - start

    def wrap(self, obj, method: str, name: str) -> None:
        inner = getattr(obj, method)

        def timed(*args, **kwargs):
            with self.part(name):
                return inner(*args, **kwargs)

        setattr(obj, method, timed)


def profile_stage(family: SamTrainFamily, model, cfg: SamTrainConfig, name: str, stage, steps: int, warmup: int,
                  clock: Clock) -> dict[str, float]:
    sources = [build_source(d, cfg.synthetic_image_size, cfg.seed) for d in stage.data]
    family.start_stage(model, name, stage)
    total = steps + warmup
    data = MixtureDataset(sources, [d.ratio for d in stage.data], family.sample_prep(name, stage),
                          length=total * cfg.batch_size, batch_size=cfg.batch_size, seed=cfg.seed, stage=name,
                          flip_prob=cfg.flip_prob)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW([{"params": trainable}], lr=1e-4, fused=True)
    model.train()
    clock.seconds.clear()
    wall = 0.0
    for i in range(total):
        clock.on = i >= warmup
        start = time.perf_counter()
        with clock.part("data"):
            batch = family.collate([data[i * cfg.batch_size + j] for j in range(cfg.batch_size)])
        with clock.part("forward"):
            terms = family.loss(model, batch)
        with clock.part("backward"):
            terms["loss"].backward()
        with clock.part("optimizer"):
            for p in trainable:
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
            torch.nn.utils.clip_grad_norm_(trainable, cfg.max_grad_norm)
            optimizer.step()
            optimizer.zero_grad()
        if clock.on:
            wall += time.perf_counter() - start
    per = {k: v / steps for k, v in clock.seconds.items()}
    forward = per.pop("forward", 0.0)
    inner = sum(per.get(k, 0.0) for k in ("image encoder", "text encoder", "mask encoder", "fusion + decoder"))
    per["loss"] = max(forward - inner, 0.0)  # the rest of the forward: moving the batch, the loss terms
    per["step"] = wall / steps
    return per


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(ROOT / "recipes" / "configs" / "default.yaml"))
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="dotted config overrides")
    parser.add_argument("--stages", nargs="*", default=None, help="only these stages (default: all)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    cfg = SamTrainConfig.from_yaml(args.config)
    overrides = dict(kv.split("=", 1) for kv in args.set)
    cfg = apply_overrides(cfg, {"stand_in.steps": "0", **overrides})
    torch.manual_seed(cfg.seed)
    family = SamTrainFamily(cfg)
    from accelerate import Accelerator

    model, _ = family.build_model(Accelerator(cpu=True))
    family.setup(None, model)
    clock = Clock()
    clock.wrap(model, "encode_image", "image encoder")
    clock.wrap(model, "text_references", "text encoder")
    clock.wrap(model, "encode_mask_reference", "mask encoder")
    clock.wrap(model, "mask_references", "mask encoder")
    clock.wrap(model, "segment", "fusion + decoder")
    report = {"threads": torch.get_num_threads(), "steps": args.steps, "stages": {}}
    for name, stage in cfg.stages():
        if args.stages and name not in args.stages:
            continue
        per = profile_stage(family, model, cfg, name, stage, args.steps, args.warmup, clock)
        report["stages"][name] = per
        print(f"\n{name} stage: {per['step']:.3f} s per step ({args.steps} steps, {torch.get_num_threads()} threads)")
        for part in PARTS:
            v = per.get(part, 0.0)
            print(f"  {part:<18} {v:7.3f} s  {100 * v / per['step']:5.1f} %")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()

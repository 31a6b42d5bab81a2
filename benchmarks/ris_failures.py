"""Where a trained adapter fails on synthetic RIS: mIoU (``RISMeter``) and hit rate by what the sentence has to use.

Loads a finished run (``adapter/`` + ``sam_<size>.safetensors``, e.g. ``outputs/default`` after
``make demo``), predicts ``--n`` held-out sentences (the split the recipe evaluates on: its ``eval_seed``)
and groups them:

- by sentence kind: ``attribute`` ("the big purple object"), ``extreme`` ("the rightmost red
  thing"), ``relation`` ("the circle left of the blue star");
- by what tells the target from the other objects: its colour alone (no other object has it), or
  its shape but not its colour (another object shares the colour, none the shape).

A *hit* is a prediction whose most-covered object (share of that object's pixels inside the
predicted mask) is the target and is covered at least 30%. For the misses the table also counts
what the chosen object shares with the target (exact twins need position words).

    python benchmarks/ris_failures.py --run outputs/default --n 200
"""

from __future__ import annotations

import argparse
import json
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import torch

import unifusion_sam
from unifusion_sam.data.synthetic import SyntheticConfig, SyntheticDataset
from unifusion_sam.metrics import RISMeter

HIT_COVERAGE = 0.3


def groups_of(rec) -> list[str]:
    """The rows of the table this sentence counts in."""
    objs = {o["id"]: o for o in rec.meta["objects"]}
    target = objs[rec.meta["target_id"]]
    others = [o for k, o in objs.items() if k != target["id"]]
    out = [f"kind: {rec.meta['kind']}"]
    if all(o["colour"] != target["colour"] for o in others):
        out.append("colour alone names it")
    elif all(o["shape"] != target["shape"] for o in others):
        out.append("shape names it, colour does not")
    return out


def chosen_object(pred: np.ndarray, label_map: np.ndarray, ids: list[int]) -> tuple[int, float]:
    """The object with the largest share of its pixels inside ``pred``, and that share."""
    cover = {k: float((pred & (label_map == k)).sum()) / max(int((label_map == k).sum()), 1) for k in ids}
    best = max(cover, key=cover.get)
    return best, cover[best]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", default="outputs/default", help="a finished run's output folder")
    parser.add_argument("--n", type=int, default=200, help="held-out sentences")
    parser.add_argument("--image_size", type=int, default=128, help="the run's synthetic_image_size")
    parser.add_argument("--eval_seed", type=int, default=None,
                        help="the held-out split's seed (default: the run's run_config.json, else 1000)")
    args = parser.parse_args()
    run = Path(args.run)
    try:  # the run's adapter on the run's own SAM (sam_<size>.safetensors), found by the core loader
        model = unifusion_sam.from_pretrained(run)
    except (FileNotFoundError, ValueError) as exc:
        raise SystemExit(f"{exc}: run `make demo` (or the recipe) first") from exc
    seed = args.eval_seed
    if seed is None:
        own = run / "run_config.json"
        seed = json.loads(own.read_text()).get("eval_seed", 1000) if own.is_file() else 1000
    data = SyntheticDataset("heldout", "ris", args.n, SyntheticConfig(seed=seed, image_size=args.image_size))

    meters: dict[str, RISMeter] = defaultdict(RISMeter)
    hits: dict[str, list[bool]] = defaultdict(list)
    misses: Counter[str] = Counter()
    with torch.no_grad():
        for i in range(args.n):
            rec = data.scene(i)
            pred = model.predict(rec.image, text=rec.sentence).mask
            objs = {o["id"]: o for o in rec.meta["objects"]}
            best, cover = chosen_object(pred, rec.meta["label_map"], list(objs))
            hit = best == rec.meta["target_id"] and cover >= HIT_COVERAGE
            for name in ["all", *groups_of(rec)]:
                meters[name].update(pred, rec.mask)
                hits[name].append(hit)
            if hit:
                continue
            if cover < HIT_COVERAGE:
                misses["no object covered"] += 1
                continue
            a, b = objs[rec.meta["target_id"]], objs[best]
            shared = [k for k in ("colour", "shape", "size") if a[k] == b[k]]
            misses["shares " + (", ".join(shared) if shared else "nothing")] += 1

    print(f"{'sentences':<34} {'n':>4} {'mIoU':>6} {'hit':>6}")
    for name in sorted(meters, key=lambda k: (k != "all", k)):
        print(f"{name:<34} {len(hits[name]):>4} {meters[name].compute()['mIoU']:>6.3f} {np.mean(hits[name]):>6.2f}")
    print("\nmisses: what the chosen object shares with the target")
    for name, count in misses.most_common():
        print(f"  {count:>4}  {name}")


if __name__ == "__main__":
    main()

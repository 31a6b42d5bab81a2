"""Training throughput with the frozen-encoder embedding cache divided by without it (issue #5).

A vit_b-sized Meta SAM with random weights at input 512 (``--image-size``), the ``sam-vit-b`` adapter,
synthetic RIS + FSS + VOS batches drawn from a small fixed pool of images (as an epoch over a dataset
revisits its images). Both runs take the same steps on the same batches; the cached run is measured
after one warm-up pass over the pool has filled the cache (what every later epoch sees).

    python benchmarks/train_throughput.py [--image-size 512] [--steps 3] [--batch-size 2]

Prints samples/s of both and the ratio (goal: at least 5).
"""

from __future__ import annotations

import argparse
import time

import torch

from unifusion_sam.sam import build_sam, wrap_sam
from unifusion_sam.sam.training import SamEmbeddingCache, SamSamplePrep, collate_sam, sam_loss
from unifusion_sam.training import DataSource, MixtureDataset, build_source


def make_batches(model, steps: int, batch_size: int, pool: int) -> list:
    sources = [build_source(DataSource(task=t, options={"pool": pool}), 128, 0) for t in ("ris", "fss", "vos")]
    data = MixtureDataset(sources, [1, 1, 1], SamSamplePrep(model.transform), length=steps * batch_size,
                          batch_size=batch_size, seed=0, stage="bench", flip_prob=0.0)
    return [collate_sam([data[i * batch_size + j] for j in range(batch_size)]) for i in range(steps)]


def run(model, batches, cache, optimizer) -> float:
    """Seconds for one optimiser step per batch."""
    start = time.perf_counter()
    for batch in batches:
        loss = sam_loss(model, batch, cache)["loss"]
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image-size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--sam", default="vit_b")
    args = parser.parse_args()

    torch.manual_seed(0)
    model = wrap_sam(build_sam(args.sam, image_size=args.image_size), adapter="sam-vit-b",
                     text={"trainable": False}).train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    batches = make_batches(model, args.steps, args.batch_size, pool=args.steps * args.batch_size)
    samples = args.steps * args.batch_size

    run(model, batches[:1], None, optimizer)  # warm-up (kernels, allocator)
    uncached = run(model, batches, None, optimizer)
    cache = SamEmbeddingCache(capacity=10_000)
    run(model, batches, cache, optimizer)  # first epoch: fills the cache
    cached = run(model, batches, cache, optimizer)
    print(f"SAM {args.sam} at input {args.image_size}, batch {args.batch_size}, {args.steps} steps, "
          f"cache hits {cache.hits} / misses {cache.misses}")
    print(f"without cache: {samples / uncached:.3f} samples/s | with cache: {samples / cached:.3f} samples/s")
    print(f"ratio (with / without) = {uncached / cached:.2f}  (goal >= 5)")


if __name__ == "__main__":
    main()

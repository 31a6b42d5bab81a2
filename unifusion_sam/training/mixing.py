"""Multi-dataset mixing as a deterministic, map-style dataset.

Item ``g`` of a stage is a pure function of ``(seed, stage, g)``: its batch ``g // batch_size`` picks
one source with probability proportional to the sources' ratios (so a batch comes from one dataset),
and the item's own generator picks the record and its augmentation. Because of that, resuming at a
step is skipping the batches already seen, and ``accelerate`` shards the batches across processes
like any map-style dataset (process p takes batches p, p + N, ...).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from ..data.types import RefSample
from .sources import Source

SamplePrep = Callable[[RefSample, np.random.Generator, float], Any]
"""A family's per-sample transform (runs in data-loader workers, so it must pickle): ``(sample, rng,
flip_prob) -> prepared sample``; e.g. :class:`~unifusion_sam.sam.training.samples.SamSamplePrep`."""


def _rng(*parts: int | str) -> np.random.Generator:
    words = [p if isinstance(p, int) else zlib.crc32(p.encode()) for p in parts]
    return np.random.default_rng(np.random.SeedSequence(words))


class MixtureDataset(torch.utils.data.Dataset):
    """``length`` prepared samples drawn from ``sources`` with probabilities proportional to ``ratios``,
    each turned into the model family's tensors by ``prepare``."""

    def __init__(
        self,
        sources: list[Source],
        ratios: list[float],
        prepare: SamplePrep,
        *,
        length: int,
        batch_size: int,
        seed: int,
        stage: str,
        flip_prob: float = 0.5,
    ) -> None:
        if len(sources) != len(ratios) or not sources:
            raise ValueError(f"need one ratio per source, got {len(sources)} sources and {len(ratios)} ratios")
        total = float(sum(ratios))
        if total <= 0:
            raise ValueError(f"data ratios are all zero: {ratios}")
        self.sources = sources
        self.probs = np.asarray(ratios, dtype=np.float64) / total
        self.prepare = prepare
        self.length = length
        self.batch_size = batch_size
        self.seed = seed
        self.stage = stage
        self.flip_prob = flip_prob

    def __len__(self) -> int:
        return self.length

    def source_of_batch(self, batch_index: int) -> int:
        return int(_rng(self.seed, self.stage, "batch", batch_index).choice(len(self.sources), p=self.probs))

    def __getitem__(self, g: int):
        index = self.source_of_batch(g // self.batch_size)
        source = self.sources[index]
        rng = _rng(self.seed, self.stage, "item", int(g))
        sample = source.sample(rng)
        sample.meta["source"] = source.name
        sample.meta["source_index"] = index
        return self.prepare(sample, rng, self.flip_prob)

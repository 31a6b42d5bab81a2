"""Per-item random generators: every item is a pure function of ``(seed, split, stream, index)``."""

from __future__ import annotations

import numpy as np

SPLITS: tuple[str, ...] = ("train", "heldout")
_STREAMS = {"ris": 0, "fss": 1, "video": 2, "vos": 3, "rvos": 4, "examples": 5, "vos_examples": 6}


def item_rng(seed: int, split: str, stream: str, index: int) -> np.random.Generator:
    """Independent generator for one item, whatever else was generated before (order-independent)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {list(SPLITS)}, got {split!r}")
    if stream not in _STREAMS:
        raise ValueError(f"stream must be one of {list(_STREAMS)}, got {stream!r}")
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or index < 0:
        raise ValueError(f"index must be a non-negative int, got {index!r}")
    entropy = [int(seed), SPLITS.index(split), _STREAMS[stream], int(index)]
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(entropy)))

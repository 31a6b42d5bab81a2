"""The configuration of the stand-in SAM's pre-training (the ``stand_in`` section of the recipe's config)."""

from __future__ import annotations

from dataclasses import dataclass

from ....config import JsonConfig, check_positive_int


@dataclass
class StandInConfig(JsonConfig):
    """Pre-training of a random stand-in SAM's image encoder before wrapping (:mod:`.pretrain`):
    ``steps`` of AdamW (one-cycle schedule peaking at ``lr``) on batches of ``batch_size`` synthetic
    scenes; ``embed_dim`` is the width of the instance embedding, ``temperature`` its softmax
    temperature. ``steps: 0`` (the default) skips it; so does a ``sam_checkpoint`` (a real SAM is
    pretrained already): it is for random SAMs only."""

    steps: int = 0
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 0.05
    embed_dim: int = 16
    temperature: float = 0.1
    decoder_weight: float = 0.0

    def __post_init__(self) -> None:
        if isinstance(self.decoder_weight, bool) or not isinstance(self.decoder_weight, (int, float)) or self.decoder_weight < 0:
            raise ValueError(f"decoder_weight must be a number >= 0, got {self.decoder_weight!r}")
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 0:
            raise ValueError(f"steps must be an int >= 0, got {self.steps!r}")
        check_positive_int("batch_size", self.batch_size)
        check_positive_int("embed_dim", self.embed_dim)
        for name in ("lr", "temperature"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ValueError(f"{name} must be a number > 0, got {value!r}")
        if isinstance(self.weight_decay, bool) or not isinstance(self.weight_decay, (int, float)) or self.weight_decay < 0:
            raise ValueError(f"weight_decay must be a number >= 0, got {self.weight_decay!r}")

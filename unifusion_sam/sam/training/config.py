"""The UniFusion-SAM recipe's configuration: the shared run's fields (:class:`~unifusion_sam.training.config.RunConfig`)
plus which SAM, the stand-in pre-training, the adapter preset and the frozen-encoder embedding cache."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from ...training.config import DataSource, RunConfig
from ..builders.stand_in import StandInConfig


@dataclass
class SamTrainConfig(RunConfig):
    """The UniFusion-SAM recipe: which SAM (``sam``, ``sam_checkpoint``, ``sam_image_size``; a random one
    is first pre-trained by ``stand_in``), the adapter preset and its overrides, and the frozen-encoder
    embedding cache. ``stage`` picks ``image``, ``video`` or ``both`` (in sequence)."""

    sam: str = "tiny"
    sam_checkpoint: str | None = None
    sam_image_size: int | None = None
    stand_in: StandInConfig = field(default_factory=StandInConfig)
    adapter: str | None = None
    adapter_overrides: dict = field(default_factory=dict)
    embedding_cache: int = 4096
    # and at most this many GiB of them (SAM at 1024: 4 MiB an image, SAM 2: 16 MiB)
    embedding_cache_gb: float = 8.0

    def __post_init__(self) -> None:
        if isinstance(self.embedding_cache, bool) or not isinstance(self.embedding_cache, int) or self.embedding_cache < 0:
            raise ValueError(f"embedding_cache must be a non-negative int (images), got {self.embedding_cache!r}")
        if isinstance(self.embedding_cache_gb, bool) or not isinstance(self.embedding_cache_gb, (int, float)) \
                or self.embedding_cache_gb < 0:
            raise ValueError(f"embedding_cache_gb must be a non-negative number, got {self.embedding_cache_gb!r}")
        self.coerce_sections({"stand_in": StandInConfig})
        super().__post_init__()
        for name, stage in self.stages():
            if stage.min_sizes or stage.max_size or any(d.min_sizes or d.max_size for d in stage.data):
                raise ValueError(f"{name} stage: min_sizes / max_size (scale jitter) are for the full UniRef++ "
                                 f"model; a SAM takes images at its fixed input size")
        if self.sam_checkpoint is not None and not os.path.isfile(self.sam_checkpoint):
            raise FileNotFoundError(f"sam_checkpoint does not exist: {self.sam_checkpoint}")

    def check_source(self, stage: str, source: DataSource) -> None:
        if source.task == "det":
            raise ValueError(f"{stage} stage: detection data (task 'det', {source.kind}) trains the full UniRef++ "
                             f"model only (recipes/train_uniref.py)")

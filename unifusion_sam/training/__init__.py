"""Training: configs, data mixing, the embedding cache, the step, stand-in SAM pre-training and held-out evaluation."""

from .config import (
    DataSource,
    StageConfig,
    StandInConfig,
    TrainConfig,
    apply_overrides,
    flat_fields,
    resolve_mixed_precision,
)
from .engine import TrainEmbeddingCache, compute_loss, parameter_groups, warmup_step_schedule
from .evaluate import evaluate_synthetic
from .mixing import MixtureDataset
from .samples import PreparedSample, SamSamplePrep, TrainBatch, collate, prepare
from .sources import Source, build_source
from .stand_in import pretrain_image_encoder

__all__ = [
    "DataSource",
    "MixtureDataset",
    "PreparedSample",
    "SamSamplePrep",
    "Source",
    "StageConfig",
    "StandInConfig",
    "TrainBatch",
    "TrainConfig",
    "TrainEmbeddingCache",
    "apply_overrides",
    "build_source",
    "collate",
    "compute_loss",
    "evaluate_synthetic",
    "flat_fields",
    "parameter_groups",
    "pretrain_image_encoder",
    "prepare",
    "resolve_mixed_precision",
    "warmup_step_schedule",
]

"""The training engine every model family shares: ``run(config, family)`` (:mod:`.run`) owns a whole run, the
family plugs in through :class:`~.family.TrainFamily`.

- :mod:`.config`: :class:`~.config.RunConfig` (what every recipe config has), stages, data sources, YAML and
  dotted command-line overrides;
- :mod:`.sources` / :mod:`.mixing` / :mod:`.augment`: training records from synthetic data and the official
  dataset layouts, mixed in configured ratios, augmented;
- :mod:`.loop`: the step loop (accumulate, clip, atomic checkpoints, resume) and the config parser;
- :mod:`.run`: the run (accelerator, optimiser, schedule, trackers, evaluation, saving, ``metrics.json``).
"""

from .augment import augment, random_affine
from .config import DataSource, RunConfig, StageConfig, apply_overrides, flat_fields, resolve_mixed_precision
from .family import TrainFamily
from .loop import parse_config, stage_lambdas, train_stages, warmup_step_schedule
from .mixing import MixtureDataset
from .run import run
from .sources import Source, build_source

__all__ = [
    "DataSource",
    "MixtureDataset",
    "RunConfig",
    "Source",
    "StageConfig",
    "TrainFamily",
    "apply_overrides",
    "augment",
    "build_source",
    "flat_fields",
    "parse_config",
    "random_affine",
    "resolve_mixed_precision",
    "run",
    "stage_lambdas",
    "train_stages",
    "warmup_step_schedule",
]

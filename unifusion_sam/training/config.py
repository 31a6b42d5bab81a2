"""Training configuration shared by every family: dataclasses read from YAML, every field overridable from the
command line. A family's recipe config subclasses :class:`RunConfig` (e.g. ``SamTrainConfig``).

``SamTrainConfig.from_yaml(path)`` reads a recipe config; ``apply_overrides(cfg, {"optim.lr": "1e-4"})``
sets dotted fields with values parsed as YAML scalars; unknown keys are errors before training starts.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any, ClassVar

import yaml

from ..config import JsonConfig, check_choice, check_positive_int, check_probability, native_bf16

STAGES = ("image", "video")
SOURCE_KINDS = (
    "synthetic", "refcoco", "fss1000", "davis2017", "youtube_vos", "lvos", "mose", "ref_youtube_vos",
    "ref_davis17", "coco", "objects365", "ovis",
)
VIDEO_KINDS = ("davis2017", "youtube_vos", "lvos", "mose", "ref_youtube_vos", "ref_davis17", "ovis")


def check_sizes(where: str, min_sizes, max_size) -> tuple[tuple[int, ...], int | None]:
    """Validate a scale-jitter setting: a list of shorter-side sizes and an optional longer-side cap."""
    if isinstance(min_sizes, int) and not isinstance(min_sizes, bool):
        min_sizes = (min_sizes,)
    if not isinstance(min_sizes, (list, tuple)) or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0
                                                           for v in min_sizes):
        raise ValueError(f"{where}.min_sizes must be a list of positive ints, got {min_sizes!r}")
    if max_size is not None and (isinstance(max_size, bool) or not isinstance(max_size, int) or max_size <= 0):
        raise ValueError(f"{where}.max_size must be a positive int or null, got {max_size!r}")
    if max_size is not None and min_sizes and max(min_sizes) > max_size:
        raise ValueError(f"{where}.max_size {max_size} is smaller than the largest of min_sizes {list(min_sizes)}")
    return tuple(min_sizes), max_size


@dataclass
class DataSource(JsonConfig):
    """One dataset of the mixture: ``kind`` (see ``SOURCE_KINDS``), ``task`` for synthetic data and
    for readers that serve several tasks, a sampling ``ratio``, a ``root`` folder for real datasets and
    reader-specific ``options`` (e.g. ``{"dataset": "refcoco+", "image_dir": ...}``); for the full
    UniRef++ model, ``min_sizes`` / ``max_size`` override the stage's scale jitter for this source. Video sources
    (and synthetic ``vos`` / ``rvos``) also take ``options.first_ref``: the object's first frame
    becomes a second reference, as in tracking, and ``options.ref_noise``: the probability that the
    previous-frame reference mask is deformed as a tracker's own output would be
    (:class:`~unifusion_sam.training.sources.NoisyPreviousReference`)."""

    kind: str = "synthetic"
    task: str = "ris"
    ratio: float = 1.0
    root: str | None = None
    split: str = "train"
    options: dict = field(default_factory=dict)
    min_sizes: tuple[int, ...] = ()
    max_size: int | None = None

    def __post_init__(self) -> None:
        check_choice("data.kind", self.kind, SOURCE_KINDS)
        if not isinstance(self.options, dict):
            raise TypeError(f"data.options must be a mapping, got {self.options!r}")
        self.min_sizes, self.max_size = check_sizes("data", self.min_sizes, self.max_size)
        check_choice("data.task", self.task, ("ris", "fss", "vos", "rvos", "pseudo_vos", "det", "vos_examples"))
        if self.task == "vos_examples" and self.kind != "synthetic":
            raise ValueError(f"data task 'vos_examples' (the object shown by examples from other scenes) is made by the "
                             f"synthetic generator only, not by {self.kind!r}")
        for name, check in (("shots", check_positive_int), ("found_prob", check_probability),
                            ("absent_prob", check_probability)):
            if name in self.options:
                if self.task != "vos_examples":
                    raise ValueError(f"data.options.{name} is for task 'vos_examples', not {self.task!r}")
                check(f"data.options.{name}", self.options[name])
        if self.kind == "objects365" and self.task != "det":
            raise ValueError(f"data source 'objects365' is detection data (boxes only): task must be 'det', "
                             f"got {self.task!r}")
        if isinstance(self.ratio, bool) or not isinstance(self.ratio, (int, float)) or self.ratio < 0:
            raise ValueError(f"data.ratio must be a number >= 0, got {self.ratio!r}")
        if self.kind != "synthetic":
            if not self.root:
                raise ValueError(f"data source {self.kind!r} needs a root folder")
            if not os.path.isdir(self.root):
                raise FileNotFoundError(f"data source {self.kind!r}: root folder does not exist: {self.root}")
        video = self.kind in VIDEO_KINDS or (self.kind == "synthetic" and self.task in ("vos", "rvos"))
        if "first_ref" in self.options:
            if not isinstance(self.options["first_ref"], bool):
                raise TypeError(f"data.options.first_ref must be true or false, got {self.options['first_ref']!r}")
            if not video:
                raise ValueError(f"data.options.first_ref is for video sources (VOS / RVOS), not "
                                 f"kind={self.kind!r} task={self.task!r}")
        if "ref_noise" in self.options:
            check_probability("data.options.ref_noise", self.options["ref_noise"])
            if not video:
                raise ValueError(f"data.options.ref_noise is for video sources (VOS / RVOS), not "
                                 f"kind={self.kind!r} task={self.task!r}")


@dataclass
class StageConfig(JsonConfig):
    """One training stage: its steps, base learning rate, whether the text encoder trains, and its data.
    The full UniRef++ model also takes the scale jitter: each sample's shorter side is drawn from
    ``min_sizes`` and its longer side capped at ``max_size`` (empty: the model's test size for the task);
    the SAM family resizes to its fixed input size and rejects them."""

    steps: int = 100
    lr: float = 1e-4
    text_lr: float = 1e-5
    train_text_encoder: bool = True
    decay_steps: tuple[int, ...] = ()
    data: list = field(default_factory=list)
    min_sizes: tuple[int, ...] = ()
    max_size: int | None = None

    def __post_init__(self) -> None:
        self.min_sizes, self.max_size = check_sizes("stage", self.min_sizes, self.max_size)
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 0:
            raise ValueError(f"steps must be an int >= 0, got {self.steps!r}")
        for name in ("lr", "text_lr"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"{name} must be a number >= 0, got {value!r}")
        if not isinstance(self.data, (list, tuple)):
            raise TypeError(f"data must be a list of data sources, got {self.data!r}")
        sources = []
        for i, d in enumerate(self.data):
            try:
                sources.append(d if isinstance(d, DataSource) else DataSource.from_dict(d))
            except (ValueError, TypeError) as exc:
                raise (TypeError if isinstance(exc, TypeError) else ValueError)(f"data[{i}]: {exc}") from exc
        self.data = sources
        if self.steps and not self.data:
            raise ValueError("a stage with steps needs at least one data source")
        if self.data and sum(d.ratio for d in self.data) <= 0:
            raise ValueError(f"data ratios are all zero: {[d.ratio for d in self.data]}")
        if not isinstance(self.decay_steps, (list, tuple)) or not all(
                isinstance(s, (int, float)) and not isinstance(s, bool) and float(s).is_integer() and s >= 0
                for s in self.decay_steps):
            raise ValueError(f"decay_steps must be a list of step numbers (ints >= 0), got {self.decay_steps!r}")
        self.decay_steps = tuple(int(s) for s in self.decay_steps)


@dataclass
class RunConfig(JsonConfig):
    """What every family's recipe shares: output, seed, the stages and their data, batch, optimiser,
    checkpoints, logging and the held-out synthetic evaluation. ``stage`` names the stages to run, in
    order: one of :attr:`STAGES`, several joined by ``+`` (``image+video``), or ``ALL``."""

    STAGES: ClassVar[tuple[str, ...]] = STAGES
    ALL: ClassVar[str] = "both"

    output_dir: str = "outputs/default"
    seed: int = 0
    stage: str = "both"
    # a stage left out of the config does nothing (StageConfig() alone, 100 steps and no data, is refused)
    image: StageConfig = field(default_factory=lambda: StageConfig(steps=0))
    video: StageConfig = field(default_factory=lambda: StageConfig(steps=0))
    max_steps: int | None = None
    batch_size: int = 8
    grad_accum: int = 1
    weight_decay: float = 0.05
    warmup_steps: int = 20
    max_grad_norm: float = 1.0
    # "no", "bf16", "fp16", or "auto": bf16 where the hardware runs it natively (see resolve_mixed_precision)
    mixed_precision: str = "no"
    num_workers: int = 1
    flip_prob: float = 0.5
    save_every: int = 200
    keep_checkpoints: int = 2
    resume: str | None = None
    log_every: int = 10
    tracker: str = "tensorboard"
    synthetic_image_size: int = 128
    eval_samples: int = 48
    eval_videos: int = 12
    # the held-out synthetic split's seed: fixed, so that runs with other training seeds (and both
    # families) are scored on the same scenes and videos
    eval_seed: int = 1000
    # score the untrained model too (the "untrained" column: a baseline that costs one more evaluation)
    eval_untrained: bool = True
    deterministic: bool = False

    def __post_init__(self) -> None:
        if self.mixed_precision is False:  # YAML 1.1 reads a bare `no` (file or --mixed_precision no) as false
            self.mixed_precision = "no"
        for f in dataclasses.fields(self):  # paths and names (a family's too): YAML reads `1.0e-3` as a number
            value = getattr(self, f.name)
            if f.type in ("str", "str | None") and not isinstance(value, str) and not (value is None and f.type != "str"):
                raise TypeError(f"{f.name} must be a string{'' if f.type == 'str' else ' or null'}, got {value!r}")
        self.stage_names()  # validates ``stage``
        check_choice("mixed_precision", self.mixed_precision, ("no", "bf16", "fp16", "auto"))
        check_choice("tracker", self.tracker, ("tensorboard", "none"))
        if not isinstance(self.eval_untrained, bool):
            raise TypeError(f"eval_untrained must be a bool, got {self.eval_untrained!r}")
        if isinstance(self.eval_seed, bool) or not isinstance(self.eval_seed, int) or self.eval_seed < 0:
            raise ValueError(f"eval_seed must be an int >= 0, got {self.eval_seed!r}")
        for name in ("batch_size", "grad_accum", "save_every", "log_every", "synthetic_image_size"):
            check_positive_int(name, getattr(self, name))
        self.coerce_sections(dict.fromkeys(self.STAGES, StageConfig))
        if self.max_steps is not None and (type(self.max_steps) is not int or self.max_steps < 0):
            raise ValueError(f"max_steps must be an int >= 0 or None, got {self.max_steps!r}")
        for name, stage in self.stages():
            for d in stage.data:
                self.check_source(name, d)

    def heldout_synthetic(self):
        """The :class:`~unifusion_sam.data.synthetic.SyntheticConfig` of the held-out evaluation split."""
        from ..data.synthetic import SyntheticConfig

        size = self.synthetic_image_size
        return SyntheticConfig(seed=self.eval_seed, image_size=(size, size))

    def check_source(self, stage: str, source: DataSource) -> None:
        """A family rejects data it cannot train on (called for every source of the stages to run); the
        default accepts everything."""

    def stage_names(self) -> list[str]:
        names = list(self.STAGES) if self.stage == self.ALL else str(self.stage).split("+")
        for n in names:
            if n not in self.STAGES:
                raise ValueError(f"stage must be one of {[*self.STAGES, self.ALL]} or several joined by '+', "
                                 f"got {self.stage!r}")
        if len(set(names)) != len(names):
            raise ValueError(f"stage {self.stage!r} names a stage twice")
        return sorted(names, key=self.STAGES.index)

    def stages(self) -> list[tuple[str, StageConfig]]:
        """The stages to run, in order, with ``max_steps`` (if set) capping each stage's steps."""
        out = []
        for name in self.stage_names():
            stage = getattr(self, name)
            if isinstance(stage, dict):
                stage = StageConfig.from_dict(stage)
            if self.max_steps is not None:
                stage = dataclasses.replace(stage, steps=min(stage.steps, self.max_steps))
            out.append((name, stage))
        return out

    @classmethod
    def from_yaml(cls, path: str | os.PathLike):
        try:
            with open(path, encoding="utf-8") as fh:
                data = yaml.safe_load(fh) or {}
        except (UnicodeDecodeError, yaml.YAMLError) as exc:
            raise ValueError(f"{path}: not a readable YAML file ({str(exc).splitlines()[0]})") from exc
        if not isinstance(data, dict):
            raise ValueError(f"{path}: a training config must be a mapping, got {type(data).__name__}")
        try:
            return cls.from_dict(data)
        except (ValueError, TypeError) as exc:
            raise (TypeError if isinstance(exc, TypeError) else ValueError)(f"{path}: {exc}") from exc


def flat_fields(cfg: JsonConfig, prefix: str = "") -> dict[str, Any]:
    """Dotted names of every scalar field (``optim.lr`` style), for command-line overrides."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cfg):  # type: ignore[arg-type]
        value = getattr(cfg, f.name)
        if isinstance(value, JsonConfig):
            out.update(flat_fields(value, f"{prefix}{f.name}."))
        else:
            out[f"{prefix}{f.name}"] = value
    return out


def apply_overrides(cfg: RunConfig, overrides: dict[str, str]) -> RunConfig:
    """Set dotted fields from strings (parsed as YAML scalars: ``1e-4``, ``true``, ``[1, 2]``, ``null``)."""
    data = cfg.to_dict()
    valid = flat_fields(cfg)
    for key, raw in overrides.items():
        if key not in valid:
            raise ValueError(f"unknown config key {key!r}; valid keys: {sorted(valid)}")
        try:
            value = yaml.safe_load(raw) if isinstance(raw, str) else raw
        except yaml.YAMLError as exc:
            raise ValueError(f"{key}: cannot read {raw!r} as a YAML value ({str(exc).splitlines()[0]})") from exc
        current = valid[key]
        if isinstance(current, float) and isinstance(value, (str, int)) and not isinstance(value, bool):
            try:
                value = float(value)  # YAML reads "1e-3" as a string
            except ValueError:
                raise ValueError(f"{key} must be a number, got {raw!r}") from None
        node = data
        parts = key.split(".")
        for p in parts[:-1]:
            node = node[p]
        node[parts[-1]] = value
    return type(cfg).from_dict(data)


def resolve_mixed_precision(value: str, cuda: bool | None = None) -> str:
    """The precision a run trains in: ``value`` itself unless it is ``"auto"``, which means ``"bf16"``
    where bfloat16 matrix products run natively (:func:`unifusion_sam.config.native_bf16`: a bf16 CUDA
    GPU, or a CPU with Intel's AMX-BF16 tiles) and ``"no"`` otherwise (a CPU without AMX emulates or
    barely speeds up bf16, so there it would only cost precision). ``cuda`` defaults to whether a GPU
    is visible (where accelerate will train)."""
    check_choice("mixed_precision", value, ("no", "bf16", "fp16", "auto"))
    if value != "auto":
        return value
    import torch

    return "bf16" if native_bf16("cuda" if (torch.cuda.is_available() if cuda is None else cuda) else "cpu") else "no"

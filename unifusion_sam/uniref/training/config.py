"""The UniRef++ recipe's configuration: the shared run's fields plus the paper's three stages (Table 10), the model
preset, ``init`` weights and the learning-rate multipliers."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from ...training.config import RunConfig, StageConfig

UNIREF_STAGES = ("det", "image", "video")


@dataclass
class UniRefTrainConfig(RunConfig):
    """The UniRef++ recipe (``recipes/train_uniref.py``). ``stage``: ``det``, ``image``, ``video``, several
    joined by ``+`` (one model, one optimiser, in order) or ``all``; ``model`` a preset name (``uniref-r50``,
    ``uniref-swin-l``, ``uniref-small``) with ``model_overrides``; ``init`` a folder written by
    ``save_pretrained`` or ``unifusion-sam convert-uniref`` whose weights must fit the preset (strictly;
    ``init_reset_class_heads`` re-initialises the class heads when the previous stage had another number of
    classes, as Objects365's 365 before the class-agnostic stages). Learning rates: the stage's ``lr`` x
    ``backbone_lr_mult`` for the backbone, x ``linear_proj_lr_mult`` for the deformable sampling offsets,
    ``text_lr`` for the text encoder (the authors' rule); ``backbone_lr_mult: 0`` freezes the backbone (no
    gradients through it: the cheap choice for a pretrained backbone on a CPU); weight decay on every parameter."""

    STAGES = UNIREF_STAGES
    ALL = "all"

    output_dir: str = "outputs/uniref_default"
    stage: str = "image+video"
    det: StageConfig = field(default_factory=lambda: StageConfig(steps=0))
    image: StageConfig = field(default_factory=lambda: StageConfig(steps=0))
    video: StageConfig = field(default_factory=lambda: StageConfig(steps=0))
    model: str = "uniref-small"
    model_overrides: dict = field(default_factory=dict)
    init: str | None = None
    init_reset_class_heads: bool = False
    backbone_lr_mult: float = 0.1
    linear_proj_lr_mult: float = 0.1
    weight_decay: float = 0.05
    max_grad_norm: float = 0.1
    warmup_steps: int = 200

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("backbone_lr_mult", "linear_proj_lr_mult"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"{name} must be a number >= 0, got {value!r}")
        if not isinstance(self.model_overrides, dict):
            raise TypeError(f"model_overrides must be a mapping, got {self.model_overrides!r}")
        if self.init is not None and not os.path.isdir(self.init):
            raise FileNotFoundError(f"init: not a folder with UniRef++ weights: {self.init}")

    def check_source(self, stage: str, source) -> None:
        if source.task == "det" and stage == "video":
            raise ValueError(f"the video stage trains VOS / RVOS; detection data ({source.kind}) belongs to det / image")

"""The full UniRef++ family of the shared training run (:func:`unifusion_sam.training.run.run`).

:class:`UniRefTrainFamily` builds the model (a preset with overrides, from ``init`` weights loaded strictly),
gives its optimiser groups (the backbone and the deformable sampling offsets at their multipliers, the text
encoder at the stage's ``text_lr``), its samples (:mod:`.samples`), the loss (the model's training forward
+ :class:`~unifusion_sam.uniref.losses.criterion.UniRefCriterion`, whose BoxInst warm-up counter the
checkpoints keep), freezes the text encoder where a stage says so (stage 3) and saves ``<run>/model``.
"""

from __future__ import annotations

from pathlib import Path

import torch
from accelerate import Accelerator

from ...checkpoint import read_weights
from ...training.config import StageConfig
from ..batch import UniRefBatch
from ..checkpoint import MODEL_WEIGHTS_NAME, TEXT_CONFIG_NAME, build_text_encoder, load_state_strict
from ..losses.criterion import UniRefCriterion
from ..segmenter import UniRefSegmenter, build_uniref
from .config import UniRefTrainConfig
from .samples import UniRefSample, UniRefSamplePrep, collate_uniref


def build_model(cfg: UniRefTrainConfig) -> UniRefSegmenter:
    """The preset (with overrides) and, with ``init``, its weights, loaded strictly (a checkpoint that does
    not fit the preset is an error here, before training; ``init_reset_class_heads`` keeps the fresh
    class heads when the number of classes changed between stages)."""
    if cfg.init is None:
        return build_uniref(cfg.model, **cfg.model_overrides)
    folder = Path(cfg.init)
    config = build_uniref(cfg.model, **cfg.model_overrides).config  # validates the overrides cheaply enough
    text = build_text_encoder(config.text, folder) if config.text is not None and (folder / TEXT_CONFIG_NAME).is_file() else None
    model = build_uniref(config, text_encoder=text)
    weights = folder / MODEL_WEIGHTS_NAME
    if not weights.is_file():
        raise FileNotFoundError(f"init: {weights} does not exist (a folder written by save_pretrained or convert-uniref)")
    state, _ = read_weights(weights)
    if cfg.init_reset_class_heads:
        fresh = model.state_dict()
        state = {**state, **{k: v for k, v in fresh.items() if k.startswith("class_embed.")}}
    load_state_strict(model, state, str(weights))
    return model


def uniref_parameter_groups(model: torch.nn.Module, weight_decay: float, backbone_lr_mult: float,
                            linear_proj_lr_mult: float) -> list[dict]:
    """AdamW groups (lr = 1, scaled by the schedule): ``text`` (the text encoder, at the stage's
    ``text_lr``), ``backbone`` (x ``backbone_lr_mult``), ``linear_proj`` (deformable sampling offsets,
    x ``linear_proj_lr_mult``) and ``main``; weight decay on all, as the authors' optimiser."""
    groups: dict[str, list[torch.nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        kind = ("text" if name.startswith("text_encoder.") else "backbone" if name.startswith("backbone.") else
                "linear_proj" if "sampling_offsets" in name else "main")
        groups.setdefault(kind, []).append(p)
    scale = {"text": 1.0, "backbone": backbone_lr_mult, "linear_proj": linear_proj_lr_mult, "main": 1.0}
    return [{"params": params, "lr": 1.0, "weight_decay": weight_decay, "name": kind, "lr_scale": scale[kind]}
            for kind, params in sorted(groups.items())]


class UniRefTrainFamily:
    """The full UniRef++ family for :func:`~unifusion_sam.training.run.run` (see the module docstring).
    ``criterion``: the loss (default: :class:`UniRefCriterion` for the model's number of classes)."""

    tracker_project = "uniref"

    def __init__(self, cfg: UniRefTrainConfig, criterion: UniRefCriterion | None = None) -> None:
        self.cfg = cfg
        self.config = None
        self.criterion = criterion

    @classmethod
    def for_model(cls, model: UniRefSegmenter, cfg: UniRefTrainConfig | None = None) -> UniRefTrainFamily:
        """The family of an existing ``model`` (samples, loss and stage switches without :meth:`build_model`)."""
        family = cls(cfg if cfg is not None else UniRefTrainConfig())
        family.config = model.config
        family.criterion = family.criterion or UniRefCriterion(num_classes=model.config.num_classes)
        return family

    def build_model(self, accelerator: Accelerator) -> tuple[UniRefSegmenter, dict[str, float]]:
        cfg = self.cfg
        model = build_model(cfg)
        self.config = model.config
        if self.criterion is None:
            self.criterion = UniRefCriterion(num_classes=model.config.num_classes)
        if model.text_encoder is not None and any(s.train_text_encoder for _, s in cfg.stages()):
            model.text_encoder.unfreeze()  # in the optimiser; stages that freeze it give it no learning rate
        if cfg.backbone_lr_mult == 0:
            model.backbone.requires_grad_(False)  # frozen: no gradients computed through it at all
        if accelerator.is_main_process:
            accelerator.print(f"UniRef++ {cfg.model}: {sum(p.numel() for p in model.parameters()):,} parameters")
        return model, {}

    def parameter_groups(self, model: UniRefSegmenter) -> list[dict]:
        cfg = self.cfg
        return uniref_parameter_groups(model, cfg.weight_decay, cfg.backbone_lr_mult, cfg.linear_proj_lr_mult)

    def setup(self, accelerator: Accelerator, model: UniRefSegmenter) -> list:
        return [self.criterion]  # BoxInst's warm-up counter is part of a checkpoint

    def save(self, model: UniRefSegmenter, out: Path) -> None:
        model.save_pretrained(out / "model")

    def sample_prep(self, stage_name: str, stage: StageConfig) -> UniRefSamplePrep:
        return UniRefSamplePrep(self.config, [(d.min_sizes or stage.min_sizes, d.max_size or stage.max_size)
                                              for d in stage.data])

    def collate(self, samples: list[UniRefSample]) -> UniRefBatch:
        return collate_uniref(samples, self.config.size_divisibility)

    def loss(self, model: torch.nn.Module, batch: UniRefBatch) -> dict[str, torch.Tensor]:
        """The model's training forward (``model(batch)``: through DDP when wrapped) and the criterion."""
        inner = model.module if hasattr(model, "module") else model
        batch = batch.to(inner.device)
        layers, proposals = model(batch)
        terms = self.criterion(layers, proposals, batch.targets)
        return {"loss": sum(terms.values()), **terms}

    def start_stage(self, model: torch.nn.Module, stage_name: str, stage: StageConfig) -> None:
        if model.text_encoder is not None:
            model.text_encoder.unfreeze() if stage.train_text_encoder else model.text_encoder.freeze()

"""What a model family gives the shared training run (:func:`unifusion_sam.training.run.run`).

A family's training plug-in (``unifusion_sam.sam.training.SamTrainFamily``,
``unifusion_sam.uniref.training.UniRefTrainFamily``, or a third family's) implements :class:`TrainFamily`;
the run owns everything else: the ``Accelerator``, the optimiser and schedule, resuming, trackers, the
stages, the held-out evaluation, saving and ``metrics.json``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from accelerate import Accelerator

from .config import StageConfig
from .mixing import SamplePrep


@runtime_checkable
class TrainFamily(Protocol):
    """The family side of a training run, in the order the run calls it."""

    tracker_project: str
    """The project name of the run's trackers (TensorBoard)."""

    def build_model(self, accelerator: Accelerator) -> tuple[torch.nn.Module, dict[str, float]]:
        """The model to train (on the CPU; ``accelerator.prepare`` moves it) and metrics of building it
        (e.g. a pre-training's final loss), after the global seed is set. Every process builds it; work
        that only one process should do (writing files) checks ``accelerator.is_main_process``."""

    def parameter_groups(self, model: torch.nn.Module) -> list[dict[str, Any]]:
        """AdamW parameter groups with ``lr`` 1.0 (the schedule scales them: a group named ``text*``
        follows the stage's ``text_lr``, the others its ``lr`` times the group's ``lr_scale``)."""

    def setup(self, accelerator: Accelerator, model: torch.nn.Module) -> list[Any]:
        """After ``accelerator.prepare`` (``model`` unwrapped): caches and the like; returns further objects
        whose state the checkpoints keep (``accelerator.register_for_checkpointing``)."""

    def sample_prep(self, stage_name: str, stage: StageConfig) -> SamplePrep:
        """The picklable per-sample transform of a stage (runs in data-loader workers)."""

    def collate(self, samples: list[Any]) -> Any:
        """Batch prepared samples; the batch has ``tasks`` (one entry per sample)."""

    def loss(self, model: torch.nn.Module, batch: Any) -> dict[str, torch.Tensor]:
        """Weighted loss terms of a batch; ``"loss"`` is their total, the one back-propagated."""

    def start_stage(self, model: torch.nn.Module, stage_name: str, stage: StageConfig) -> None:
        """Freeze / unfreeze what the stage trains (the unwrapped model)."""

    def save(self, model: torch.nn.Module, out: Path) -> None:
        """Write the trained model (unwrapped, metrics recorded on it) into the run folder ``out``, where
        :func:`unifusion_sam.from_pretrained` finds it (the family's ``run_subdir``)."""

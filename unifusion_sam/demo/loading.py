"""Which model the demo serves, loaded once through the core loader (:func:`unifusion_sam.loading.model_from_args`).

``--checkpoint`` takes what every front end takes: a ``save_pretrained`` folder or Hub id of any family, a
training run's output folder (``make demo``: ``outputs/default``; ``make demo-uniref``:
``outputs/uniref_default``), or ``none``. Without it: ``--sam`` / ``--adapter`` alone mean an untrained
model (``--checkpoint none``); with neither, the default run (:attr:`DemoConfig.default_run`) when it
exists, else the untrained tiny SAM, with a notice on the page saying why.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any

from ..families import family_of_model
from ..loading import NO_CHECKPOINT, model_from_args, resolve_checkpoint_option
from .config import DemoConfig


@dataclass
class DemoModel:
    """The served model: ``model`` (any family, eval mode), ``family`` (its registry name, e.g. ``"sam"``),
    ``description`` (one line for the page), ``notice`` (a warning for the page, or ``None``) and
    ``supports_points`` (whether its family takes point prompts)."""

    model: Any
    family: str
    description: str
    notice: str | None = None
    supports_points: bool = False


def resolve_demo_args(args: argparse.Namespace, config: DemoConfig | None = None) -> tuple[argparse.Namespace, str | None]:
    """The options the demo loads its model with, and a notice for the page (the untrained tiny SAM when there is
    nothing else to serve)."""
    config = config or DemoConfig()
    args = argparse.Namespace(**vars(args))
    args.checkpoint = resolve_checkpoint_option(args, config.default_run)
    if getattr(args, "onnx", None) is not None:
        args.onnx = None  # --onnx DIR is now the checkpoint
    notice = None
    if args.checkpoint is None:
        args.checkpoint, args.sam = NO_CHECKPOINT, "tiny"
        notice = (f"No trained model: `{config.default_run}` was not found (`make demo` trains the default model "
                  "there; or start the demo with `--checkpoint DIR_OR_HUB_ID`). This page serves the untrained "
                  "tiny SAM (`--sam tiny --checkpoint none`): random weights, so its masks mean nothing.")
    return args, notice


def load_demo_model(args: argparse.Namespace, config: DemoConfig | None = None) -> DemoModel:
    """Resolve the demo's model options (:func:`resolve_demo_args`) and load the model once."""
    config = config or DemoConfig()
    resolved, notice = resolve_demo_args(args, config)
    model = model_from_args(resolved, default_run=config.default_run)
    family = family_of_model(model)
    source = None if str(resolved.checkpoint).lower() == NO_CHECKPOINT else str(resolved.checkpoint)
    return DemoModel(model, family.name, family.describe(model, source), notice, family.supports_prompts)

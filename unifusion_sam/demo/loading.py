"""Which model the demo serves, loaded once through :func:`~unifusion_sam.evaluation.loading.model_from_args`.

``--checkpoint`` takes what the CLI takes (a ``save_pretrained`` folder or Hub id of either family, or
``none``) and also a training run's output folder: ``<run>/adapter`` + ``<run>/sam_<size>.safetensors``
(``make demo``: ``outputs/default``) or ``<run>/model`` (``make demo-uniref``: ``outputs/uniref_default``).
Without ``--checkpoint``: ``--sam`` / ``--adapter`` alone mean an untrained model (``--checkpoint none``);
with neither, the default run (:attr:`DemoConfig.default_run`) when it exists, else the untrained tiny
SAM with a notice saying why.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..evaluation.loading import NO_CHECKPOINT, model_from_args
from .config import DemoConfig

FAMILIES = ("sam", "uniref")


@dataclass
class DemoModel:
    """The served model: ``model`` (either family, eval mode), ``family`` (``"sam"`` or ``"uniref"``),
    ``description`` (one line for the page) and ``notice`` (a warning for the page, or ``None``)."""

    model: Any
    family: str
    description: str
    notice: str | None = None

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"family must be one of {list(FAMILIES)}, got {self.family!r}")

    @property
    def supports_points(self) -> bool:
        """Point prompts are a SAM-family feature."""
        return self.family == "sam"


def model_family(model) -> str:
    """``"uniref"`` for a full UniRef++ model, ``"sam"`` for a UniFusion-SAM model."""
    from ..uniref.segmenter import UniRefSegmenter

    return "uniref" if isinstance(model, UniRefSegmenter) else "sam"


def run_dir_parts(path: str | Path) -> tuple[str, str | None] | None:
    """``(checkpoint, sam weights or None)`` inside a training run's output folder, or ``None`` when
    ``path`` is not one (see the module docstring)."""
    path = Path(path)
    if not path.is_dir() or (path / "config.json").is_file() or (path / "adapter_config.json").is_file():
        return None
    if (path / "model" / "config.json").is_file():
        return str(path / "model"), None
    if (path / "adapter" / "adapter_config.json").is_file():
        weights = sorted(path.glob("sam_*.safetensors"))
        return str(path / "adapter"), (str(weights[0]) if len(weights) == 1 else None)
    return None


def resolve_model_args(args: argparse.Namespace, config: DemoConfig | None = None) -> tuple[argparse.Namespace, str | None]:
    """The options :func:`model_from_args` gets for the demo's arguments, and a notice for the page.

    Raises ``ValueError`` for a run folder without its SAM when ``--sam`` is not given."""
    config = config or DemoConfig()
    args = argparse.Namespace(**vars(args))
    notice = None
    if args.checkpoint is None:
        if args.sam is not None or args.adapter is not None:
            args.checkpoint = NO_CHECKPOINT
        elif run_dir_parts(config.default_run) is not None:
            args.checkpoint = config.default_run
        else:
            args.checkpoint, args.sam = NO_CHECKPOINT, "tiny"
            notice = (f"No trained model: `{config.default_run}` was not found (`make demo` trains the default model "
                      "there; or start the demo with `--checkpoint DIR_OR_HUB_ID`). This page serves the untrained "
                      "tiny SAM (`--sam tiny --checkpoint none`): random weights, so its masks mean nothing.")
    parts = run_dir_parts(args.checkpoint) if args.checkpoint != NO_CHECKPOINT else None
    if parts is not None:
        run = args.checkpoint
        args.checkpoint, weights = parts
        if Path(args.checkpoint).name == "adapter" and args.sam is None:
            if weights is None:
                raise ValueError(f"run folder {run} holds an adapter but not exactly one sam_<size>.safetensors; "
                                 "give --sam (and --sam-checkpoint) for the SAM it was trained on")
            args.sam = weights
    return args, notice


def describe(args: argparse.Namespace, family: str) -> str:
    """One line naming the served model, from the resolved options."""
    untrained = str(args.checkpoint).lower() == NO_CHECKPOINT
    if family == "uniref":
        return f"UniRef++ full model: untrained `{args.adapter}` preset" if untrained else f"UniRef++ full model `{args.checkpoint}`"
    sam = args.sam if args.sam_checkpoint is None else f"{args.sam} ({args.sam_checkpoint})"
    adapter = f"untrained adapter{f' `{args.adapter}`' if args.adapter else ''}" if untrained else f"adapter `{args.checkpoint}`"
    return f"UniFusion-SAM: {adapter} on SAM `{sam}`"


def load_demo_model(args: argparse.Namespace, config: DemoConfig | None = None) -> DemoModel:
    """Resolve the demo's model options (:func:`resolve_model_args`) and load the model once."""
    resolved, notice = resolve_model_args(args, config)
    model = model_from_args(resolved)
    family = model_family(model)
    return DemoModel(model, family, describe(resolved, family), notice)

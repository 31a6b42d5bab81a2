"""Loading a model of any family: the one place that recognises what a checkpoint is and picks its family.

``from_pretrained(source)`` takes

- a checkpoint folder written by ``save_pretrained`` (its config file names the family: a UniFusion-SAM
  adapter's ``adapter_config.json``, a full UniRef++ model's ``config.json``, or a registered family's);
- a training run's output folder (``make demo``'s ``outputs/default``: the checkpoint sits in the family's
  run sub-folder, e.g. ``adapter/``, next to what else the family needs, e.g. the stand-in SAM's weights);
- a Hugging Face Hub repo id (read from the local HF cache with ``HF_HUB_OFFLINE=1``).

The family's own keyword arguments pass through (``sam=`` for an adapter: the SAM it was trained on).
:func:`load_model` adds what the front ends need: ``"none"`` for an untrained model of a preset, a device
and a seed. :func:`add_model_arguments` / :func:`model_from_args` give every front end (``unifusion-sam
segment | track | demo``, the ``eval/`` runners) the same model options, each family contributing its own
(e.g. ``--sam``); without ``--checkpoint`` they use :data:`DEFAULT_RUN` when it exists.
"""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path
from typing import Any

from .families import (
    ModelFamily,
    families,
    family_of_folder,
    family_of_hub_repo,
    family_of_preset,
)

NO_CHECKPOINT = "none"
DEFAULT_RUN = "outputs/default"  # where `make demo` writes its run
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
HUB_KWARGS = ("cache_dir", "token", "local_files_only", "force_download", "proxies")


def find_checkpoint(folder: str | os.PathLike) -> tuple[ModelFamily, Path, Path | None] | None:
    """``(family, checkpoint folder, run folder or None)`` for a checkpoint folder or a training run's output
    folder (the family's ``run_subdir`` holds the checkpoint); ``None`` when ``folder`` is neither."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        return None
    family = family_of_folder(folder)
    if family is not None:
        return family, folder, None
    for family in families():
        sub = folder / family.run_subdir if family.run_subdir else None
        if sub is not None and family.claims(sub):
            return family, sub, folder
    return None


def resolve_source(source: str | os.PathLike, revision: str | None = None,
                   **hub_kwargs: Any) -> tuple[ModelFamily, str, Path | None]:
    """``(family, checkpoint, run folder or None)`` of a folder, run folder or Hub id; a clear error otherwise."""
    path = Path(source).expanduser()
    if path.is_dir():
        found = find_checkpoint(path)
        if found is None:
            marks = ", ".join(f"{f.config_name} ({f.title})" for f in families())
            runs = ", ".join(f"{f.run_subdir}/" for f in families() if f.run_subdir)
            raise FileNotFoundError(f"{path} is not a checkpoint folder (none of {marks}) nor a training run's output "
                                    f"folder (none of {runs})")
        family, checkpoint, run = found
        return family, str(checkpoint), run
    if path.exists():
        raise NotADirectoryError(f"{source} is a file; give a checkpoint folder, a run folder or a Hub repo id")
    if not HUB_ID.match(str(source)):
        raise FileNotFoundError(f"{source} does not exist (give a checkpoint folder written by save_pretrained, a "
                                "training run's output folder, or a Hub id like 'user/unifusion-sam-vit-b')")
    return family_of_hub_repo(str(source), revision=revision, **hub_kwargs), str(source), None


def from_pretrained(source: str | os.PathLike, *, revision: str | None = None, **kwargs: Any):
    """The model saved in ``source`` (see the module docstring), in eval mode, whatever its family.

    ``revision`` and the Hub options (``cache_dir``, ``token``, ``local_files_only`` ...) go to
    ``huggingface_hub``; the other keyword arguments to the family (``sam=`` for a UniFusion-SAM adapter,
    ``device=`` for a full UniRef++ model)."""
    hub = {k: kwargs[k] for k in HUB_KWARGS if k in kwargs}
    family, checkpoint, run = resolve_source(source, revision=revision, **hub)
    return family.load(checkpoint, run_dir=run, revision=revision, **kwargs)


def load_model(checkpoint: str | os.PathLike | None = None, *, preset: str | None = None,
               device: Any = "cpu", seed: int | None = 0, **options: Any):
    """A model in eval mode on ``device``, as the front ends load it: ``checkpoint`` as for
    :func:`from_pretrained`, or ``"none"`` for an untrained model of ``preset`` (its family's default when
    ``None``). ``options``: family options (``None`` values are ignored); an option of another family is a
    ``ValueError``, so ``--sam`` with a full UniRef++ checkpoint says it does not apply. ``seed`` is set
    first (random parts: an untrained adapter, a random tiny SAM)."""
    import torch

    if seed is not None:
        torch.manual_seed(seed)
    given = {k: v for k, v in options.items() if v is not None}
    if checkpoint is None or str(checkpoint).lower() == NO_CHECKPOINT:
        owners = {f.name: f for f in families() for o in f.options if o.dest in given}
        family = next(iter(owners.values())) if preset is None and len(owners) == 1 else family_of_preset(preset)
        _check_options(family, given, f"preset {preset!r}" if preset else f"an untrained {family.title}")
        model = family.build(preset, **given)
    else:
        if preset is not None:
            raise ValueError(f"a preset ({preset!r}) only applies to an untrained model (checkpoint 'none'); a "
                             "saved checkpoint carries its own configuration")
        family, source, run = resolve_source(checkpoint)
        _check_options(family, given, f"{checkpoint} (a {family.title})")
        model = family.load(source, run_dir=run, **given)
    return model.to(torch.device(device)).eval()


def _check_options(family: ModelFamily, given: dict[str, Any], what: str) -> None:
    foreign = {o.dest: o.flag for f in families() if f is not family for o in f.options}
    own = {o.dest for o in family.options}
    wrong = [foreign[k] for k in given if k in foreign and k not in own]
    if wrong:
        raise ValueError(f"{', '.join(wrong)} {'does' if len(wrong) == 1 else 'do'} not apply to {what}")


# ----------------------------------------------------------------------------- command-line options
def add_model_arguments(parser: argparse.ArgumentParser, *, default_device: str | None = None,
                        positional: bool = False) -> None:
    """The model options every front end shares: ``--checkpoint`` (a checkpoint or run folder, a Hub id, or
    ``none``; default :data:`DEFAULT_RUN` when it exists; ``positional``: a required first argument instead),
    ``--onnx`` (an exported folder, run on onnxruntime), ``--adapter`` (the preset of an untrained model),
    ``--device``, ``--seed``, and each registered family's own options."""
    group = parser.add_argument_group("model")
    what = ("a checkpoint folder (save_pretrained), a training run's output folder (make demo: "
            f"{DEFAULT_RUN}) or a Hugging Face Hub id")
    if positional:
        group.add_argument("checkpoint", help=what)
    else:
        group.add_argument("--checkpoint", default=None,
                           help=f"{what}; 'none' for an untrained model (a baseline). Default: {DEFAULT_RUN} when it exists")
        group.add_argument("--onnx", default=None, metavar="DIR",
                           help="an exported folder (unifusion-sam export-onnx): run it on onnxruntime")
    group.add_argument("--adapter", default=None,
                       help="preset of an untrained model (--checkpoint none): " + "; ".join(
                           f"{f.title}: {', '.join(f.presets())}" for f in families() if f.presets()))
    group.add_argument("--device", default=default_device,
                       help="torch device (default: " + (default_device or "the accelerate process's device") + ")")
    group.add_argument("--seed", type=int, default=0,
                       help="seed set before building the model (random parts: tiny SAM, an untrained adapter)")
    for family in families():
        for option in family.options:
            group.add_argument(option.flag, dest=option.dest, default=None, type=option.type, choices=option.choices,
                               help=f"{option.help} ({family.title} only)")


def family_options(args: argparse.Namespace) -> dict[str, Any]:
    """The family options given on the command line (those left at ``None`` are dropped)."""
    names = {o.dest for f in families() for o in f.options}
    return {k: v for k, v in vars(args).items() if k in names and v is not None}


def resolve_checkpoint_option(args: argparse.Namespace, default_run: str | os.PathLike = DEFAULT_RUN) -> str | None:
    """The checkpoint a front end loads: ``--checkpoint`` when given; ``none`` when only a preset or family
    options say what to build; else ``default_run`` when it holds a run or checkpoint; else ``None``
    (nothing to load: the caller says so)."""
    onnx = getattr(args, "onnx", None)
    if onnx is not None:
        if args.checkpoint is not None:
            raise ValueError(f"give --checkpoint or --onnx, not both (got {args.checkpoint} and {onnx})")
        family, _, _ = resolve_source(onnx)
        if getattr(family, "runtime", "torch") != "onnxruntime":
            raise ValueError(f"--onnx {onnx} is a {family.title}, not an ONNX export; pass it as --checkpoint, or "
                             f"export it first: unifusion-sam export-onnx {onnx} OUT_DIR")
        return str(onnx)
    if args.checkpoint is not None:
        return str(args.checkpoint)
    if args.adapter is not None or family_options(args):
        return NO_CHECKPOINT
    if find_checkpoint(default_run) is not None:
        return str(default_run)
    return None


def model_from_args(args: argparse.Namespace, device: Any = None, default_run: str | os.PathLike = DEFAULT_RUN):
    """:func:`load_model` from the options of :func:`add_model_arguments`; ``device`` overrides ``--device``."""
    checkpoint = resolve_checkpoint_option(args, default_run)
    if checkpoint is None:
        raise FileNotFoundError(f"no model to load: --checkpoint was not given and {default_run} holds no trained "
                                "model (run `make demo` to train the default one, or give --checkpoint DIR_OR_HUB_ID, "
                                "or --checkpoint none for an untrained model)")
    return load_model(checkpoint, preset=args.adapter, device=device or args.device or "cpu", seed=args.seed,
                      **family_options(args))

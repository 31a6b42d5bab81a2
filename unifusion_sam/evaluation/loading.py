"""Building the model an evaluation runner or the CLI uses, for either family.

``--checkpoint`` is a folder or Hugging Face Hub id written by ``save_pretrained``: a full UniRef++
model (``config.json``; it needs nothing else) or a UniFusion-SAM adapter (``adapter_config.json``;
it needs ``--sam``). ``--checkpoint none`` builds an untrained model: the adapter preset ``--adapter``
(default: the preset matching the SAM) or, for a ``uniref-*`` preset, an untrained full model; a
baseline, and what tests use. ``--sam`` names a SAM size (``vit_b``, ``vit_l``, ``vit_h``, ``tiny``, ``lite0``, ``lite0_hr``;
SAM 2: ``sam2_hiera_t``, ``sam2_hiera_s``, ``sam2_hiera_b+``, ``sam2_hiera_l``, ``sam2.1_hiera_*``, ``sam2_tiny``)
or is the path of a Meta SAM / SAM 2 ``.pth`` / ``.pt`` / ``.safetensors`` file (its size is read from the
weights unless ``--sam-size`` says it); ``--sam-checkpoint`` gives the weights for a size name. ``tiny``
and ``sam2_tiny`` without weights are small random models for tests; ``lite0`` without weights is the
offline stand-in (pretrained EfficientNet-Lite0 backbone, untrained neck and decoder).
"""

from __future__ import annotations

import argparse
import os
import re
import warnings
from pathlib import Path

import torch

from ..data.io import DataError
from ..sam.build import CUSTOM_SAMS, SAM_SIZES, SAM_SPECS, build_sam, read_state_dict
from ..sam.build_sam2 import SAM2_SPECS, sam2_name_from_state

NO_CHECKPOINT = "none"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_ENCODER_WIDTH = {spec.embed_dim: name for name, spec in SAM_SPECS.items()}


def add_model_arguments(parser: argparse.ArgumentParser, *, default_device: str | None = None,
                        required: bool = True) -> None:
    """The model options shared by the eval runners and the CLI (``--checkpoint`` and ``--sam`` are
    required unless ``required=False``)."""
    group = parser.add_argument_group("model")
    group.add_argument("--checkpoint", required=required,
                       help="a UniRef++ model or UniFusion-SAM adapter: folder or Hugging Face Hub id "
                            "(save_pretrained / push_to_hub), or 'none' for an untrained model (a baseline)")
    group.add_argument("--sam", default=None,
                       help="SAM size (vit_b, vit_l, vit_h, tiny, lite0, lite0_hr; SAM 2: sam2_hiera_t/s/b+/l, sam2.1_hiera_*, "
                            "sam2_tiny) or the path of a Meta SAM / SAM 2 .pth / .pt / .safetensors (UniFusion-SAM "
                            "adapters only; SAM 2 needs unifusion-sam[sam2])")
    group.add_argument("--sam-checkpoint", type=Path, default=None,
                       help="Meta SAM weights for a size name, e.g. sam_vit_b_01ec64.pth or sam2_hiera_tiny.pt")
    group.add_argument("--sam-size", choices=sorted(SAM_SIZES), default=None,
                       help="size of the SAM weights given as a path (default: read from the weights)")
    group.add_argument("--sam-image-size", type=int, default=None,
                       help="SAM input resolution (default: the size's own, 1024; tiny 256)")
    group.add_argument("--adapter", default=None,
                       help="preset for --checkpoint none: a UniFusion-SAM adapter preset (default: the one matching "
                            "the SAM) or a full model preset (uniref-small, uniref-r50, uniref-swin-l)")
    group.add_argument("--device", default=default_device,
                       help="torch device (default: " + (default_device or "the accelerate process's device") + ")")
    group.add_argument("--seed", type=int, default=0,
                       help="seed set before building the model (random parts: tiny SAM, an untrained adapter)")


def model_from_args(args: argparse.Namespace, device: str | torch.device | None = None):
    """:func:`load_model` from the options of :func:`add_model_arguments`; ``device`` overrides ``--device``."""
    return load_model(
        args.checkpoint,
        args.sam,
        sam_checkpoint=args.sam_checkpoint,
        sam_size=args.sam_size,
        sam_image_size=args.sam_image_size,
        adapter=args.adapter,
        device=device or args.device or "cpu",
        seed=args.seed,
    )


def load_model(
    checkpoint: str | os.PathLike,
    sam: str | os.PathLike | None = "vit_b",
    *,
    sam_checkpoint: str | os.PathLike | None = None,
    sam_size: str | None = None,
    sam_image_size: int | None = None,
    adapter: str | None = None,
    device: str | torch.device = "cpu",
    seed: int | None = 0,
):
    """A model of either family in eval mode on ``device`` (see the module docstring).

    Raises :class:`DataError` naming the path when a weights file or a checkpoint folder is missing and
    ``ValueError`` for an unknown size or a bad combination of options.
    """
    if seed is not None:
        torch.manual_seed(seed)
    if _is_uniref(checkpoint, adapter):
        if sam is not None or sam_checkpoint is not None:
            raise ValueError(f"--checkpoint {checkpoint} is a full UniRef++ model (its own backbone): do not give "
                             "--sam / --sam-checkpoint")
        if str(checkpoint).lower() == NO_CHECKPOINT:
            from ..uniref.segmenter import build_uniref

            return build_uniref(adapter).to(torch.device(device)).eval()
        from ..uniref.segmenter import UniRefSegmenter

        return UniRefSegmenter.from_pretrained(str(checkpoint), device=str(device)).eval()
    if sam is None:
        raise ValueError("--sam is required for a UniFusion-SAM adapter (the SAM it was trained on)")
    sam_model = build_sam_from_option(sam, sam_checkpoint=sam_checkpoint, sam_size=sam_size,
                                      sam_image_size=sam_image_size)
    model = load_adapter(checkpoint, sam_model, adapter=adapter)
    return model.to(torch.device(device)).eval()


def _is_uniref(checkpoint: str | os.PathLike, adapter: str | None) -> bool:
    """Whether ``--checkpoint`` (or ``none`` with a ``uniref-*`` preset) names a full UniRef++ model."""
    name = str(checkpoint)
    if name.lower() == NO_CHECKPOINT:
        return adapter is not None and adapter.startswith("uniref-")
    path = Path(name).expanduser()
    if not path.is_dir() and (path.exists() or not _HUB_ID.match(name)):
        return False  # reported by the adapter loader, with its own message
    from ..checkpoint_io import checkpoint_family

    try:
        return checkpoint_family(name) == "uniref"
    except (FileNotFoundError, NotADirectoryError):
        return False  # reported by the adapter loader, with its own message


def build_sam_from_option(sam: str | os.PathLike, *, sam_checkpoint=None, sam_size=None, sam_image_size=None):
    """Meta SAM from a size name (+ optional weights) or from a weights path (size read from the weights)."""
    name = str(sam)
    if name in SAM_SIZES:
        if sam_size is not None and sam_size != name:
            raise ValueError(f"--sam {name} and --sam-size {sam_size} disagree; give one size")
        weights = sam_checkpoint
    else:
        if sam_checkpoint is not None:
            raise ValueError(f"--sam {name!r} is not a size name ({', '.join(sorted(SAM_SIZES))}), so it is read as "
                             "a weights path; do not also give --sam-checkpoint")
        weights = name
    if weights is not None:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise DataError(f"SAM checkpoint not found: {path}")
        size = sam_size or (name if name in SAM_SIZES else None)
        image_size = sam_image_size
        if size is None or image_size is None:
            found_size, found_image_size = _inspect_sam_weights(path)
            size = size or found_size
            image_size = image_size or found_image_size
        return build_sam(size, checkpoint=path, image_size=image_size)
    if name not in ("tiny", "sam2_tiny", *CUSTOM_SAMS):
        warnings.warn(f"SAM {name} has random weights: pass --sam-checkpoint (e.g. sam_{name}_*.pth) for real "
                      "predictions", UserWarning, stacklevel=2)
    return build_sam(name, image_size=sam_image_size)


def _inspect_sam_weights(path: Path) -> tuple[str, int]:
    """``(size name, input resolution)`` of a Meta SAM state dict, from its patch embedding and position grid."""
    state = None
    if path.suffix != ".safetensors":
        try:  # memory-mapped: nothing but the two tensors inspected is read from disk
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            if isinstance(state, dict) and isinstance(state.get("model"), dict):
                state = state["model"]
        except Exception:  # noqa: BLE001 - fall back to a full read, which reports the error with the path
            state = None
    if not isinstance(state, dict):
        state = read_state_dict(path)
    if "image_encoder.backbone._conv_stem.weight" in state:  # the EfficientNet-Lite0 stand-in (a CNN: any size)
        name = "lite0_hr" if "image_encoder.conv_s0.weight" in state else "lite0"
        return name, CUSTOM_SAMS[name].image_size
    if "image_encoder.trunk.patch_embed.proj.weight" in state:  # SAM 2 (Hiera): the size from the trunk's layout
        sam2 = sam2_name_from_state(state)
        if sam2 is None:
            raise ValueError(f"{path}: a SAM 2 checkpoint of no known Hiera size; pass --sam-size")
        return sam2, SAM2_SPECS[sam2].image_size
    proj = state.get("image_encoder.patch_embed.proj.weight")
    pos = state.get("image_encoder.pos_embed")
    if proj is None or pos is None:
        raise ValueError(f"{path} is not a Meta SAM checkpoint (no image_encoder.patch_embed / pos_embed); "
                         "a transformers SamModel is not supported here")
    width = int(proj.shape[0])
    if width not in _ENCODER_WIDTH:
        raise ValueError(f"{path}: image-encoder width {width} matches no SAM size; pass --sam-size")
    return _ENCODER_WIDTH[width], int(pos.shape[1]) * 16


def load_adapter(checkpoint: str | os.PathLike, sam, *, adapter: str | None = None):
    """Wrap ``sam`` with the adapter ``checkpoint`` (folder or Hub id), or an untrained one for ``"none"``."""
    from ..sam.model import UniFusionSam
    from ..sam.wrap import wrap_sam

    name = str(checkpoint)
    if name.lower() == NO_CHECKPOINT:
        return wrap_sam(sam, adapter=adapter)
    if adapter is not None:
        raise ValueError("--adapter only applies to --checkpoint none (a saved adapter carries its own config)")
    path = Path(name).expanduser()
    if not path.exists() and not _HUB_ID.match(name):
        raise DataError(f"adapter checkpoint not found: {path} (give a folder written by save_pretrained, a Hub id "
                        "like 'user/unifusion-sam-vit-b', or 'none')")
    if path.exists() and not path.is_dir():
        raise DataError(f"adapter checkpoint must be a folder (save_pretrained output), got a file: {path}")
    from_pretrained = getattr(UniFusionSam, "from_pretrained", None)
    if from_pretrained is None:
        raise RuntimeError("this version of unifusion_sam cannot load adapter checkpoints "
                           "(UniFusionSam.from_pretrained is missing); use --checkpoint none")
    return from_pretrained(name if not path.exists() else str(path), sam=sam)

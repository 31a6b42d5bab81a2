"""Build Segment Anything models: a plain dict registry of sizes, like ``segment_anything.build_sam``.

``build_sam("vit_b", checkpoint="sam_vit_b_01ec64.pth")`` builds Meta's ``Sam`` from
``segment_anything.modeling`` and loads the checkpoint safely (``weights_only=True``, CPU map,
strict, with an error that names the mismatch). ``build_sam("tiny")`` is a small random model for
tests and the offline default run; ``image_size`` builds any size at another input resolution.
``build_sam("lite0")`` is the offline stand-in: SAM's prompt encoder and mask decoder on a frozen,
ImageNet-pretrained EfficientNet-Lite0 with a SAM-style neck (:mod:`.stand_in`; the default run's SAM);
``lite0_hr`` adds SAM 2's high-resolution maps to its decoder
(:class:`~unifusion_sam.sam.backends.high_res.HighResMaskDecoder`). ``build_hf_sam("tiny")`` builds the ViT
sizes as a ``transformers.SamModel``. SAM 2 sizes (``sam2_hiera_t``/``_s``/``_b+``/``_l``,
``sam2.1_hiera_*``, ``sam2_tiny``) come from :mod:`.sam2`: ``build_sam`` builds them as Meta ``sam2``
models, ``build_hf_sam`` as ``transformers.Sam2Model``. The sizes themselves are in :mod:`..specs`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch
from torch import nn

from ...checkpoint.io import atomic_write_file, portable_tensors, read_weights, state_mismatch, write_safetensors
from ..specs import IMAGENET_MEAN, IMAGENET_STD, PATCH_SIZE, PROMPT_DIM, SAM2_SPECS, SAM_SPECS, SamSpec
from .sam2 import build_hf_sam2, build_meta_sam2


@dataclass(frozen=True)
class CustomEncoderSpec:
    """A SAM whose image encoder is not a ViT: ``build(image_size, pretrained) -> encoder`` returning
    ``[B, 256, S/16, S/16]``, its default input size and pixel statistics (0..255 scale)."""

    build: Callable[[int, bool], nn.Module]
    image_size: int
    pixel_mean: tuple[float, float, float]
    pixel_std: tuple[float, float, float]
    decoder_mlp_dim: int = 512


def _lite0(image_size: int, pretrained: bool, high_res: bool = False) -> nn.Module:
    from .stand_in.lite0 import Lite0ImageEncoder

    return Lite0ImageEncoder(image_size, PROMPT_DIM, pretrained=pretrained, high_res=high_res)


def _lite0_hr(image_size: int, pretrained: bool) -> nn.Module:
    return _lite0(image_size, pretrained, high_res=True)


CUSTOM_SAMS: dict[str, CustomEncoderSpec] = {
    "lite0": CustomEncoderSpec(_lite0, 256, (127.5, 127.5, 127.5), (127.5, 127.5, 127.5)),
    # + SAM 2's stride-8 / stride-4 maps into the decoder's upscaling (a HighResMaskDecoder)
    "lite0_hr": CustomEncoderSpec(_lite0_hr, 256, (127.5, 127.5, 127.5), (127.5, 127.5, 127.5)),
}
SAM_SIZES: tuple[str, ...] = (*SAM_SPECS, *CUSTOM_SAMS, *SAM2_SPECS)


def _spec(name: str, image_size: int | None) -> SamSpec:
    if name not in SAM_SPECS:
        if name in CUSTOM_SAMS:
            raise ValueError(f"SAM size {name!r} has a custom image encoder: build it with build_sam, not as a "
                             f"transformers SamModel (ViT sizes: {sorted(SAM_SPECS)})")
        raise ValueError(f"unknown SAM size {name!r}; choose one of {sorted(SAM_SIZES)}")
    spec = SAM_SPECS[name]
    if image_size is not None:
        if not isinstance(image_size, int) or image_size <= 0 or image_size % PATCH_SIZE:
            raise ValueError(f"image_size must be a positive multiple of {PATCH_SIZE}, got {image_size!r}")
        spec = SamSpec(**{**spec.__dict__, "image_size": image_size})
    return spec


def build_sam(name: str = "vit_b", checkpoint: str | os.PathLike | None = None, image_size: int | None = None):
    """Build Meta's ``segment_anything.modeling.Sam`` of size ``name`` (``vit_b``/``vit_l``/``vit_h``/``tiny``/``lite0``/``lite0_hr``).

    ``checkpoint``: a local ``.pth`` (read with ``weights_only=True``) or ``.safetensors`` file with
    the full SAM state dict. Random weights when ``None``, except ``lite0``'s image backbone, which
    always starts from its ImageNet weights (a checkpoint then replaces them). SAM 2 sizes build Meta's
    ``sam2`` ``SAM2Base`` (:func:`.sam2.build_meta_sam2`; checkpoints such as ``sam2_hiera_tiny.pt``).
    """
    if name in SAM2_SPECS:
        sam = build_meta_sam2(name, image_size)  # imports sam2 (optional) only now
    elif name in CUSTOM_SAMS:
        sam = _build_custom(name, image_size, pretrained=checkpoint is None)
    else:
        sam = _build_vit(_spec(name, image_size))
    sam.eval()
    if checkpoint is not None:
        load_sam_checkpoint(sam, checkpoint, name=name)
    return sam


def _build_custom(name: str, image_size: int | None, pretrained: bool):
    custom = CUSTOM_SAMS[name]
    size = custom.image_size if image_size is None else image_size
    if not isinstance(size, int) or size <= 0 or size % 32:
        raise ValueError(f"image_size of SAM {name!r} must be a positive multiple of 32, got {image_size!r}")
    spec = SamSpec(embed_dim=0, depth=0, num_heads=0, global_attn_indexes=(), image_size=size,
                   decoder_mlp_dim=custom.decoder_mlp_dim)
    return _assemble(custom.build(size, pretrained), spec, custom.pixel_mean, custom.pixel_std)


def _build_vit(spec: SamSpec):
    from segment_anything.modeling import ImageEncoderViT

    encoder = ImageEncoderViT(
        depth=spec.depth,
        embed_dim=spec.embed_dim,
        img_size=spec.image_size,
        mlp_ratio=4,
        norm_layer=partial(nn.LayerNorm, eps=1e-6),
        num_heads=spec.num_heads,
        patch_size=PATCH_SIZE,
        qkv_bias=True,
        use_rel_pos=True,
        global_attn_indexes=spec.global_attn_indexes,
        window_size=spec.window_size,
        out_chans=PROMPT_DIM,
    )
    return _assemble(encoder, spec, IMAGENET_MEAN, IMAGENET_STD)


def _assemble(image_encoder: nn.Module, spec: SamSpec, pixel_mean, pixel_std):
    """Meta's ``Sam`` around ``image_encoder`` with SAM's prompt encoder and mask decoder for ``spec`` (a
    :class:`~unifusion_sam.sam.backends.high_res.HighResMaskDecoder` when the encoder gives high-resolution maps, ``high_res``)."""
    from segment_anything.modeling import MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    from ..backends.high_res import HighResMaskDecoder

    decoder_class = HighResMaskDecoder if getattr(image_encoder, "high_res", False) else MaskDecoder
    grid = spec.image_size // PATCH_SIZE
    return Sam(
        image_encoder=image_encoder,
        prompt_encoder=PromptEncoder(
            embed_dim=PROMPT_DIM,
            image_embedding_size=(grid, grid),
            input_image_size=(spec.image_size, spec.image_size),
            mask_in_chans=16,
        ),
        mask_decoder=decoder_class(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(depth=2, embedding_dim=PROMPT_DIM, mlp_dim=spec.decoder_mlp_dim, num_heads=8),
            transformer_dim=PROMPT_DIM,
            iou_head_depth=3,
            iou_head_hidden_dim=256,
        ),
        pixel_mean=list(pixel_mean),
        pixel_std=list(pixel_std),
    )


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a state dict from ``.safetensors`` or from a ``.pth``/``.pt`` file with ``weights_only=True`` (no
    object but tensors and plain containers is ever unpickled); a broken file is a ``ValueError`` naming it."""
    path = str(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.endswith(".safetensors"):
        return read_weights(path)[0]
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - re-raised with the path
        raise ValueError(f"cannot read checkpoint {path}: {exc}") from exc
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    if not isinstance(state, dict):
        raise ValueError(f"checkpoint {path} does not hold a state dict (got {type(state).__name__})")
    return state


def save_sam(sam: nn.Module, path: str | os.PathLike) -> None:
    """Write a SAM's whole state dict as safetensors, atomically; ``build_sam(size, checkpoint=path)`` reads
    it back (the stand-in SAM of a training run exists nowhere else)."""
    tensors = portable_tensors(sam.state_dict())
    atomic_write_file(path, lambda tmp: write_safetensors(tensors, tmp, {"format": "pt"}))


def load_sam_checkpoint(sam: nn.Module, checkpoint: str | os.PathLike, name: str = "?") -> None:
    """Load a full SAM state dict strictly; a size mismatch names the parameter and both shapes."""
    state = read_state_dict(checkpoint)
    problems = state_mismatch(sam.state_dict(), state)
    if problems:
        raise ValueError("\n".join([f"checkpoint {checkpoint} does not match SAM size {name!r}:", *problems]))
    sam.load_state_dict(state)


def build_hf_sam(name: str = "tiny", image_size: int | None = None):
    """Build a randomly initialised ``transformers.SamModel`` with the image-encoder size ``name``.

    Real checkpoints load with ``transformers.SamModel.from_pretrained`` as usual; this is for tests and
    for sizes that have no published weights. A SAM 2 size builds a ``transformers.Sam2Model``
    (:func:`.sam2.build_hf_sam2`).
    """
    if name in SAM2_SPECS:
        return build_hf_sam2(name, image_size)
    from transformers import SamConfig, SamModel

    spec = _spec(name, image_size)
    grid = spec.image_size // PATCH_SIZE
    config = SamConfig(
        vision_config={
            "hidden_size": spec.embed_dim,
            "num_hidden_layers": spec.depth,
            "num_attention_heads": spec.num_heads,
            "image_size": spec.image_size,
            "patch_size": PATCH_SIZE,
            "output_channels": PROMPT_DIM,
            "window_size": spec.window_size,
            "global_attn_indexes": list(spec.global_attn_indexes),
            "mlp_dim": spec.embed_dim * 4,
            # transformers' default (1e-10) makes a randomly initialised encoder ignore its input
            "initializer_range": 0.02,
        },
        prompt_encoder_config={"hidden_size": PROMPT_DIM, "image_size": spec.image_size, "patch_size": PATCH_SIZE,
                               "image_embedding_size": grid},
        mask_decoder_config={"hidden_size": PROMPT_DIM, "mlp_dim": spec.decoder_mlp_dim},
    )
    model = SamModel(config)
    model.eval()
    return model

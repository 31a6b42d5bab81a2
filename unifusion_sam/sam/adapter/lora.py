"""LoRA on SAM's image encoder through ``peft``: the adapter layers replace the attention projections.

Targets are the image encoder's attention ``qkv`` (and optionally ``proj``) linears, named
``blocks.N.attn.qkv`` in Meta's SAM and ``layers.N.attn.qkv`` in ``transformers.SamModel``; in SAM 2's
Hiera ``trunk.blocks.N.attn.qkv`` (Meta ``sam2``) and ``backbone.blocks.N.attn.qkv``
(``transformers.Sam2Model``), ``attn.proj`` likewise. Never targets: the patch-embedding conv
``patch_embed.proj``, Hiera's block-level ``blocks.N.proj`` (the residual projection where a stage
widens), the FPN neck. LoRA's ``B`` matrices start at zero, so the encoder's output is unchanged until
training moves them.
"""

from __future__ import annotations

from ..backends import SamBackend
from .config import LoraSettings


def lora_target_regex(targets: tuple[str, ...]) -> str:
    """A peft ``target_modules`` regex (full match) for the attention linears named in ``targets``."""
    return r".*\.attn\.(" + "|".join(targets) + r")"


def apply_lora(backend: SamBackend, settings: LoraSettings) -> None:
    """Inject LoRA layers into ``backend.image_encoder`` in place (module replacement by peft)."""
    from peft import LoraConfig, inject_adapter_in_model

    config = LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=lora_target_regex(settings.targets),
        bias="none",
    )
    inject_adapter_in_model(config, backend.image_encoder)
    injected = [n for n, _ in backend.image_encoder.named_parameters() if "lora_" in n]
    if not injected:
        raise ValueError(f"LoRA found no attention layers matching {settings.targets} in the image encoder")

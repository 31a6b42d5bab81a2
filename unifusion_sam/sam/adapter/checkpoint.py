"""Adapter checkpoints of UniFusion-SAM: ``save_pretrained`` / ``from_pretrained`` / ``push_to_hub``.

A checkpoint folder holds ``adapter_config.json`` (the :class:`UniFusionSamConfig`),
``adapter_model.safetensors`` (the adapter weights only, never SAM's frozen ones) and ``README.md``
(a model card). Adapter keys, independent of how SAM names its modules where possible:

- ``fusion.*``, ``mask_encoder.*`` (BatchNorm running statistics included), ``mask_token.*``,
  ``text_token.*``, ``text_point.*`` (with ``config.text_point``), ``text_encoder.proj.*``;
- ``text_encoder.backbone.*`` only when ``config.text.trainable`` (a frozen text encoder is re-loaded
  from ``config.text.model_name_or_path``);
- ``mask_decoder.*`` when ``config.train_mask_decoder`` (without SAM 2's ``conv_s0`` / ``conv_s1``, which
  stay frozen as part of encoding the image), and ``lora.*`` (the image encoder's ``lora_`` tensors under
  their module path) when LoRA is on. These two use the SAM implementation's own parameter names, so an
  adapter is tied to its ``sam_family``.

Weights are read from safetensors only: pickle files (``*.bin``/``*.pt``) are refused, never loaded.
Writes are atomic; saving, pushing and finding the files is the shared
:class:`~unifusion_sam.checkpoint.pretrained.PretrainedMixin`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn

from ...checkpoint import PretrainedMixin, check_model_name, dtype_mismatches, listing
from ...version import __version__
from ..backends import make_backend, sam_size_name
from .config import UniFusionSamConfig
from .model_card import render_model_card

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"


class AdapterLoadResult(NamedTuple):
    """Keys the model expected but the state lacked, and keys the state had that the model does not use."""

    missing_keys: list[str]
    unexpected_keys: list[str]


def sam_identity(sam: nn.Module) -> tuple[str, str, int, bool]:
    """(implementation family, size name, input size, whether the image encoder already carries LoRA layers)."""
    backend = make_backend(sam)
    has_lora = any("lora_" in n for n, _ in backend.image_encoder.named_parameters())
    return backend.family, sam_size_name(backend), backend.image_size, has_lora


class CheckpointMixin(PretrainedMixin):
    """Checkpoint methods mixed into :class:`~unifusion_sam.sam.adapter.model.UniFusionSam`: the adapter's
    tensors (never SAM's frozen weights) and the checks that a SAM fits an adapter."""

    config_class = UniFusionSamConfig
    config_name = CONFIG_NAME
    weights_name = WEIGHTS_NAME
    checkpoint_kind = "UniFusion-SAM adapter"
    upload_message = "Upload UniFusion-SAM adapter"

    # ------------------------------------------------------------------ adapter state
    def _adapter_sections(self) -> list[tuple[str, nn.Module, Callable[[str], bool] | None]]:
        """(key prefix, module, filter on the module's own state keys) for every part of the adapter."""
        sections = [("fusion.", self.fusion, None), ("mask_encoder.", self.mask_encoder, None),
                    ("mask_token.", self.mask_token, None)]
        if self.text_token is not None:
            sections.append(("text_token.", self.text_token, None))
        if self.text_point is not None:
            sections.append(("text_point.", self.text_point, None))
        if self.text_encoder is not None:
            sections.append(("text_encoder.proj.", self.text_encoder.proj, None))
            if self.config.text is not None and self.config.text.trainable:
                sections.append(("text_encoder.backbone.", self.text_encoder.backbone, None))
        if self.config.train_mask_decoder:
            frozen = tuple(part + "." for part in self.backend.encoder_side_decoder_parts)  # SAM 2's conv_s0/s1
            sections.append(("mask_decoder.", self.backend.mask_decoder,
                             (lambda k: not k.startswith(frozen)) if frozen else None))
        if self.config.lora.enabled:
            sections.append(("lora.", self.backend.image_encoder, lambda k: "lora_" in k))
        return sections

    def _adapter_entries(self) -> dict[str, tuple[int, str, torch.Tensor]]:
        entries = {}
        for i, (prefix, module, keep) in enumerate(self._adapter_sections()):
            for key, value in module.state_dict(keep_vars=True).items():
                if keep is None or keep(key):
                    entries[prefix + key] = (i, key, value)
        return entries

    def adapter_state_dict(self) -> dict[str, torch.Tensor]:
        """The adapter's tensors (parameters and persistent buffers), detached, without SAM's frozen weights."""
        return {k: v.detach() for k, (_, _, v) in self._adapter_entries().items()}

    def load_adapter_state_dict(self, state: Mapping[str, torch.Tensor], strict: bool = True) -> AdapterLoadResult:
        """Copy ``state`` (as made by :meth:`adapter_state_dict`) into the model.

        Shape mismatches and integer / boolean values for floating-point tensors (or the reverse) always raise
        ``ValueError`` naming each key with both shapes or dtypes; with ``strict``
        missing or unexpected keys raise too, else they are returned.
        """
        entries = self._adapter_entries()
        bad = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
        if bad:
            raise TypeError(f"adapter state values must be tensors; not tensors: {listing(sorted(bad))}")
        missing = sorted(set(entries) - set(state))
        unexpected = sorted(set(state) - set(entries))
        wrong = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(v.shape)}"
                 for k, (_, _, v) in entries.items() if k in state and state[k].shape != v.shape]
        dtypes = dtype_mismatches({k: v for k, (_, _, v) in entries.items()}, state)
        if wrong or dtypes or (strict and (missing or unexpected)):
            c = self.config
            lines = [f"adapter state does not match this UniFusion-SAM (sam_family={c.sam_family!r}, "
                     f"sam_size={c.sam_size!r}, image_size={c.image_size}):"]
            if wrong:
                lines.append(f"  shape mismatches ({len(wrong)}): {listing(wrong)}")
            if dtypes:
                lines.append(f"  dtype mismatches ({len(dtypes)}): {listing(dtypes)}")
            if missing and strict:
                lines.append(f"  missing keys ({len(missing)}): {listing(missing)}")
            if unexpected and strict:
                lines.append(f"  unexpected keys ({len(unexpected)}): {listing(unexpected)}")
            if strict and any(k.startswith(("mask_decoder.", "lora.")) for k in missing + unexpected):
                lines.append(f"  note: mask_decoder.* and lora.* keys use the SAM implementation's own parameter "
                             f"names, so an adapter is tied to its sam_family; this model wraps a "
                             f"{c.sam_family!r} SAM")
            raise ValueError("\n".join(lines))
        sections = self._adapter_sections()
        per_section: dict[int, dict[str, torch.Tensor]] = {}
        for key, (i, local, _) in entries.items():
            if key in state:
                per_section.setdefault(i, {})[local] = state[key]
        with torch.no_grad():
            for i, local_state in per_section.items():
                sections[i][1].load_state_dict(local_state, strict=False)
        predictor = self.__dict__.get("_predictor")
        if predictor is not None:  # cached image embeddings are stale once LoRA weights change
            predictor.cache.clear()
            predictor.reset_image()
        return AdapterLoadResult(missing, unexpected)

    # ------------------------------------------------------------------ PretrainedMixin hooks
    def checkpoint_tensors(self) -> dict[str, torch.Tensor]:
        return self.adapter_state_dict()

    def checkpoint_metadata(self) -> dict[str, str]:
        return {"sam_family": self.config.sam_family}

    def model_card(self, repo_id: str, tensors: Mapping[str, torch.Tensor], metrics: Mapping[str, Any]) -> str:
        return render_model_card(
            self.config, metrics, repo_id=repo_id,
            parts=[prefix.rstrip(".") for prefix, _, _ in self._adapter_sections()],
            num_parameters=sum(t.numel() for t in tensors.values()),
            num_bytes=sum(t.numel() * t.element_size() for t in tensors.values()),
            library_version=__version__,
        )

    @classmethod
    def from_pretrained(cls, pretrained: str | os.PathLike, sam: nn.Module | None = None,
                        revision: str | None = None, **hub_kwargs: Any):
        """Wrap ``sam`` with the adapter of a checkpoint folder or Hub repo id and load its weights.

        ``sam`` must be the SAM the adapter was trained on (same implementation, size and input size).
        ``revision`` and ``hub_kwargs`` (``cache_dir``, ``token``, ``local_files_only`` ...) go to
        ``huggingface_hub.hf_hub_download``; with ``HF_HUB_OFFLINE=1`` it reads the local HF cache.
        (``unifusion_sam.from_pretrained`` also takes a training run's folder and finds its SAM there.)
        Returns the model in eval mode.
        """
        if sam is None:
            raise TypeError("from_pretrained needs the SAM the adapter was trained on: "
                            "UniFusionSam.from_pretrained(path_or_repo_id, sam=build_sam(...))")
        return cls._load_pretrained(pretrained, revision, hub_kwargs, sam=sam)

    @classmethod
    def _from_checkpoint(cls, config: UniFusionSamConfig, state: dict[str, torch.Tensor], metadata: dict[str, str], *,
                         config_path: Path, weights_path: Path, where: str, sam: nn.Module, **_: Any):
        family, size, image_size, has_lora = sam_identity(sam)
        if (family, size, image_size) != (config.sam_family, config.sam_size, config.image_size):
            raise ValueError(
                f"the adapter in {where} was made for sam_family={config.sam_family!r}, sam_size={config.sam_size!r}, "
                f"image_size={config.image_size}, but the SAM given is sam_family={family!r}, sam_size={size!r}, "
                f"image_size={image_size}"
            )
        if has_lora:  # wrapping again would re-initialise those layers, or leave them active outside the adapter
            raise ValueError("the SAM given already carries LoRA layers from an earlier wrap_sam(..., lora=...); "
                             "pass a freshly built SAM to from_pretrained")
        saved_family = metadata.get("sam_family")
        if saved_family is not None and saved_family != config.sam_family:
            raise ValueError(f"{weights_path} was saved from a {saved_family!r} SAM but {config_path} says "
                             f"sam_family={config.sam_family!r}")
        if config.text is not None:
            check_model_name(config.text.model_name_or_path, "text.model_name_or_path", config_path)
        # The mask encoder's ImageNet initialisation is overwritten by the adapter: do not read it (a file the
        # config names) again.
        build_config = UniFusionSamConfig.from_dict(config.to_dict())
        build_config.mask.pretrained_path = None
        model = cls(sam, build_config)  # what wrap_sam(sam, adapter=config) builds: the config fits this SAM
        model.config = config
        try:
            model.load_adapter_state_dict(state, strict=True)
        except ValueError as exc:
            raise ValueError(f"{weights_path}: {exc}") from exc
        return model

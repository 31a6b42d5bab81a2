"""Checkpoints of the full UniRef++ model: ``save_pretrained`` / ``from_pretrained`` / ``push_to_hub``.

A folder holds ``config.json`` (the :class:`~unifusion_sam.uniref.modeling.config.UniRefConfig`),
``model.safetensors`` (every weight, the text encoder's included), ``README.md`` (a model card) and,
when the model has a text encoder, that encoder's architecture (``text_encoder_config.json``) and
tokenizer files, so a checkpoint loads offline without downloading the text model. Writes are atomic;
weights are read from safetensors only (no unpickling): the shared
:class:`~unifusion_sam.checkpoint.pretrained.PretrainedMixin`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ..checkpoint import (
    PretrainedMixin,
    card_tail,
    check_inside,
    check_model_name,
    listing,
    render_card,
    state_mismatch,
)
from ..version import __version__
from .modeling.config import UniRefConfig

MODEL_CONFIG_NAME = "config.json"
MODEL_WEIGHTS_NAME = "model.safetensors"
TEXT_CONFIG_NAME = "text_encoder_config.json"


def load_state_strict(model: torch.nn.Module, state: Mapping[str, torch.Tensor], where: str) -> None:
    """Copy ``state`` into ``model``; any missing, unexpected or mis-shaped key is a ``ValueError`` listing them."""
    bad = sorted(k for k, v in state.items() if not isinstance(v, torch.Tensor))
    if bad:
        raise TypeError(f"{where}: values must be tensors; not tensors: {listing(bad)}")
    problems = state_mismatch(model.state_dict(), state)
    if problems:
        raise ValueError("\n".join([f"{where} does not fit this UniRef++ model (backbone {model.config.backbone!r}):",
                                    *problems]))
    model.load_state_dict(dict(state), strict=True)


def build_text_encoder(config, folder: Path | None):
    """The text encoder of a checkpoint: architecture and tokenizer from ``folder`` when saved there
    (weights come from ``model.safetensors``), else from ``config.model_name_or_path``."""
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    from ..encoders.text import TextReferenceEncoder, resolve_text_model

    if folder is not None and (folder / TEXT_CONFIG_NAME).is_file():
        for entry in folder.iterdir():  # the tokenizer reads its files from the folder: none may link out of it
            check_inside(entry, folder, "UniRef++ checkpoint")
        path = folder / TEXT_CONFIG_NAME
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(data, dict) or not isinstance(data.get("model_type"), str):
                raise ValueError(f"expected a JSON object with a model_type, got {type(data).__name__}")
            hf_config = AutoConfig.for_model(**data)
        except (ValueError, TypeError, KeyError) as exc:  # JSONDecodeError is a ValueError
            raise ValueError(f"invalid text encoder configuration {path}: {exc}") from exc
        tokenizer = AutoTokenizer.from_pretrained(str(folder), config=hf_config)  # not the folder's config.json (ours)
    else:
        path = resolve_text_model(config.model_name_or_path)
        hf_config = AutoConfig.from_pretrained(path)
        tokenizer = AutoTokenizer.from_pretrained(path)
    return TextReferenceEncoder(config, backbone=AutoModel.from_config(hf_config), tokenizer=tokenizer)


def render_uniref_card(config: UniRefConfig, metrics: Mapping[str, Any], repo_id: str, num_parameters: int,
                       library_version: str) -> str:
    """The full ``README.md`` text of a UniRef++ checkpoint."""
    front = {"library_name": "unifusion-sam", "pipeline_tag": "image-segmentation",
             "tags": ["unifusion-sam", "uniref", "referring-image-segmentation", "few-shot-segmentation",
                      "video-object-segmentation", "referring-video-object-segmentation"]}
    text = "none (mask references only)" if config.text is None else f"`{config.text.model_name_or_path}`"
    body = [
        f"# UniRef++ `{repo_id}`",
        "",
        "The full UniRef++ model (Wu et al., \"Segment Every Reference Object in Spatial and Temporal Spaces\") in "
        "the `unifusion-sam` library: one network for referring image segmentation, few-shot segmentation, video "
        "object segmentation and referring video object segmentation, chosen at run time by the references given.",
        "",
        f"Backbone `{config.backbone}`, {config.enc_layers} + {config.dec_layers} deformable layers, "
        f"{config.num_queries} queries, UniFusion {config.fusion.num_heads} x {config.fusion.head_dim}, "
        f"text encoder {text}; {num_parameters:,d} values in `{MODEL_WEIGHTS_NAME}`. "
        f"Made with unifusion-sam {library_version}.",
        "",
        "## Usage",
        "",
        "```python",
        "import unifusion_sam",
        "",
        f'model = unifusion_sam.from_pretrained("{repo_id}")',
        'pred = model.predict(image, text="the dog on the left")             # RIS',
        "pred = model.predict(image, ref_images=[image0], ref_masks=[mask0])   # few-shot",
        "for result in model.track(frames, masks={1: first_mask}): ...        # VOS",
        "```",
        "",
        *card_tail(metrics, config.to_json(), MODEL_CONFIG_NAME),
    ]
    return render_card(front, body)


class UniRefCheckpointMixin(PretrainedMixin):
    """Checkpoint specifics of :class:`~unifusion_sam.uniref.segmenter.UniRefSegmenter`: every weight, and the
    text encoder's architecture and tokenizer next to them."""

    config_class = UniRefConfig
    config_name = MODEL_CONFIG_NAME
    weights_name = MODEL_WEIGHTS_NAME
    checkpoint_kind = "UniRef++ checkpoint"
    upload_message = "Upload UniRef++ model"

    def checkpoint_tensors(self) -> dict[str, torch.Tensor]:
        return self.state_dict()

    def checkpoint_metadata(self) -> dict[str, str]:
        return {"model_type": "uniref"}

    def write_extra_files(self, folder: Path) -> list[str]:
        if self.text_encoder is None:
            return []
        (folder / TEXT_CONFIG_NAME).write_text(self.text_encoder.backbone.config.to_json_string(), encoding="utf-8")
        written = self.text_encoder.tokenizer.save_pretrained(str(folder))
        return [TEXT_CONFIG_NAME, *sorted({Path(p).name for p in written if Path(p).is_file()})]

    def model_card(self, repo_id: str, tensors: Mapping[str, torch.Tensor], metrics: Mapping[str, Any]) -> str:
        return render_uniref_card(self.config, metrics, repo_id, sum(t.numel() for t in tensors.values()), __version__)

    @classmethod
    def from_pretrained(cls, pretrained: str | os.PathLike, revision: str | None = None, device: str | None = None,
                        **hub_kwargs: Any):
        """Load a folder or Hub repo written by ``save_pretrained`` (offline from the HF cache with
        ``HF_HUB_OFFLINE=1``) onto ``device``. Returns the model in eval mode."""
        return cls._load_pretrained(pretrained, revision, hub_kwargs, device=device)

    @classmethod
    def _from_checkpoint(cls, config: UniRefConfig, state: dict[str, torch.Tensor], metadata: dict[str, str], *,
                         config_path: Path, weights_path: Path, source: str | os.PathLike, revision: str | None,
                         hub_kwargs: dict[str, Any], device: str | None = None, **_: Any):
        folder = config_path.parent
        if config.text is not None:
            check_model_name(config.text.model_name_or_path, "text.model_name_or_path", config_path)
        if config.text is not None and not (folder / TEXT_CONFIG_NAME).is_file() and not Path(source).is_dir():
            from huggingface_hub import snapshot_download

            folder = Path(snapshot_download(str(source), revision=revision, **hub_kwargs))
        text = build_text_encoder(config.text, folder) if config.text is not None else None
        build_config = UniRefConfig.from_dict(config.to_dict())
        build_config.mask.pretrained_path = None
        model = cls(build_config, text_encoder=text)
        model.config = config
        load_state_strict(model, state, str(weights_path))
        if device is not None:
            model.to(device)
        return model

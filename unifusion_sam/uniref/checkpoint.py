"""Checkpoints of the full UniRef++ model: ``save_pretrained`` / ``from_pretrained`` / ``push_to_hub``.

A folder holds ``config.json`` (the :class:`~unifusion_sam.uniref.config.UniRefConfig`),
``model.safetensors`` (every weight, the text encoder's included), ``README.md`` (a model card) and,
when the model has a text encoder, that encoder's architecture (``text_encoder_config.json``) and
tokenizer files, so a checkpoint loads offline without downloading the text model. Writes are atomic;
weights are read from safetensors only (no unpickling).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import yaml

from ..checkpoint_io import (
    CARD_NAME,
    MODEL_CONFIG_NAME,
    MODEL_WEIGHTS_NAME,
    atomic_write,
    portable_tensors,
    read_weights,
    resolve_checkpoint,
    state_mismatch,
    write_safetensors,
)
from ..model_card import RecordedMetricsMixin, card_tail
from .config import UniRefConfig

TEXT_CONFIG_NAME = "text_encoder_config.json"
KIND = "UniRef++ checkpoint"


def load_state_strict(model: torch.nn.Module, state: Mapping[str, torch.Tensor], where: str) -> None:
    """Copy ``state`` into ``model``; any missing, unexpected or mis-shaped key is a ``ValueError`` listing them."""
    bad = sorted(k for k, v in state.items() if not isinstance(v, torch.Tensor))
    if bad:
        raise TypeError(f"{where}: values must be tensors; not tensors: {', '.join(bad[:20])}")
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
        data = json.loads((folder / TEXT_CONFIG_NAME).read_text(encoding="utf-8"))
        hf_config = AutoConfig.for_model(**data)
        tokenizer = AutoTokenizer.from_pretrained(str(folder), config=hf_config)  # not the folder's config.json (ours)
    else:
        path = resolve_text_model(config.model_name_or_path)
        hf_config = AutoConfig.from_pretrained(path)
        tokenizer = AutoTokenizer.from_pretrained(path)
    return TextReferenceEncoder(config, backbone=AutoModel.from_config(hf_config), tokenizer=tokenizer)


def render_card(config: UniRefConfig, metrics: Mapping[str, Any], repo_id: str, num_parameters: int,
                library_version: str) -> str:
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
    return "---\n" + yaml.safe_dump(front, sort_keys=False) + "---\n\n" + "\n".join(body)


class UniRefCheckpointMixin(RecordedMetricsMixin):
    """Checkpoint methods of :class:`~unifusion_sam.uniref.segmenter.UniRefSegmenter`."""

    def _write_checkpoint(self, folder: Path, repo_id: str) -> list[str]:
        from .. import __version__

        tensors = portable_tensors(self.state_dict())
        metrics = dict(self.recorded_metrics)
        write_safetensors(tensors, folder / MODEL_WEIGHTS_NAME,
                          {"format": "pt", "library": "unifusion-sam", "library_version": __version__,
                           "model_type": "uniref", "metrics": json.dumps(metrics)})
        (folder / MODEL_CONFIG_NAME).write_text(self.config.to_json() + "\n", encoding="utf-8")
        names = [MODEL_WEIGHTS_NAME, MODEL_CONFIG_NAME, CARD_NAME]
        if self.text_encoder is not None:
            (folder / TEXT_CONFIG_NAME).write_text(self.text_encoder.backbone.config.to_json_string(), encoding="utf-8")
            written = self.text_encoder.tokenizer.save_pretrained(str(folder))
            names += [TEXT_CONFIG_NAME] + sorted({Path(p).name for p in written if Path(p).is_file()})
        card = render_card(self.config, metrics, repo_id, sum(t.numel() for t in tensors.values()), __version__)
        (folder / CARD_NAME).write_text(card, encoding="utf-8")
        return list(dict.fromkeys(names))

    def save_pretrained(self, save_directory: str | os.PathLike, metrics: Mapping[str, Any] | None = None) -> None:
        """Write ``config.json``, ``model.safetensors``, ``README.md`` and the text encoder's files atomically."""
        if metrics:
            self.record_metrics(metrics)
        directory = Path(save_directory).expanduser()
        atomic_write(directory, lambda tmp: self._write_checkpoint(tmp, repo_id=str(save_directory)))

    def push_to_hub(self, repo_id: str, private: bool | None = None, token: str | None = None,
                    commit_message: str = "Upload UniRef++ model"):
        """Create ``repo_id`` if needed and upload the ``save_pretrained`` files. Returns the commit info."""
        from huggingface_hub import HfApi

        api = HfApi(token=token)
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        with tempfile.TemporaryDirectory() as tmp:
            self._write_checkpoint(Path(tmp), repo_id=repo_id)
            return api.upload_folder(repo_id=repo_id, folder_path=tmp, commit_message=commit_message, repo_type="model")

    @classmethod
    def from_pretrained(cls, pretrained: str | os.PathLike, revision: str | None = None, device: str | None = None,
                        **hub_kwargs: Any):
        """Load a folder or Hub repo written by ``save_pretrained`` (offline from the HF cache with
        ``HF_HUB_OFFLINE=1``). Returns the model in eval mode."""
        config_path, weights_path, where = resolve_checkpoint(
            pretrained, revision=revision, config_name=MODEL_CONFIG_NAME, weights_name=MODEL_WEIGHTS_NAME, kind=KIND,
            **hub_kwargs)
        try:
            config = UniRefConfig.from_json(Path(config_path).read_text(encoding="utf-8"))
        except (ValueError, TypeError) as exc:
            raise ValueError(f"invalid UniRef++ config {config_path}: {exc}") from exc
        folder = Path(config_path).parent
        if config.text is not None and not (folder / TEXT_CONFIG_NAME).is_file() and not Path(pretrained).is_dir():
            from huggingface_hub import snapshot_download

            folder = Path(snapshot_download(str(pretrained), revision=revision, **hub_kwargs))
        text = build_text_encoder(config.text, folder) if config.text is not None else None
        build_config = UniRefConfig.from_dict(config.to_dict())
        build_config.mask.pretrained_path = None
        model = cls(build_config, text_encoder=text)
        model.config = config
        state, metadata = read_weights(weights_path)
        load_state_strict(model, state, str(weights_path))
        try:
            model.recorded_metrics = json.loads(metadata.get("metrics", "{}"))
        except (ValueError, TypeError):
            pass
        if device is not None:
            model.to(device)
        return model.eval()

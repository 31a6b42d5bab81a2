"""``save_pretrained`` / ``from_pretrained`` / ``push_to_hub`` for every model family: one implementation.

:class:`PretrainedMixin` writes a checkpoint folder (the family's config file, its safetensors weights with
the library's metadata and the recorded metrics, any extra files, and a model card) atomically or to a Hub
repo, and reads one back: it finds the files (a folder or a Hub repo id), parses the config, reads the
weights (safetensors only) and hands them to the family's :meth:`PretrainedMixin._from_checkpoint`. A
family sets the class attributes and implements the hooks marked "family hook".
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import torch

from ..version import __version__
from .card import RecordedMetricsMixin
from .io import CARD_NAME, atomic_write, portable_tensors, read_weights, resolve_checkpoint, write_safetensors


class PretrainedMixin(RecordedMetricsMixin):
    """Checkpoint methods of a model with a JSON ``config`` (a :class:`~unifusion_sam.config.JsonConfig`).

    Class attributes: ``config_class``, ``config_name`` / ``weights_name`` (the folder's two files),
    ``checkpoint_kind`` (for messages) and ``upload_message`` (the Hub commit message)."""

    config_class: ClassVar[type]
    config_name: ClassVar[str]
    weights_name: ClassVar[str]
    checkpoint_kind: ClassVar[str]
    upload_message: ClassVar[str] = "Upload model"

    # ------------------------------------------------------------------ family hooks
    def checkpoint_tensors(self) -> dict[str, torch.Tensor]:
        """Family hook: the tensors written to the weights file."""
        raise NotImplementedError

    def checkpoint_metadata(self) -> dict[str, str]:
        """Family hook: extra string metadata of the weights file (e.g. which SAM an adapter is for)."""
        return {}

    def write_extra_files(self, folder: Path) -> list[str]:
        """Family hook: write further files into ``folder`` (e.g. a tokenizer); returns their names."""
        return []

    def model_card(self, repo_id: str, tensors: Mapping[str, torch.Tensor], metrics: Mapping[str, Any]) -> str:
        """Family hook: the ``README.md`` written next to the weights."""
        raise NotImplementedError

    @classmethod
    def _from_checkpoint(cls, config: Any, state: dict[str, torch.Tensor], metadata: dict[str, str], *,
                         config_path: Path, weights_path: Path, where: str, source: str | os.PathLike,
                         revision: str | None, hub_kwargs: dict[str, Any], **kwargs: Any):
        """Family hook: build the model of ``config`` and load ``state`` into it (``kwargs``: the family's
        own arguments of ``from_pretrained``)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ saving
    def _write_checkpoint(self, folder: Path, repo_id: str) -> list[str]:
        tensors = portable_tensors(self.checkpoint_tensors())
        metrics = dict(self.recorded_metrics)
        metadata = {"format": "pt", "library": "unifusion-sam", "library_version": __version__,
                    **self.checkpoint_metadata(), "metrics": json.dumps(metrics)}
        write_safetensors(tensors, folder / self.weights_name, metadata)
        (folder / self.config_name).write_text(self.config.to_json() + "\n", encoding="utf-8")
        names = [self.weights_name, self.config_name, *self.write_extra_files(folder)]
        (folder / CARD_NAME).write_text(self.model_card(repo_id, tensors, metrics), encoding="utf-8")
        return list(dict.fromkeys([*names, CARD_NAME]))

    def save_pretrained(self, save_directory: str | os.PathLike, metrics: Mapping[str, Any] | None = None) -> None:
        """Write the checkpoint folder (config, safetensors weights, model card and the family's extra
        files) atomically: a crash leaves the old folder or the new one, never a mix. ``metrics`` are added
        to :attr:`recorded_metrics` and shown in the model card."""
        if metrics:
            self.record_metrics(metrics)
        directory = Path(save_directory).expanduser()
        atomic_write(directory, lambda tmp: self._write_checkpoint(tmp, repo_id=str(save_directory)))

    def push_to_hub(self, repo_id: str, private: bool | None = None, token: str | None = None,
                    commit_message: str | None = None):
        """Create the Hub repo ``repo_id`` if needed and upload the ``save_pretrained`` files. Returns the
        commit info."""
        from huggingface_hub import HfApi

        api = HfApi(token=token)
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        with tempfile.TemporaryDirectory() as tmp:
            self._write_checkpoint(Path(tmp), repo_id=repo_id)
            return api.upload_folder(repo_id=repo_id, folder_path=tmp, repo_type="model",
                                     commit_message=commit_message or self.upload_message)

    # ------------------------------------------------------------------ loading
    @classmethod
    def _load_pretrained(cls, source: str | os.PathLike, revision: str | None, hub_kwargs: dict[str, Any],
                         **kwargs: Any):
        """Find, parse and read a checkpoint of this family, then :meth:`_from_checkpoint`; the model comes
        back in eval mode with the metrics it was saved with."""
        config_path, weights_path, where = resolve_checkpoint(
            source, revision=revision, config_name=cls.config_name, weights_name=cls.weights_name,
            kind=cls.checkpoint_kind, **hub_kwargs)
        try:
            config = cls.config_class.from_json(Path(config_path).read_text(encoding="utf-8"))
        except (ValueError, TypeError) as exc:
            raise ValueError(f"invalid {cls.checkpoint_kind} config {config_path}: {exc}") from exc
        state, metadata = read_weights(weights_path)
        model = cls._from_checkpoint(config, state, metadata, config_path=Path(config_path),
                                     weights_path=Path(weights_path), where=where, source=source,
                                     revision=revision, hub_kwargs=hub_kwargs, **kwargs)
        try:
            model.recorded_metrics = json.loads(metadata.get("metrics", "{}"))
        except (ValueError, TypeError):
            pass  # metrics are informative only
        return model.eval()

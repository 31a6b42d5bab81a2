"""Checkpoints of every model family: the file side (:mod:`.io`), model-card parts (:mod:`.card`) and
``save_pretrained`` / ``from_pretrained`` / ``push_to_hub`` (:class:`.pretrained.PretrainedMixin`)."""

from .card import RecordedMetricsMixin, card_tail, metrics_table, normalize_metrics, render_card
from .io import (
    CARD_NAME,
    PICKLE_SUFFIXES,
    atomic_write,
    atomic_write_file,
    atomic_write_text,
    check_inside,
    check_model_name,
    dtype_mismatches,
    listing,
    portable_tensors,
    read_weights,
    replace_folder,
    resolve_checkpoint,
    state_mismatch,
    write_safetensors,
)
from .pretrained import PretrainedMixin

__all__ = [
    "CARD_NAME",
    "PICKLE_SUFFIXES",
    "PretrainedMixin",
    "RecordedMetricsMixin",
    "atomic_write",
    "atomic_write_file",
    "atomic_write_text",
    "card_tail",
    "check_inside",
    "check_model_name",
    "dtype_mismatches",
    "listing",
    "metrics_table",
    "normalize_metrics",
    "portable_tensors",
    "read_weights",
    "render_card",
    "replace_folder",
    "resolve_checkpoint",
    "state_mismatch",
    "write_safetensors",
]

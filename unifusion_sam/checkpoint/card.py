"""Parts of the model cards (``README.md`` next to a checkpoint) shared by every family.

Metrics recorded on a model (``model.record_metrics({...})``) are flattened to JSON-ready scalars and
shown as a Markdown table; :class:`RecordedMetricsMixin` gives a model the ``recorded_metrics`` store;
:func:`render_card` joins the Hub's YAML front matter and a family's Markdown body.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from typing import Any

import yaml


class RecordedMetricsMixin:
    """``recorded_metrics`` / ``record_metrics``: metrics written into the model card by ``save_pretrained``."""

    @property
    def recorded_metrics(self) -> dict[str, Any]:
        """Metrics written into the model card (and the weights' metadata) by ``save_pretrained``."""
        metrics = self.__dict__.get("_recorded_metrics")
        if metrics is None:
            metrics = self.__dict__["_recorded_metrics"] = {}
        return metrics

    @recorded_metrics.setter
    def recorded_metrics(self, value: Mapping[str, Any]) -> None:
        self.__dict__["_recorded_metrics"] = normalize_metrics(value)

    def record_metrics(self, metrics: Mapping[str, Any]) -> None:
        """Add or update metrics (``{"refcoco/val/oIoU": 0.71}``; nested dicts join keys with ``/``)."""
        self.recorded_metrics.update(normalize_metrics(metrics))


def normalize_metrics(metrics: Mapping[str, Any], prefix: str = "") -> dict[str, float | int | str | bool]:
    """Flatten ``metrics`` (nested dicts join their keys with ``/``) into JSON-ready scalars.

    Values may be Python/numpy numbers, 0-d tensors (anything with ``.item()``), bools or strings.
    """
    if not isinstance(metrics, Mapping):
        raise TypeError(f"metrics must be a dict of name -> value, got {type(metrics).__name__}")
    out: dict[str, float | int | str | bool] = {}
    for name, value in metrics.items():
        if not isinstance(name, str) or not name:
            raise TypeError(f"metric names must be non-empty strings, got {name!r}")
        key = f"{prefix}{name}"
        if isinstance(value, Mapping):
            out.update(normalize_metrics(value, prefix=key + "/"))
            continue
        if hasattr(value, "item") and not isinstance(value, (str, bytes)):
            try:
                value = value.item()
            except (ValueError, RuntimeError) as exc:  # a tensor/array with more than one element
                raise TypeError(f"metric {key!r} must be a scalar, got {type(value).__name__}") from exc
        if isinstance(value, bool) or isinstance(value, str):
            out[key] = value
        elif isinstance(value, numbers.Integral):
            out[key] = int(value)
        elif isinstance(value, numbers.Real):
            out[key] = float(value)
        else:
            raise TypeError(f"metric {key!r} must be a number, bool or string, got {type(value).__name__}: {value!r}")
    return out


def _format_value(value: Any) -> str:
    if isinstance(value, float) and math.isfinite(value):
        return f"{value:.4f}"
    return str(value)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def metrics_table(metrics: Mapping[str, Any]) -> str:
    """A Markdown table ``| metric | value |`` (empty string when there are no metrics)."""
    if not metrics:
        return ""
    rows = ["| metric | value |", "| --- | --- |"]
    rows += [f"| {_cell(k)} | {_cell(_format_value(v))} |" for k, v in metrics.items()]
    return "\n".join(rows)


def card_tail(metrics: Mapping[str, Any], config_json: str, config_name: str) -> list[str]:
    """The ``## Metrics`` and ``## Configuration`` sections of a model card, as lines."""
    return ["## Metrics", "", metrics_table(metrics) or "No metrics recorded.", "", "## Configuration", "",
            f"`{config_name}`:", "", "```json", config_json, "```", ""]


def render_card(front: Mapping[str, Any], body: list[str]) -> str:
    """A model card: ``front`` as YAML front matter (what the Hugging Face Hub reads: library, tags, base
    model ...), then the ``body`` lines."""
    header = yaml.safe_dump(dict(front), sort_keys=False, allow_unicode=True)
    return "---\n" + header + "---\n\n" + "\n".join(body)

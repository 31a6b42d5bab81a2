"""Base class for configuration dataclasses serialised to and from JSON.

Every configuration of the library is a plain ``@dataclass`` that inherits :class:`JsonConfig`.
Subclasses validate their fields in ``__post_init__`` and raise :class:`ValueError` /
:class:`TypeError` naming the offending value, so an invalid config never gets constructed.
Nested configs (a field whose type is another :class:`JsonConfig`) round-trip through dicts.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import typing
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T", bound="JsonConfig")


class JsonConfig:
    """Mixin for dataclass configs: ``to_dict``/``from_dict``/``to_json``/``from_json``/``save``/``load``."""

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            out[f.name] = _plain(getattr(self, f.name))
        return out

    @classmethod
    def from_dict(cls: type[T], data: dict[str, Any]) -> T:
        if not isinstance(data, dict):
            raise TypeError(f"{cls.__name__}.from_dict expects a dict, got {type(data).__name__}")
        fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(data) - set(fields))
        if unknown:
            raise ValueError(f"unknown keys for {cls.__name__}: {unknown}; valid keys: {sorted(fields)}")
        hints = typing.get_type_hints(cls)
        kwargs: dict[str, Any] = {}
        for name, value in data.items():
            sub = _config_type(hints.get(name))
            if sub is not None and isinstance(value, dict):
                try:
                    value = sub.from_dict(value)
                except (ValueError, TypeError) as exc:  # named by the section it is in
                    raise (TypeError if isinstance(exc, TypeError) else ValueError)(f"{name}: {exc}") from exc
            elif isinstance(value, list) and _is_tuple_type(hints.get(name)):
                value = tuple(value)
            kwargs[name] = value
        return cls(**kwargs)

    def to_json(self, indent: int = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, sort_keys=True)

    @classmethod
    def from_json(cls: type[T], text: str) -> T:
        return cls.from_dict(json.loads(text))

    def save(self, path: str | os.PathLike) -> None:
        """Write the config as JSON atomically (temporary file, fsync, rename; the folder is created)."""
        from .checkpoint.io import atomic_write_text  # imports torch: only when saving

        atomic_write_text(path, self.to_json() + "\n")

    @classmethod
    def load(cls: type[T], path: str | os.PathLike) -> T:
        """The config in the JSON file ``path``; a ``ValueError`` / ``TypeError`` names the file."""
        try:
            return cls.from_json(Path(path).read_text(encoding="utf-8"))
        except (ValueError, TypeError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            raise (TypeError if isinstance(exc, TypeError) else ValueError)(f"{path}: {exc}") from exc

    def coerce_sections(self, sections: dict[str, type[JsonConfig]], optional: tuple[str, ...] = ()) -> None:
        """Turn nested-config fields given as dicts into their configs (``None`` allowed for ``optional``
        fields); any other type is a ``TypeError`` naming the field."""
        for name, kind in sections.items():
            value = getattr(self, name)
            if isinstance(value, dict):
                try:
                    setattr(self, name, kind.from_dict(value))
                except (ValueError, TypeError) as exc:  # named by the section it is in
                    raise (TypeError if isinstance(exc, TypeError) else ValueError)(f"{name}: {exc}") from exc
            elif not isinstance(value, kind) and not (value is None and name in optional):
                allowed = f"a {kind.__name__}, a dict" + (" or None" if name in optional else "")
                raise TypeError(f"{name} must be {allowed}, got {type(value).__name__}")

    def replace(self: T, **changes: Any) -> T:
        """A copy with ``changes`` applied (validated again)."""
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]


def _plain(value: Any) -> Any:
    """Nested configs to dicts and tuples to lists, recursively (JSON-ready)."""
    if isinstance(value, JsonConfig):
        return value.to_dict()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _config_type(hint: Any) -> type[JsonConfig] | None:
    candidates = typing.get_args(hint) or (hint,)
    for c in candidates:
        if isinstance(c, type) and issubclass(c, JsonConfig):
            return c
    return None


def _is_tuple_type(hint: Any) -> bool:
    candidates = typing.get_args(hint) if typing.get_origin(hint) is typing.Union else (hint,)
    return any(c is tuple or typing.get_origin(c) is tuple for c in candidates)


def preset_names(dirs: list[Path], prefix: str = "") -> list[str]:
    """Names of the JSON presets in ``dirs`` whose file name starts with ``prefix``."""
    return sorted({p.stem for d in dirs if d.is_dir() for p in d.glob(f"{prefix}*.json")})


def load_preset_file(dirs: list[Path], name: str, cls: type[T], kind: str) -> T:
    """The JSON preset ``name`` (the first ``<dir>/<name>.json`` of ``dirs``) read into ``cls``; a
    ``ValueError`` naming the available ones otherwise."""
    for d in dirs:
        path = d / f"{name}.json"
        if path.is_file():
            try:
                return cls.from_dict(json.loads(path.read_text(encoding="utf-8")))
            except (ValueError, TypeError) as exc:
                raise (TypeError if isinstance(exc, TypeError) else ValueError)(f"{kind} preset {path}: {exc}") from exc
    raise ValueError(f"unknown {kind} preset {name!r}; available: {preset_names(dirs)}")


# ----------------------------------------------------------------------------- validators
MAX_WIDTH = 16384
"""The largest layer width a config may ask for (a ``Linear(MAX_WIDTH, MAX_WIDTH)`` is 1 GiB): a larger one
is a corrupt or hostile config, refused before anything is allocated."""
MAX_SIDE = 8192
"""The largest image side (in pixels) or sequence length a model config may ask for."""


def check_positive_int(name: str, value: Any, maximum: int | None = None) -> None:
    """``value`` is an int > 0 (and <= ``maximum`` when given); a ``TypeError`` / ``ValueError`` naming it."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {value!r} ({type(value).__name__})")
    if value <= 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be at most {maximum}, got {value!r}")


def check_probability(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {value!r} ({type(value).__name__})")
    if not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value!r}")


def check_choice(name: str, value: Any, choices: typing.Iterable[Any]) -> None:
    choices = tuple(choices)
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")


def native_bf16(device: str | object) -> bool:
    """Whether bfloat16 matrix products run natively on ``device`` (a ``torch.device`` or its type
    string): a CUDA GPU that supports bf16, or a CPU with Intel's AMX-BF16 tiles (where bf16
    convolutions run about twice as fast as float32). Other CPUs emulate bf16 or barely speed it up."""
    import torch

    kind = getattr(device, "type", device)
    if kind == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if kind == "cpu":
        return _cpu_has_amx_bf16()
    return False


@functools.cache
def _cpu_has_amx_bf16() -> bool:  # asked on every mask-encoder forward with compute_dtype "auto"
    import torch

    return bool(torch.cpu.get_capabilities().get("amx_bf16", False))

"""The file side of every family's checkpoints: atomic folder writes, safetensors I/O, finding a checkpoint.

A checkpoint folder is a config file, a safetensors weights file and a ``README.md`` model card; each
family names its two files (a UniFusion-SAM adapter: peft's ``adapter_config.json`` +
``adapter_model.safetensors``; the full UniRef++ model: transformers' ``config.json`` +
``model.safetensors``). Weights are read from safetensors only; a folder that holds only pickle files
(``*.bin``/``*.pt``) is refused without unpickling anything. A Hub repo id is resolved with
``huggingface_hub.hf_hub_download``, which reads the local HF cache when ``HF_HUB_OFFLINE=1``.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

CARD_NAME = "README.md"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")


def portable_tensors(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """CPU, contiguous, and no two tensors sharing memory (safetensors refuses shared storage)."""
    out, seen = {}, set()
    for key, t in tensors.items():
        t = t.detach().to("cpu")
        storage = t.untyped_storage()
        whole = t.is_contiguous() and t.storage_offset() == 0 and storage.nbytes() == t.numel() * t.element_size()
        if not whole or storage.data_ptr() in seen:
            t = t.contiguous().clone()
        seen.add(t.untyped_storage().data_ptr())
        out[key] = t
    return out


def listing(items: list[str], show: int = 20) -> str:
    """``a, b, c ... and N more``: at most ``show`` items of a list in an error message."""
    more = f" ... and {len(items) - show} more" if len(items) > show else ""
    return ", ".join(items[:show]) + more


def state_mismatch(own: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor]) -> list[str]:
    """Lines naming every shape mismatch, missing key and unexpected key of ``state`` against a model's own
    state dict ``own`` (empty when it fits exactly)."""
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(v.shape)}"
             for k, v in own.items() if k in state and tuple(state[k].shape) != tuple(v.shape)]
    lines = []
    if wrong:
        lines.append(f"  shape mismatches ({len(wrong)}): {listing(wrong)}")
    if missing:
        lines.append(f"  missing keys ({len(missing)}): {listing(missing)}")
    if unexpected:
        lines.append(f"  unexpected keys ({len(unexpected)}): {listing(unexpected)}")
    return lines


def _fsync(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms that cannot open folders
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def atomic_write(directory: Path, write: Callable[[Path], list[str]]) -> None:
    """Run ``write(tmp)`` into a fresh folder next to / inside ``directory``, then move its files in.

    A new ``directory`` appears in one ``os.replace`` of the whole folder; in an existing one each file
    is replaced atomically after all of them were written, so a crash never leaves a half-written file.
    """
    if directory.exists() and not directory.is_dir():
        raise NotADirectoryError(f"cannot save a checkpoint into {directory}: it is a file")
    fresh = not directory.exists()
    base = directory.parent if fresh else directory
    base.mkdir(parents=True, exist_ok=True)
    tmp = base / f".{directory.name}.tmp-{uuid.uuid4().hex[:12]}"
    tmp.mkdir()
    try:
        names = write(tmp)
        for name in names:
            _fsync(tmp / name)
        if fresh:
            try:
                os.replace(tmp, directory)
                _fsync(base)
                return
            except OSError:  # created meanwhile by someone else: fall back to moving the files
                directory.mkdir(parents=True, exist_ok=True)
        for name in names:
            os.replace(tmp / name, directory / name)
        _fsync(directory)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_safetensors(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> None:
    from safetensors.torch import save_file

    save_file(tensors, str(path), metadata=metadata)


def read_weights(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and metadata of a checkpoint's safetensors file; an unreadable file is a ValueError naming it."""
    from safetensors import safe_open

    path = str(path)
    try:
        with safe_open(path, framework="pt", device="cpu") as f:
            metadata = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:  # noqa: BLE001 - SafetensorError, OSError, ...: re-raised naming the file
        raise ValueError(f"cannot read weights {path}: not a valid safetensors file ({exc})") from exc
    return tensors, metadata


def resolve_checkpoint(source: str | os.PathLike, revision: str | None = None, *, config_name: str,
                       weights_name: str, kind: str, **hub_kwargs: Any) -> tuple[Path, Path, str]:
    """Find ``(config, weights, description)`` of a ``kind`` checkpoint in a folder or a Hub repo."""
    folder = Path(source).expanduser()
    if folder.is_dir():
        config, weights = folder / config_name, folder / weights_name
        if not config.is_file():
            raise FileNotFoundError(f"{folder} is not a {kind}: {config_name} is missing")
        if not weights.is_file():
            pickles = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)
            if pickles:
                raise ValueError(f"{folder} has no {weights_name}, only pickle files {pickles}: unifusion-sam loads "
                                 "weights from safetensors only and never unpickles (convert them with "
                                 "safetensors.torch.save_file from a trusted environment)")
            raise FileNotFoundError(f"{folder} is not a {kind}: {weights_name} is missing")
        return config, weights, str(folder)
    if folder.exists():
        raise NotADirectoryError(f"{source} is a file; give the checkpoint folder or a Hub repo id")
    from huggingface_hub import hf_hub_download
    from huggingface_hub.utils import EntryNotFoundError

    repo_id = str(source)
    where = f"Hub repo {repo_id!r}" + (f" (revision {revision!r})" if revision else "")
    try:
        config = hf_hub_download(repo_id, config_name, revision=revision, **hub_kwargs)
    except Exception as exc:  # noqa: BLE001 - not found, offline and not cached, invalid id, ...
        raise FileNotFoundError(f"{source!r} is not a local folder, and its {config_name} could not be found "
                                f"as a Hugging Face Hub repo ({type(exc).__name__}: {exc})") from exc
    try:
        weights = hf_hub_download(repo_id, weights_name, revision=revision, **hub_kwargs)
    except EntryNotFoundError as exc:  # includes LocalEntryNotFoundError (offline, not cached)
        raise ValueError(f"{where} has no {weights_name} (or it is not cached): unifusion-sam loads "
                         f"weights from safetensors only and never unpickles .bin/.pt files ({exc})") from exc
    return Path(config), Path(weights), where

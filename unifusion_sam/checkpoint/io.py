"""The file side of every family's checkpoints: atomic folder writes, safetensors I/O, finding a checkpoint.

A checkpoint folder is a config file, a safetensors weights file and a ``README.md`` model card; each
family names its two files (a UniFusion-SAM adapter: peft's ``adapter_config.json`` +
``adapter_model.safetensors``; the full UniRef++ model: transformers' ``config.json`` +
``model.safetensors``). Weights are read from safetensors only; a folder that holds only pickle files
(``*.bin``/``*.pt``) is refused without unpickling anything, and so is a file whose dtype cannot be the
model's (:func:`state_mismatch`). A Hub repo id is resolved with ``huggingface_hub.hf_hub_download``, which
reads the local HF cache when ``HF_HUB_OFFLINE=1``; a checkpoint's files must lie inside its folder
(:func:`check_inside`: no symbolic link out of it, except the HF cache's own links to its blobs).

Writes (see ``docs/guide/security.md``): :func:`atomic_write_file` replaces one file through a temporary
file in the same folder (flushed and fsynced, then ``os.replace``); :func:`atomic_write` writes a whole
folder into a temporary one and puts it in place with :func:`replace_folder` (on Linux one atomic
``renameat2(RENAME_EXCHANGE)``), so a crash leaves the complete old version or the complete new one.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import os
import shutil
import sys
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


def dtype_kind(dtype: torch.dtype) -> str:
    """``floating``, ``complex``, ``bool`` or ``integer``: what a tensor's values mean (a float16 checkpoint
    fits a float32 model; integers stored where the model has floats do not)."""
    if dtype.is_floating_point:
        return "floating"
    if dtype.is_complex:
        return "complex"
    return "bool" if dtype == torch.bool else "integer"


def dtype_mismatches(own: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor]) -> list[str]:
    """``key: checkpoint int32 vs model float32`` for every key whose kind of dtype differs from the model's
    (``load_state_dict`` would silently cast those bytes into numbers they never were)."""
    return [f"{k}: checkpoint {str(state[k].dtype).removeprefix('torch.')} vs model "
            f"{str(v.dtype).removeprefix('torch.')}"
            for k, v in own.items() if k in state and isinstance(state[k], torch.Tensor)
            and dtype_kind(state[k].dtype) != dtype_kind(v.dtype)]


def state_mismatch(own: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor]) -> list[str]:
    """Lines naming every shape or dtype-kind mismatch, missing key and unexpected key of ``state`` against a
    model's own state dict ``own`` (empty when it fits exactly)."""
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(v.shape)}"
             for k, v in own.items() if k in state and tuple(state[k].shape) != tuple(v.shape)]
    dtypes = dtype_mismatches(own, state)
    lines = []
    if wrong:
        lines.append(f"  shape mismatches ({len(wrong)}): {listing(wrong)}")
    if dtypes:
        lines.append(f"  dtype mismatches ({len(dtypes)}): {listing(dtypes)}")
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


def fsync_tree(folder: Path) -> None:
    """fsync every file and folder under ``folder`` (so a renamed folder is on disk, not only in the cache)."""
    for dirpath, _, files in os.walk(folder):
        for name in files:
            _fsync(Path(dirpath, name))
        _fsync(Path(dirpath))


def _temporary(target: Path, kind: str = "tmp") -> Path:
    """A fresh hidden name next to ``target``: ``.<name>.<kind>-<random>``."""
    return target.parent / f".{target.name}.{kind}-{uuid.uuid4().hex[:12]}"


def atomic_write_file(path: str | os.PathLike, write: Callable[[Path], Any]) -> Path:
    """Write one file through ``write(tmp)`` into a temporary file next to ``path``, fsync it and
    ``os.replace`` it into place: a reader (or a crash, SIGKILL included) sees the old file or the new one,
    never a part. The folder is created; the temporary file is removed on error. Returns ``path``."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise IsADirectoryError(f"cannot write the file {path}: it is a folder")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary(path)
    try:
        write(tmp)
        _fsync(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync(path.parent)
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """:func:`atomic_write_file` of a UTF-8 text (a JSON results file, a config, a pointer)."""
    return atomic_write_file(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


@functools.lru_cache(maxsize=1)
def _renameat2() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):  # glibc < 2.28, musl
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


def exchange(a: Path, b: Path) -> bool:
    """Swap the paths ``a`` and ``b`` in one atomic step (Linux ``renameat2(RENAME_EXCHANGE)``); ``False``
    where the system or file system cannot, an ``OSError`` for any other failure."""
    fn = _renameat2()
    if fn is None:
        return False
    at_fdcwd, rename_exchange = -100, 2
    if fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False
    raise OSError(code, os.strerror(code), str(a), None, str(b))


def replace_folder(new: Path, target: Path) -> None:
    """Put the complete folder ``new`` at ``target`` (same file system), consuming ``new``: a new ``target``
    appears in one ``os.replace``; an existing one is swapped with ``new`` in one atomic exchange and the old
    version deleted. Where the system cannot exchange, the old folder is first renamed aside (a crash in
    between leaves it complete, as ``.<name>.old-*``, and no ``target``), never mixed with the new one."""
    if not os.path.lexists(target):
        try:
            os.replace(new, target)
            _fsync(target.parent)
            return
        except OSError:
            if not target.is_dir():  # not "created meanwhile by someone else": a real failure
                raise
    if exchange(new, target):
        _fsync(target.parent)
        shutil.rmtree(new, ignore_errors=True)  # the old version now
        return
    old = _temporary(target, "old")
    os.replace(target, old)
    os.replace(new, target)
    _fsync(target.parent)
    shutil.rmtree(old, ignore_errors=True)


def _carry_over(old: Path, new: Path) -> None:
    """Hard-link (or copy) into ``new`` every file of ``old`` that the new version does not write (a user's
    notes next to a checkpoint), so that replacing the folder keeps them."""
    for entry in old.iterdir():
        dest = new / entry.name
        if os.path.lexists(dest) or entry.name.startswith(f".{old.name}.tmp-"):
            continue
        if entry.is_symlink():
            os.symlink(os.readlink(entry), dest)
            continue
        try:
            os.link(entry, dest)
        except OSError:
            shutil.copy2(entry, dest)


def _swappable(directory: Path) -> bool:
    """Whether an existing ``directory`` can be replaced as a whole: a folder of files only (not a working
    folder holding sub-folders), on the same file system as its parent, which is writable."""
    try:
        same_device = os.stat(directory).st_dev == os.stat(directory.parent).st_dev
        files_only = not any(e.is_dir() and not e.is_symlink() for e in directory.iterdir())
    except OSError:
        return False
    return same_device and files_only and os.access(directory.parent, os.W_OK)


def atomic_write(directory: Path, write: Callable[[Path], list[str]]) -> None:
    """Run ``write(tmp)`` into a fresh temporary folder, then put its files at ``directory`` all at once.

    A new ``directory`` appears in one ``os.replace`` of the whole folder; an existing one (a folder of files)
    is replaced by :func:`replace_folder` after the files of it that ``write`` does not produce were carried
    over, so a crash (SIGKILL included) leaves the complete old version or the complete new one, never a mix
    or a partial file. A folder that cannot be swapped as a whole (it holds sub-folders, is a mount point, or
    its parent is read-only) has each file replaced atomically instead, the checkpoint's files in the order
    ``write`` returns them.
    """
    directory = Path(os.path.realpath(directory)) if Path(directory).is_symlink() else Path(directory)
    if directory.exists() and not directory.is_dir():
        raise NotADirectoryError(f"cannot save a checkpoint into {directory}: it is a file")
    whole = not directory.exists() or _swappable(directory)
    base = directory.parent if whole else directory
    base.mkdir(parents=True, exist_ok=True)
    tmp = base / f".{directory.name}.tmp-{uuid.uuid4().hex[:12]}"
    tmp.mkdir()
    try:
        names = write(tmp)
        if whole:
            if directory.is_dir():
                _carry_over(directory, tmp)
            fsync_tree(tmp)
            replace_folder(tmp, directory)
            return
        for name in names:
            _fsync(tmp / name)
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


def check_inside(path: str | os.PathLike, folder: str | os.PathLike, what: str = "checkpoint") -> Path:
    """``path`` when, symbolic links followed, it lies inside ``folder``; a ``ValueError`` naming both otherwise.

    The Hugging Face cache's layout is allowed: the files of a ``snapshots/<commit>/`` folder are links to
    the same repo's ``blobs/``."""
    path, folder = Path(path), Path(folder)
    real, root = Path(os.path.realpath(path)), Path(os.path.realpath(folder))
    roots = [root]
    if root.parent.name == "snapshots":
        roots.append(root.parent.parent / "blobs")
    if not any(real == r or r in real.parents for r in roots):
        raise ValueError(f"{path} resolves to {real}, outside the {what} folder {folder}: unifusion-sam reads a "
                         f"{what}'s files only from inside its folder (copy the file in rather than linking to it)")
    return path


def check_model_name(value: str, field: str, config_path: str | os.PathLike) -> str:
    """A model that a checkpoint's config names (a Hub id or a folder, e.g. its text encoder) must not climb
    out of folders: a ``..`` component is a ``ValueError`` naming the config file and the value."""
    parts = str(value).replace("\\", "/").split("/")
    if ".." in parts:
        raise ValueError(f"{config_path}: {field} = {value!r} climbs out of its folder ('..'); a checkpoint names a "
                         "model by Hub id or by a folder path without '..'")
    return value


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
        return check_inside(config, folder, kind), check_inside(weights, folder, kind), str(folder)
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
    # the cache's snapshot folder: huggingface_hub refuses names and revisions that climb out; checked again here
    config, weights = Path(config), Path(weights)
    return check_inside(config, config.parent, kind), check_inside(weights, weights.parent, kind), where

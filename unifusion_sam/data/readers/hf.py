"""Adapter for a Hugging Face ``datasets`` dataset with image / mask (/ text) columns.

Works on a ``datasets.Dataset`` (or a ``DatasetDict`` with ``split``), or on any sequence of
row dicts. Nothing is downloaded: load the dataset yourself (``datasets.load_dataset(...)``).

- image column: ``PIL.Image``, an ``H x W x 3`` / ``H x W`` / ``H x W x 4`` uint8 array (or nested
  lists), an undecoded ``{"bytes": ..., "path": ...}`` dict, or a file path.
- mask column: the same kinds. With ``mask_value`` set, the mask is ``label == mask_value`` (label
  maps of several objects). Otherwise: bool arrays as is, 0/1 masks ``== 1``, 0..255 masks
  ``>= mask_threshold`` (default 128); a mask whose largest value is in ``2..threshold-1`` looks like a
  label map and is refused unless ``mask_value`` says which id to take. An RGB mask whose channels differ is refused (its colours
  are not a binary mask).
- text column (optional): the referring sentence.

Rows are decoded when indexed; a row whose image or mask cannot be decoded, is missing, or whose
mask size differs from its image raises :class:`DataError` naming the row and column (iteration
applies ``on_error``).
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image

from ..io import DataError, load_rgb
from ..types import TASKS, ReferringExpression, RefSample
from ._common import Reader, check_choice

HF_RECORD_KINDS = ("expression", "sample")


def _to_pil(value: Any) -> Image.Image | None:
    if isinstance(value, Image.Image):
        return value
    if isinstance(value, dict) and ("bytes" in value or "path" in value):
        if value.get("bytes") is not None:
            im = Image.open(io.BytesIO(value["bytes"]))
            im.load()
            return im
        if value.get("path"):
            im = Image.open(value["path"])
            im.load()
            return im
    return None


def _image_array(value: Any, where: str) -> np.ndarray:
    if value is None:
        raise DataError(f"{where}: missing image")
    if isinstance(value, (str, os.PathLike)):
        return load_rgb(value)
    try:
        im = _to_pil(value)
        arr = np.asarray(im.convert("RGB")) if im is not None else np.asarray(value)
    except (OSError, SyntaxError, ValueError, TypeError) as exc:
        raise DataError(f"{where}: cannot decode image: {exc}") from exc
    if arr.dtype != np.uint8:
        raise DataError(f"{where}: image dtype {arr.dtype} is not uint8")
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    elif arr.ndim == 3 and arr.shape[2] in (3, 4):
        arr = arr[:, :, :3]
    else:
        raise DataError(f"{where}: image of shape {arr.shape} is not H x W x 3")
    return np.ascontiguousarray(arr)


def _mask_array(value: Any, where: str, threshold: int, mask_value: int | None) -> np.ndarray:
    if value is None:
        raise DataError(f"{where}: missing mask")
    try:
        if isinstance(value, (str, os.PathLike)):
            with Image.open(value) as im:
                im.load()
                value = im.copy()
        im = _to_pil(value)
        if im is not None:
            arr = np.asarray(im.convert("L") if im.mode in ("1", "LA") else im)
        else:
            arr = np.asarray(value)
    except (OSError, SyntaxError, ValueError, TypeError) as exc:
        raise DataError(f"{where}: cannot decode mask: {exc}") from exc
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    elif arr.ndim == 3 and arr.shape[2] in (3, 4):
        rgb = arr[:, :, :3]
        if not (np.array_equal(rgb[:, :, 0], rgb[:, :, 1]) and np.array_equal(rgb[:, :, 0], rgb[:, :, 2])):
            raise DataError(
                f"{where}: colour mask (channels differ) is not a binary mask; set mask_value on a label map"
            )
        arr = rgb[:, :, 0]
    if arr.ndim != 2:
        raise DataError(f"{where}: mask of shape {arr.shape} is not H x W")
    if mask_value is not None:
        return arr == mask_value
    if arr.dtype == bool:
        return arr.copy()
    if not np.issubdtype(arr.dtype, np.number):
        raise DataError(f"{where}: mask dtype {arr.dtype} is not numeric")
    top = arr.max(initial=0)
    if top <= 1:
        return arr == 1
    if top < threshold:
        raise DataError(
            f"{where}: mask values reach only {top} (< {threshold}); it looks like a label map, set mask_value"
        )
    return arr >= threshold


class HFSegmentation(Reader):
    """Records from a Hugging Face dataset (see module docstring).

    Args:
        dataset: ``datasets.Dataset``, ``datasets.DatasetDict`` (then ``split`` is required), or a
            sequence of row dicts.
        split: the split of a ``DatasetDict``; for a ``Dataset`` it must match ``dataset.split``
            when that is set.
        image_column / mask_column / text_column: column names (``text_column=None``: no text).
        record: ``"expression"`` -> :class:`ReferringExpression` (needs ``text_column``);
            ``"sample"`` -> :class:`RefSample` of ``task``.
        task: the task of the samples (``"ris"`` when there is a text column, else ``"fss"``).
        mask_threshold / mask_value: see module docstring.
        name: used in error messages (default: the dataset's ``info.dataset_name`` or ``"hf"``).
    """

    def __init__(
        self,
        dataset: Any,
        *,
        split: str | None = None,
        image_column: str = "image",
        mask_column: str = "mask",
        text_column: str | None = None,
        record: str = "expression",
        task: str | None = None,
        mask_threshold: int = 128,
        mask_value: int | None = None,
        name: str | None = None,
        on_error: str = "raise",
        verify: bool = False,
    ) -> None:
        super().__init__(on_error=on_error, verify=verify)
        if hasattr(dataset, "keys") and callable(dataset.keys) and not isinstance(dataset, Sequence):
            splits = list(dataset.keys())
            if split is None:
                raise ValueError(f"dataset has splits {splits}; pass split=")
            check_choice(split, splits, "split")
            dataset = dataset[split]
        elif split is not None and getattr(dataset, "split", None) is not None and str(dataset.split) != split:
            raise ValueError(f"dataset is split {str(dataset.split)!r}, not {split!r}")
        if not hasattr(dataset, "__len__") or not hasattr(dataset, "__getitem__"):
            raise TypeError(f"dataset must be indexable with a length, got {type(dataset).__name__}")
        self.dataset, self.split = dataset, split
        self.record = check_choice(record, HF_RECORD_KINDS, "record")
        if record == "expression" and text_column is None:
            raise ValueError("record='expression' needs text_column")
        self.task = check_choice(task or ("ris" if text_column else "fss"), TASKS, "task")
        columns = getattr(dataset, "column_names", None)
        if columns is not None:
            for col in (image_column, mask_column, text_column):
                if col is not None and col not in columns:
                    raise ValueError(f"column {col!r} not in dataset columns {list(columns)}")
        self.image_column, self.mask_column, self.text_column = image_column, mask_column, text_column
        if isinstance(mask_threshold, bool) or not isinstance(mask_threshold, int) or not 0 < mask_threshold <= 255:
            raise ValueError(f"mask_threshold must be an int in 1..255, got {mask_threshold!r}")
        self.mask_threshold, self.mask_value = mask_threshold, mask_value
        info = getattr(dataset, "info", None)
        self.name = name or getattr(info, "dataset_name", None) or "hf"
        self._entries = list(range(len(dataset)))
        self._finish_init()

    def _build(self, index: int) -> ReferringExpression | RefSample:
        where = f"{self.name}{f'[{self.split}]' if self.split else ''} row {index}"
        try:
            row = self.dataset[index]
        except (OSError, SyntaxError, ValueError, TypeError) as exc:
            raise DataError(f"{where}: cannot decode row: {exc}") from exc
        if not isinstance(row, dict):
            raise DataError(f"{where}: row is a {type(row).__name__}, not a dict")
        image = _image_array(row.get(self.image_column), f"{where} column {self.image_column!r}")
        mask = _mask_array(
            row.get(self.mask_column), f"{where} column {self.mask_column!r}", self.mask_threshold, self.mask_value
        )
        if mask.shape != image.shape[:2]:
            raise DataError(f"{where}: mask shape {mask.shape} differs from image shape {image.shape[:2]}")
        text = None
        if self.text_column is not None:
            text = row.get(self.text_column)
            if not isinstance(text, str):
                raise DataError(f"{where} column {self.text_column!r}: text is a {type(text).__name__}, not a str")
        meta = {"index": index, "split": self.split, "dataset": self.name}
        if self.record == "expression":
            return ReferringExpression(image=image, mask=mask, sentence=text, ref_id=str(index), meta=meta)
        return RefSample(task=self.task, image=image, mask=mask, text=text, meta=meta)

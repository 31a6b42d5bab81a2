"""Splitting evaluation work across ``accelerate launch`` processes and gathering the results.

Every runner takes a ``state`` with the part of :class:`accelerate.PartialState` it uses
(``num_processes``, ``process_index``, ``is_main_process``, ``split_between_processes``,
``wait_for_everyone``) and a ``gather`` callable (default :func:`gather_lists`), so that tests can
drive a runner as one process of a fake multi-process run. Work items are split into contiguous
chunks in process order, so the gathered list has the order of a single-process run.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tqdm import tqdm

from ..checkpoint.io import atomic_write_text

Gather = Callable[[list], list]


def default_state(cpu: bool | None = None):
    """The process's :class:`accelerate.PartialState` (one process unless started by ``accelerate launch``).

    ``cpu`` (default: when CUDA is not available) makes ``accelerate launch --multi_gpu --num_processes N``
    run N CPU processes with the gloo backend; without it accelerate treats each CPU process as a
    separate single-process run. The state is created once per process; later calls return it.
    """
    import torch
    from accelerate import PartialState

    if cpu is None:
        cpu = not torch.cuda.is_available()
    return PartialState(cpu=cpu)


def process_device(requested: str | None, state) -> str:
    """The device this process runs on: ``requested`` (e.g. ``--device``), except that a bare ``cuda`` in a
    multi-process run means each process's own GPU (``state.device``); ``None`` means ``state.device``."""
    if requested is None or (requested == "cuda" and state.num_processes > 1):
        return str(state.device)
    return requested


def gather_lists(local: list) -> list:
    """Concatenate every process's ``local`` list in process order (the list itself with one process)."""
    from accelerate.utils import gather_object

    return list(gather_object(list(local)))


def split_items(items: Sequence, state) -> list:
    """The contiguous chunk of ``items`` that this process handles (``state.split_between_processes``)."""
    with state.split_between_processes(list(items)) as mine:
        return list(mine)


def share(items: Sequence, state, run: Callable[[Any], Any], *, gather: Gather | None = None,
          progress: bool = True, desc: str = "items", unit: str = "item") -> list | None:
    """Apply ``run`` to this process's share of ``items``; the main process gets every result in order.

    A progress bar is shown on the main process only (it counts the main process's share). Returns
    ``None`` on the other processes.
    """
    mine = split_items(items, state)
    local = [run(item) for item in tqdm(mine, desc=desc, unit=unit, disable=not (progress and state.is_main_process),
                                        dynamic_ncols=True)]
    results = (gather or gather_lists)(local)
    state.wait_for_everyone()
    return results if state.is_main_process else None


def write_json(path: str | os.PathLike, data: dict) -> Path:
    """Write ``data`` as indented JSON atomically (NaN becomes ``null``): a crash, SIGKILL included, leaves the
    old file or the new one, never a part (:func:`~unifusion_sam.checkpoint.io.atomic_write_text`); creates
    the parent folder."""
    return atomic_write_text(path, json.dumps(_finite(data), indent=2) + "\n")


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value

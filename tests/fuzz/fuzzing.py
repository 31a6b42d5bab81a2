"""Shared machinery of the fuzz tests (issue 34, item 1): the error rule, example counting and a hard
per-example deadline.

The rule every fuzz test checks (:func:`refused` / :func:`ok_or_refused`): a call on malformed input fails
with a ``ValueError``, ``TypeError``, ``FileNotFoundError`` or one of the library's own error types (all
subclasses of ``ValueError``: :class:`~unifusion_sam.data.io.DataError`,
:class:`~unifusion_sam.uniref.convert.ConversionError`, the demo's ``DemoError``), with a message that
names the offending value or file; never an ``IndexError``, ``KeyError``, ``AttributeError``, a
``RuntimeError`` from inside torch, a crash or a hang. Valid input must succeed.

:func:`counted` wraps a test's body: it counts the examples Hypothesis runs per entry point (the
``make fuzz`` report, see ``conftest.py``) and arms a hard deadline (``SIGALRM``) around each example, so
a hang fails the example instead of the run.
"""

from __future__ import annotations

import collections
import functools
import os
import signal
import threading
from collections.abc import Callable, Iterable

ALLOWED = (ValueError, TypeError, FileNotFoundError, NotADirectoryError, IsADirectoryError)
"""What a refusal may raise (the library's own errors subclass ``ValueError``; a file given where a folder is
expected, or the reverse, is the ``FileNotFoundError``'s siblings ``NotADirectoryError`` / ``IsADirectoryError``)."""

COUNTS: collections.Counter[str] = collections.Counter()
"""Examples run per entry point in this pytest process."""

HARD_DEADLINE_S = float(os.environ.get("FUZZ_HARD_DEADLINE_S", "60"))


class ExampleHang(Exception):
    """An example ran past the hard deadline (a hang): never an acceptable outcome."""


def _alarm(signum, frame):  # pragma: no cover - only on a hang
    raise ExampleHang(f"example ran past the hard deadline of {HARD_DEADLINE_S:g} s")


def counted(entry_point: str) -> Callable:
    """Decorator (innermost, below ``@given``): count each example under ``entry_point`` and fail one that
    runs past :data:`HARD_DEADLINE_S`."""

    def decorate(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            COUNTS[entry_point] += 1
            armed = threading.current_thread() is threading.main_thread() and hasattr(signal, "SIGALRM")
            if armed:
                previous = signal.signal(signal.SIGALRM, _alarm)
                signal.setitimer(signal.ITIMER_REAL, HARD_DEADLINE_S)
            try:
                return fn(*args, **kwargs)
            finally:
                if armed:
                    signal.setitimer(signal.ITIMER_REAL, 0)
                    signal.signal(signal.SIGALRM, previous)

        return wrapper

    return decorate


def _names(message: str, needles: Iterable) -> bool:
    return any(str(n) in message for n in needles)


def check_refusal(exc: BaseException, needles: Iterable, what: str = "") -> None:
    """``exc`` follows the rule: an allowed type whose message contains one of ``needles``. An empty needle or
    one punctuation character (a bare quote) would match almost any message, so those do not count."""
    needles = [n for n in needles if n is not None and (len(str(n)) > 1 or str(n).isalnum())]
    if not isinstance(exc, ALLOWED):
        raise AssertionError(f"{what}: {type(exc).__name__} is not a clean refusal: {exc}") from exc
    message = str(exc)
    if needles and not _names(message, needles):
        raise AssertionError(f"{what}: {type(exc).__name__} message names none of {needles}: {message!r}") from exc


def refused(fn: Callable, *args, needles: Iterable = (), what: str = "", **kwargs) -> BaseException:
    """``fn(*args, **kwargs)`` must fail cleanly (see :func:`check_refusal`); returns the exception."""
    try:
        fn(*args, **kwargs)
    except ExampleHang:
        raise
    except Exception as exc:  # noqa: BLE001 - every kind is judged by check_refusal
        check_refusal(exc, needles, what or getattr(fn, "__name__", "call"))
        return exc
    raise AssertionError(f"{what or getattr(fn, '__name__', 'call')}: malformed input was accepted")


def ok_or_refused(fn: Callable, *args, needles: Iterable = (), what: str = "", **kwargs):
    """``fn(*args, **kwargs)``'s result, or ``None`` when it fails cleanly (see :func:`check_refusal`)."""
    try:
        return fn(*args, **kwargs)
    except ExampleHang:
        raise
    except Exception as exc:  # noqa: BLE001 - every kind is judged by check_refusal
        check_refusal(exc, needles, what or getattr(fn, "__name__", "call"))
        return None


class Quiet:
    """``obj`` with a short ``repr`` (``name``), so that a falsifying example does not print a whole model."""

    def __init__(self, obj, name: str) -> None:
        self.__dict__["_obj"], self.__dict__["_name"] = obj, name

    def __getattr__(self, attr):
        return getattr(self.__dict__["_obj"], attr)

    def __getitem__(self, key):
        return self.__dict__["_obj"][key]

    def __repr__(self) -> str:
        return self.__dict__["_name"]


def too_thin_for_sam(size: tuple[int, int], image_size: int = 256) -> bool:
    """Whether SAM's resize-longest-side to ``image_size`` would shrink an ``H x W`` image's shorter side to 0."""
    h, w = size
    scale = image_size / max(h, w)
    return int(h * scale + 0.5) < 1 or int(w * scale + 0.5) < 1

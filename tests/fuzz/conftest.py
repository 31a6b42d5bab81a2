"""Hypothesis profiles of the fuzz tests and the examples-tried report.

Profiles (``HYPOTHESIS_PROFILE``): ``fast`` (the default, part of ``make test``: a few examples per test,
derandomized so the suite is reproducible) and ``long`` (``make fuzz``: random, many examples per test;
``FUZZ_SCALE`` multiplies its example counts). Each example also has a hard deadline
(``FUZZ_HARD_DEADLINE_S``, :mod:`fuzzing`).

With ``FUZZ_REPORT=path`` (or the long profile) the session ends with the number of examples tried per entry
point and in total, printed, and written as JSON to ``path`` when given.
"""

from __future__ import annotations

import json
import os
import time
from datetime import timedelta
from pathlib import Path

from fuzzing import COUNTS
from hypothesis import HealthCheck, Phase, settings

_COMMON = dict(
    deadline=timedelta(seconds=20),  # Hypothesis' own per-example deadline (the hard one is in fuzzing.counted)
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    database=None,
    print_blob=True,
)
settings.register_profile("fast", max_examples=12, derandomize=True,
                          phases=(Phase.explicit, Phase.generate, Phase.shrink), **_COMMON)
settings.register_profile("long", max_examples=int(500 * float(os.environ.get("FUZZ_SCALE", "1"))), **_COMMON)
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "fast")
settings.load_profile(PROFILE)

_START = time.monotonic()


def _wanted() -> bool:
    return bool(os.environ.get("FUZZ_REPORT")) or PROFILE == "long"


def _report() -> dict:
    counts = dict(sorted(COUNTS.items()))
    return {"profile": PROFILE, "max_examples_per_test": settings.default.max_examples,
            "examples_per_entry_point": counts, "total_examples": sum(counts.values()),
            "wall_s": round(time.monotonic() - _START, 1)}


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if not _wanted() or not COUNTS:
        return
    report = _report()
    terminalreporter.section(f"fuzz: examples tried (profile {PROFILE})")
    width = max(len(k) for k in report["examples_per_entry_point"])
    for name, n in report["examples_per_entry_point"].items():
        terminalreporter.write_line(f"{name:<{width}}  {n:>7}")
    terminalreporter.write_line(f"{'total':<{width}}  {report['total_examples']:>7}   ({report['wall_s']} s)")
    path = os.environ.get("FUZZ_REPORT")
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(report, indent=2) + "\n")
        terminalreporter.write_line(f"written to {path}")

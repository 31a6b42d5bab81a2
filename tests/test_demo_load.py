"""benchmarks/demo_load.py: how it sorts answers, and a short run of it against a real demo server."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

pytest.importorskip("gradio_client", reason="the load test needs gradio_client (the demo / dev extra)")
SCRIPT = Path(__file__).parent.parent / "benchmarks" / "demo_load.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("demo_load", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_answers_are_sorted_by_kind(bench):
    from gradio_client.exceptions import AppError
    from gradio_client.utils import QueueError

    assert bench.classify("⚠ slip.zip: the member '../x.png' climbs out of its folder (..)") == "zip_slip"
    assert bench.classify("⚠ the image (b.png) is 9 x 9 = 81 pixels; ... (max_image_pixels)") == "too_many_pixels"
    assert bench.classify("⚠ something nobody planned for") == "other"
    assert bench.answered_error(QueueError("Queue is full! Please try again."))[:2] == ("error", "queue_full")
    assert bench.answered_error(AppError("Cannot read image (x.png): not an image this demo can decode"))[:2] == (
        "error", "not_an_image")
    unclear = AppError("The upstream Gradio app has raised an exception but has not enabled verbose error reporting.")
    assert bench.answered_error(unclear)[:2] == ("failed", "server_error_without_message")
    assert bench.answered_error(ConnectionRefusedError("refused"))[1] == "connection (ConnectionRefusedError)"
    records = [{"tab": "Video", "step": "s", "expected": "result", "outcome": "result", "kind": "result", "seconds": 1.0,
                "message": ""},
               {"tab": "Video", "step": "s", "expected": "zip_slip", "outcome": "error", "kind": "zip_slip",
                "seconds": 3.0, "message": ""},
               {"tab": "Video", "step": "s", "expected": "result", "outcome": "failed", "kind": "timeout",
                "seconds": 9.0, "message": ""}]
    summary = bench.summarise(records)
    assert summary["clear_errors"] == {"zip_slip": 1} and summary["failed"] == {"timeout": 1}
    assert summary["latency_by_tab"]["Video"]["p50_s"] == 2.0 and summary["unexpected_count"] == 0


@pytest.mark.slow
def test_short_load_run_against_a_real_server(bench, tmp_path):
    """2 users, a handful of requests, then a burst past a queue of 1: every request is answered as expected."""
    (tmp_path / "demo.json").write_text(json.dumps({"max_queue": 1, "max_upload_mb": 2}))
    out = tmp_path / "report.json"
    report = bench.main(["--users", "2", "--duration", "90", "--max-requests", "10", "--warmup", "0", "--burst", "8",
                         "--timeout", "60", "--demo-config", str(tmp_path / "demo.json"), "--json", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(report))
    assert report["warmup"]["requests"] >= 20 and report["warmup"]["unexpected"] == []  # every scenario once
    assert report["requests"] == 10 and report["failed"] == {} and report["unexpected_count"] == 0
    assert report["results"] + sum(report["clear_errors"].values()) == 10
    assert report["server_alive_after_run"] and report["settings"]["queue"] == {"max_size": 1, "concurrency_limit": 1}
    burst = report["burst"]
    assert burst["failed"] == {} and burst["results"] + burst["clear_errors"].get("queue_full", 0) == 8
    assert burst["clear_errors"].get("queue_full", 0) >= 1  # 8 at once do not fit a queue of 1
    memory = report["memory_mb"]
    assert memory["after_warmup"] > 100 and memory["after_run"] > 100 and memory["ratio"] is not None

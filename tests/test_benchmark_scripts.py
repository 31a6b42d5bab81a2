"""Every script under benchmarks/ imports (its names still exist in the library) and has a ``main``."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

SCRIPTS = sorted((Path(__file__).parent.parent / "benchmarks").glob("*.py"))


@pytest.mark.parametrize("path", SCRIPTS, ids=[p.stem for p in SCRIPTS])
def test_benchmark_script_imports(path, monkeypatch):
    monkeypatch.syspath_prepend(str(path.parent))  # as when run as a script: siblings import each other
    spec = importlib.util.spec_from_file_location(f"benchmark_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # module level only: __main__ guards keep main() from running
    assert callable(getattr(module, "main", None)), f"{path.name} has no main()"


def test_vos_failures_reports_drift_ceiling_and_lost_tracks(tmp_path, monkeypatch, capsys):
    import json

    import torch

    from unifusion_sam.checkpoint.io import portable_tensors, write_safetensors
    from unifusion_sam.data.synthetic import SyntheticConfig
    from unifusion_sam.loading import load_model

    torch.set_num_threads(1)
    run = tmp_path / "run"
    model = load_model("none", sam="tiny", seed=0)
    model.save_pretrained(run / "adapter")
    write_safetensors(portable_tensors(model.sam.state_dict()), run / "sam_tiny.safetensors", {"format": "pt"})
    bench_dir = Path(__file__).parent.parent / "benchmarks"
    monkeypatch.syspath_prepend(str(bench_dir))
    spec = importlib.util.spec_from_file_location("vos_failures", bench_dir / "vos_failures.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    short = SyntheticConfig(seed=1000, image_size=(64, 64), num_frames=4)  # short videos keep this fast
    monkeypatch.setattr(bench, "run_split", lambda run, family, config=None: (None, short, 10, {}))
    out = tmp_path / "vos.json"
    report = bench.main(["--run", str(run), "--videos", "2", "--json", str(out), "--threads", "1", "--no-progress"])
    assert json.loads(out.read_text()) == json.loads(json.dumps(report))
    assert len(report["drift"]) == 4 and report["drift"][0] == 1.0  # frame 0: the given masks themselves
    assert 0.0 <= report["ceiling"] <= 1.0 and report["objects"] >= 2
    assert sum(n for n, _ in report["ceiling_by_area"].values()) == report["objects"]
    assert 0 <= report["lost"] <= report["objects"]
    assert len(report["drift_teacher_forced"]) == 4 and report["drift_teacher_forced"][0] == 1.0
    assert 0 <= report["lost_teacher_forced"] <= report["objects"]
    assert 0.9 < report["resolution_bound"] <= 1.0  # 64 px frames: SAM's 64 x 64 logits are finer than the frame
    assert bench.resolution_bound(object(), None, None) is None  # the full UniRef++ family has no SAM logits
    printed = capsys.readouterr().out
    assert "ceiling" in printed and "teacher-forced" in printed
    # an untrained adapter predicts SAM's prompt-less mask whatever the reference: far below a perfect copy
    assert report["ceiling"] < 0.9
    assert bench.iou(np.ones((2, 2), bool), np.eye(2, dtype=bool)) == 0.5


def test_example_search_bound_by_hand(monkeypatch):
    """The re-finding bound: the examples-only decode's IoU on the scored frames (the first and last dropped),
    and the per-frame better of that and the track's."""
    from types import SimpleNamespace

    bench_dir = Path(__file__).parent.parent / "benchmarks"
    monkeypatch.syspath_prepend(str(bench_dir))
    spec = importlib.util.spec_from_file_location("example_tracking", bench_dir / "example_tracking.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    truth = np.zeros((4, 6, 6), np.uint8)
    truth[:, 1:3, 1:3] = 5  # object 5, 4 pixels on every frame
    half = truth[0] == 5
    half[1, 1:3] = False  # 2 of its 4 pixels: IoU 0.5
    answers = {0: np.zeros((6, 6), bool), 1: truth[1] == 5, 2: half, 3: np.ones((6, 6), bool)}
    calls = []

    class Stub:
        def predict(self, frame, ref_images, ref_masks):
            calls.append((int(frame), len(ref_images), len(ref_masks)))
            return SimpleNamespace(mask=answers[int(frame)])

    frames = [np.int64(t) for t in range(4)]
    alone, best = bench.search_bound(Stub(), frames, list(truth), 5, [("img", "m"), ("img", "m")], [0.25, 0.75])
    assert calls == [(1, 2, 2), (2, 2, 2)]
    assert alone == pytest.approx((1.0 + 0.5) / 2) and best == pytest.approx((1.0 + 0.75) / 2)

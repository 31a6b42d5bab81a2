"""eval/evaluate_vos.py and the DAVIS folder scorer on a tiny DAVIS-layout fixture (2 videos, 5 frames, 2 objects)."""

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from unifusion_sam.data.io import DataError, load_label_map, save_palette_png
from unifusion_sam.metrics import score_davis_results

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "eval" / "evaluate_vos.py"
H, W = 24, 32
VIDEOS = ("vidA", "vidB")
FRAMES = [f"{t:05d}" for t in range(5)]


def _load_script():
    spec = importlib.util.spec_from_file_location("evaluate_vos", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _gt_frame(video_index: int, t: int) -> np.ndarray:
    lab = np.zeros((H, W), dtype=np.uint8)
    lab[2 + t : 9 + t, 3 + video_index : 12 + video_index] = 1
    lab[13:21, 15 + t : 27] = 2
    return lab


@pytest.fixture()
def davis(tmp_path):
    """A DAVIS root with perfect results (copies of the annotations)."""
    root = tmp_path / "DAVIS"
    (root / "ImageSets" / "2017").mkdir(parents=True)
    (root / "ImageSets" / "2017" / "val.txt").write_text("\n".join(VIDEOS) + "\n")
    results = tmp_path / "results"
    for v, video in enumerate(VIDEOS):
        for t, name in enumerate(FRAMES):
            save_palette_png(root / "Annotations" / "480p" / video / f"{name}.png", _gt_frame(v, t))
    shutil.copytree(root / "Annotations" / "480p", results)
    return root, results


def _edit(path: Path, fn) -> None:
    save_palette_png(path, fn(load_label_map(path)))


def test_perfect_results(davis, tmp_path, capsys):
    root, results = davis
    out = tmp_path / "scores.json"
    rc = _load_script().main(
        ["--benchmark", "davis2017", "--root", str(root), "--results", str(results), "--out", str(out), "--no-progress"]
    )
    assert rc == 0
    data = json.loads(out.read_text())
    for key in ("J&F-Mean", "J-Mean", "J-Recall", "F-Mean", "F-Recall"):
        assert data[key] == 1.0
    assert data["J-Decay"] == 0.0 and data["F-Decay"] == 0.0
    assert set(data["per_object"]) == {"vidA_1", "vidA_2", "vidB_1", "vidB_2"}
    assert data["per_object"]["vidB_2"] == {"J&F-Mean": 1.0, "J-Mean": 1.0, "F-Mean": 1.0}
    assert data["num_videos"] == 2 and data["num_objects"] == 4
    printed = capsys.readouterr().out
    assert "J&F-Mean" in printed and "vidA_1" in printed


def test_first_and_last_result_frames_are_not_read(davis):
    root, results = davis
    for video in VIDEOS:
        (results / video / "00000.png").unlink()
        save_palette_png(results / video / "00004.png", np.full((H, W), 7, dtype=np.uint8))
    s = score_davis_results(root, results, progress=False)
    assert s["J&F-Mean"] == 1.0


def test_object_deleted_everywhere(davis):
    root, results = davis
    for video in VIDEOS:
        for name in FRAMES:
            _edit(results / video / f"{name}.png", lambda m: np.where(m == 2, 0, m))
    s = score_davis_results(root, results, progress=False)
    # objects _1 perfect, objects _2 J = F = 0 on every scored frame
    assert s["J-Mean"] == pytest.approx(0.5)
    assert s["F-Mean"] == pytest.approx(0.5)
    assert s["J&F-Mean"] == pytest.approx(0.5)
    assert s["J-Recall"] == pytest.approx(0.5)
    assert s["J-Decay"] == pytest.approx(0.0)
    assert s["per_object"]["vidA_2"]["J-Mean"] == 0.0


def test_object_deleted_in_one_middle_frame(davis):
    root, results = davis
    _edit(results / "vidB" / "00002.png", lambda m: np.where(m == 2, 0, m))
    s = score_davis_results(root, results, progress=False)
    # scored frames 1..3; vidB_2 gets J = F = [1, 0, 1]: mean 2/3, recall 2/3,
    # bins ids = [0, 1, 1, 2, 2] -> mean([1, 0]) - mean([1]) = -0.5
    assert s["per_object"]["vidB_2"]["J-Mean"] == pytest.approx(2 / 3)
    assert s["J-Mean"] == pytest.approx((3 + 2 / 3) / 4)
    assert s["F-Mean"] == pytest.approx((3 + 2 / 3) / 4)
    assert s["J&F-Mean"] == pytest.approx(11 / 12)
    assert s["J-Recall"] == pytest.approx(11 / 12)
    assert s["J-Decay"] == pytest.approx(-0.5 / 4)
    assert s["F-Decay"] == pytest.approx(-0.5 / 4)


def test_missing_result_frame(davis):
    root, results = davis
    missing = results / "vidA" / "00002.png"
    missing.unlink()
    with pytest.raises(DataError, match="missing result frame") as info:
        score_davis_results(root, results, progress=False)
    assert str(missing) in str(info.value)


def test_extra_object_label(davis):
    root, results = davis
    bad = results / "vidB" / "00001.png"
    _edit(bad, lambda m: np.where(m == 1, 3, m))
    with pytest.raises(DataError, match="object id 3") as info:
        score_davis_results(root, results, progress=False)
    assert str(bad) in str(info.value)


def test_result_of_different_size(davis):
    root, results = davis
    bad = results / "vidA" / "00003.png"
    save_palette_png(bad, np.zeros((H - 4, W), dtype=np.uint8))
    with pytest.raises(DataError) as info:
        score_davis_results(root, results, progress=False)
    message = str(info.value)
    assert str(bad) in message and "(20, 32)" in message and "(24, 32)" in message


def test_non_palette_result(davis):
    root, results = davis
    bad = results / "vidA" / "00001.png"
    Image.fromarray(load_label_map(bad)).save(bad)  # uint8 H x W -> an "L" PNG
    with pytest.raises(DataError, match="palette") as info:
        score_davis_results(root, results, progress=False)
    assert str(bad) in str(info.value)


def test_empty_video(davis):
    root, results = davis
    folder = root / "Annotations" / "480p" / "vidB"
    for png in folder.glob("*.png"):
        png.unlink()
    with pytest.raises(DataError, match="'vidB' has no frames") as info:
        score_davis_results(root, results, progress=False)
    assert str(folder) in str(info.value)


def test_missing_video_list_and_results_folder(davis, tmp_path):
    root, results = davis
    with pytest.raises(DataError, match="test-dev"):
        score_davis_results(root, results, split="test-dev", progress=False)
    shutil.rmtree(results / "vidB")
    with pytest.raises(DataError, match="results folder of video 'vidB'"):
        score_davis_results(root, results, progress=False)


def test_script_reports_data_errors(davis, tmp_path, capsys):
    root, results = davis
    (results / "vidA" / "00002.png").unlink()
    out = tmp_path / "scores.json"
    rc = _load_script().main(
        ["--benchmark", "davis2017", "--root", str(root), "--results", str(results), "--out", str(out), "--no-progress"]
    )
    assert rc == 2
    assert "00002.png" in capsys.readouterr().err
    assert not out.exists()


def test_script_runs_as_a_program(davis, tmp_path):
    root, results = davis
    out = tmp_path / "cli" / "scores.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--benchmark",
            "davis2017",
            "--root",
            str(root),
            "--results",
            str(results),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(out.read_text())["J&F-Mean"] == 1.0
    assert "J&F-Mean" in proc.stdout

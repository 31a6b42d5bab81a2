"""The ``unifusion-sam`` command line (segment / track) on tiny images with the tiny random SAM."""

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from unifusion_sam.cli import main
from unifusion_sam.data.frames import read_label_file
from unifusion_sam.data.io import davis_palette

H, W = 24, 32
TINY = ["--sam", "tiny", "--device", "cpu"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def adapter_dir(tmp_path_factory):
    from unifusion_sam.loading import load_model

    path = tmp_path_factory.mktemp("adapter") / "ckpt"
    load_model("none", sam="tiny", seed=0).save_pretrained(path)
    return path


@pytest.fixture()
def inputs(tmp_path):
    rng = np.random.default_rng(0)
    frames = tmp_path / "frames"
    frames.mkdir()
    for t in range(3):
        Image.fromarray(rng.integers(0, 256, (H, W, 3), dtype=np.uint8)).save(frames / f"{t:05d}.jpg")
    labels = np.zeros((H, W), dtype=np.uint8)
    labels[3:10, 4:12] = 1
    labels[12:20, 16:28] = 2
    first = Image.fromarray(labels, mode="P")
    first.putpalette(davis_palette().reshape(-1).tolist())
    first.save(tmp_path / "first.png")
    Image.fromarray((labels == 1).astype(np.uint8) * 255).save(tmp_path / "ref.png")  # 0/255 "L" mask
    return {"frames": frames, "first": tmp_path / "first.png", "ref": tmp_path / "ref.png", "labels": labels}


def test_segment_from_text_with_saved_adapter(inputs, tmp_path, adapter_dir, capsys):
    out = tmp_path / "out"
    rc = main(["segment", str(inputs["frames"] / "00000.jpg"), "--text", "the square on the left",
               "--checkpoint", str(adapter_dir), *TINY, "--out-dir", str(out)])
    assert rc == 0, capsys.readouterr().err
    mask = Image.open(out / "00000_mask.png")
    assert mask.mode == "L" and mask.size == (W, H) and set(np.unique(np.asarray(mask))) <= {0, 255}
    overlay = Image.open(out / "00000_overlay.png")
    assert overlay.mode == "RGB" and overlay.size == (W, H)
    printed = capsys.readouterr().out
    assert "score" in printed and str(out / "00000_mask.png") in printed


def test_segment_k_shot_and_points(inputs, tmp_path):
    frames, out = inputs["frames"], tmp_path / "out"
    rc = main(["segment", str(frames / "00002.jpg"), "--ref-image", str(frames / "00000.jpg"), "--ref-mask",
               str(inputs["ref"]), "--ref-image", str(frames / "00001.jpg"), "--ref-mask", str(inputs["first"]),
               "--checkpoint", "none", *TINY, "--out-dir", str(out)])
    assert rc == 0
    assert (out / "00002_mask.png").is_file() and (out / "00002_overlay.png").is_file()
    rc = main(["segment", str(frames / "00001.jpg"), "--point", "5,6", "--neg-point", "20,15", "--checkpoint", "none",
               *TINY, "--out-dir", str(out)])
    assert rc == 0 and Image.open(out / "00001_mask.png").size == (W, H)


def test_segment_bad_input(inputs, tmp_path, capsys):
    frames = inputs["frames"]
    rc = main(["segment", str(frames / "00000.jpg"), "--ref-image", str(frames / "00001.jpg"), "--ref-image",
               str(frames / "00002.jpg"), "--ref-mask", str(inputs["ref"]), "--checkpoint", "none", *TINY])
    assert rc == 2 and "2 --ref-image but 1 --ref-mask" in capsys.readouterr().err
    rc = main(["segment", str(frames / "00000.jpg"), "--checkpoint", "none", *TINY])
    assert rc == 2 and "nothing to segment" in capsys.readouterr().err
    missing = tmp_path / "missing.jpg"
    rc = main(["segment", str(missing), "--text", "x", "--checkpoint", "none", *TINY])
    assert rc == 2 and str(missing) in capsys.readouterr().err


def test_track_folder_from_palette_mask(inputs, tmp_path):
    out = tmp_path / "track"
    rc = main(["track", str(inputs["frames"]), "--mask", str(inputs["first"]), "--sigma", "-10", "--checkpoint",
               "none", *TINY, "--out-dir", str(out), "--gif"])
    assert rc == 0
    for t in range(3):
        im = Image.open(out / "masks" / f"{t:05d}.png")
        assert im.mode == "P" and im.size == (W, H) and set(np.unique(np.asarray(im))) <= {0, 1, 2}
        assert Image.open(out / "overlays" / f"{t:05d}.png").size == (W, H)
    assert np.array_equal(np.asarray(Image.open(out / "masks" / "00000.png")), inputs["labels"])  # the given masks
    gif = Image.open(out / "track.gif")
    assert gif.format == "GIF" and gif.size == (W, H)


def test_track_from_text(inputs, tmp_path):
    out = tmp_path / "track"
    rc = main(["track", str(inputs["frames"]), "--text", "the big square", "--checkpoint", "none", *TINY,
               "--out-dir", str(out), "--no-overlays"])
    assert rc == 0
    assert sorted(p.name for p in (out / "masks").iterdir()) == ["00000.png", "00001.png", "00002.png"]
    assert not (out / "overlays").exists() and not (out / "track.gif").exists() and (out / "track.mp4").is_file()


def test_track_bad_input(inputs, tmp_path, capsys, monkeypatch):
    frames = str(inputs["frames"])
    assert main(["track", frames, "--checkpoint", "none", *TINY]) == 2
    assert "nothing to track" in capsys.readouterr().err
    small = tmp_path / "small.png"
    Image.fromarray(np.ones((4, 4), dtype=np.uint8) * 255).save(small)
    assert main(["track", frames, "--mask", str(small), "--checkpoint", "none", *TINY, "--out-dir",
                 str(tmp_path / "o")]) == 2
    assert "4x4" in capsys.readouterr().err
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"not really a video")
    monkeypatch.setitem(sys.modules, "imageio", None)  # as if the [video] extra were not installed
    monkeypatch.setitem(sys.modules, "imageio.v3", None)
    monkeypatch.setitem(sys.modules, "imageio_ffmpeg", None)
    assert main(["track", str(video), "--text", "a dog", "--checkpoint", "none", *TINY]) == 2
    assert 'pip install "unifusion-sam[video]"' in capsys.readouterr().err


def test_read_label_file(inputs, tmp_path):
    assert np.array_equal(read_label_file(inputs["first"]), inputs["labels"])
    assert np.array_equal(read_label_file(inputs["ref"]), (inputs["labels"] == 1).astype(np.uint8))


def test_python_dash_m_entry_point():
    proc = subprocess.run([sys.executable, "-m", "unifusion_sam", "--help"], capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == 0 and "segment" in proc.stdout and "track" in proc.stdout


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A training run's output folder as `make demo` writes it: the adapter and, next to it, its SAM."""
    import torch
    from safetensors.torch import save_file

    from unifusion_sam.loading import load_model

    run = tmp_path_factory.mktemp("run") / "default"
    model = load_model("none", sam="tiny", seed=3)
    model.save_pretrained(run / "adapter")
    save_file({k: v.contiguous() for k, v in model.sam.state_dict().items()}, str(run / "sam_tiny.safetensors"))
    return run, {k: v.clone() for k, v in model.adapter_state_dict().items()}, torch


def test_every_command_takes_a_run_folder_and_defaults_to_outputs_default(inputs, tmp_path, run_dir, capsys,
                                                                            monkeypatch):
    run, _, _ = run_dir
    rc = main(["track", str(inputs["frames"]), "--mask", str(inputs["first"]), "--checkpoint", str(run),
               "--device", "cpu", "--out-dir", str(tmp_path / "t1")])
    assert rc == 0, capsys.readouterr().err  # a run folder brings its SAM: no --sam needed
    assert len(list((tmp_path / "t1" / "masks").glob("*.png"))) == 3

    # without --checkpoint: outputs/default when it exists (as the demo does) ...
    monkeypatch.chdir(tmp_path)
    (tmp_path / "outputs").mkdir()
    import shutil

    shutil.copytree(run, tmp_path / "outputs" / "default")
    rc = main(["segment", str(inputs["frames"] / "00000.jpg"), "--text", "the square", "--device", "cpu",
               "--out-dir", str(tmp_path / "s1")])
    assert rc == 0, capsys.readouterr().err
    rc = main(["track", str(inputs["frames"]), "--mask", str(inputs["first"]), "--device", "cpu",
               "--out-dir", str(tmp_path / "t2"), "--no-overlays"])
    assert rc == 0, capsys.readouterr().err
    same = [np.array_equal(np.asarray(Image.open(tmp_path / d / "masks" / "00002.png")),
                           np.asarray(Image.open(tmp_path / "t1" / "masks" / "00002.png"))) for d in ("t2",)]
    assert same == [True]

    # ... else a clear error that says what to do
    shutil.rmtree(tmp_path / "outputs")
    rc = main(["segment", str(inputs["frames"] / "00000.jpg"), "--text", "the square", "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc == 2 and "no model to load" in err and "make demo" in err and "--checkpoint" in err


def test_from_pretrained_of_a_run_folder_gives_the_saved_adapter_on_its_sam(run_dir):
    import unifusion_sam

    run, saved, torch = run_dir
    model = unifusion_sam.from_pretrained(run)
    assert model.config.sam_size == "tiny"
    for k, v in model.adapter_state_dict().items():
        assert torch.equal(v, saved[k]), k
    with pytest.raises(ValueError, match="only applies to an untrained model"):
        unifusion_sam.load_model(run, preset="sam-tiny")  # a saved checkpoint carries its own config

"""``unifusion-sam track`` as a stream: video files read frame by frame, masks / MP4 written as it goes, objects of
every kind (first-frame masks, sentences, examples, objects added later), Ctrl-C, and sources that cannot be
opened."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from unifusion_sam.cli import main
from unifusion_sam.cli.track import parse_add
from unifusion_sam.data.io import load_label_map, save_palette_png
from unifusion_sam.data.synthetic import SyntheticConfig, SyntheticDataset, object_examples, sample_video
from unifusion_sam.data.video import Mp4Writer, open_video_source

iio = pytest.importorskip("imageio.v3")
pytest.importorskip("imageio_ffmpeg")
pytestmark = pytest.mark.usefixtures("one_thread")
TINY = ["--checkpoint", "none", "--sam", "tiny", "--device", "cpu", "--max-short-side", "0"]


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """A 12-frame synthetic video as an MP4, its first frame's palette mask and an example of object 1."""
    root = tmp_path_factory.mktemp("clip")
    config = SyntheticConfig(seed=1000, image_size=(64, 80), num_frames=12)
    video = SyntheticDataset("heldout", "vos", 1, config).video(0)
    with Mp4Writer(root / "clip.mp4", fps=10) as writer:
        for frame in video.frames:
            writer.write(np.asarray(frame))
    save_palette_png(root / "first.png", np.asarray(video.annotations[0]))
    (image, mask), = object_examples(config, "heldout", 1, sample_video(config, "heldout", 0).shapes[0], 1)
    Image.fromarray(image).save(root / "example.jpg")
    Image.fromarray(mask.astype(np.uint8) * 255).save(root / "example.png")
    return root, video


def test_a_video_file_is_read_as_a_stream_and_the_mp4_holds_every_frame(clip, tmp_path, capsys):
    root, video = clip
    source = open_video_source(root / "clip.mp4")
    assert source.kind == "file" and source.num_frames == 12 and source.fps == 10.0
    out = tmp_path / "out"
    rc = main(["track", str(root / "clip.mp4"), "--mask", str(root / "first.png"), "--text", "the red circle",
               "--ref-image", str(root / "example.jpg"), "--ref-mask", str(root / "example.png"),
               "--add", "5:9:text=the blue square", "--add", f"7:10:mask={root / 'first.png'}",
               "--out-dir", str(out), *TINY])
    assert rc == 0, capsys.readouterr().err
    names = sorted(p.name for p in (out / "masks").glob("*.png"))
    assert names == [f"{t:05d}.png" for t in range(12)]
    assert np.array_equal(load_label_map(out / "masks" / "00000.png"), np.asarray(video.annotations[0]))  # given
    frames = list(iio.imiter(out / "track.mp4"))
    assert len(frames) == 12 and frames[0].shape == (64, 80, 3)
    assert not (out / "track.gif").exists()  # only with --gif
    assert "12 frames tracked" in capsys.readouterr().out


def test_gif_only_when_asked_and_refused_past_its_length(clip, tmp_path, capsys):
    root, _ = clip
    args = ["track", str(root / "clip.mp4"), "--mask", str(root / "first.png"), "--no-overlays", "--no-mp4", *TINY]
    assert main([*args, "--gif", "--gif-max-frames", "5", "--out-dir", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    assert "--gif keeps every frame in memory" in err and "12 frames" in err and "track.mp4" in err
    assert main([*args, "--gif", "--max-frames", "4", "--gif-max-frames", "5", "--out-dir", str(tmp_path / "b")]) == 0
    assert len(list((tmp_path / "b" / "masks").glob("*.png"))) == 4 and (tmp_path / "b" / "track.gif").is_file()


def test_sources_that_cannot_be_opened_are_named(tmp_path, capsys):
    broken = tmp_path / "broken.mp4"
    broken.write_text("not a video")
    for source, message in ((broken, f"cannot open the video source {broken}"),
                            (tmp_path / "missing.mp4", "video not found"),
                            ("http://127.0.0.1:9/stream.mp4", "cannot open the video source http://127.0.0.1:9")):
        assert main(["track", str(source), "--text", "a dog", *TINY]) == 2
        assert message in capsys.readouterr().err


def test_add_specs_are_checked(tmp_path):
    assert parse_add("3:2:text=the red car")[:3] == (3, 2, "text")
    for bad, message in (("3:2", "expected FRAME:ID:KIND=VALUE"), ("x:2:text=a", "expected FRAME"),
                         ("-1:2:text=a", "frame must be >= 0"), ("3:2:colour=red", "KIND must be"),
                         ("3:2:examples=a.jpg", "IMAGE\\+MASK pairs"), ("3:2:text= ", "sentence is empty")):
        with pytest.raises(Exception, match=message):
            parse_add(bad)


def _default_sigint() -> None:
    """A command started in the background of a shell inherits SIGINT ignored (POSIX), and Python then never
    raises KeyboardInterrupt: the child gets the default disposition, as a terminal user's tracker has."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_leaves_every_frame_written_so_far_readable(clip, tmp_path):
    root, video = clip
    long = tmp_path / "long.mp4"
    n = 2000  # long enough that a loaded machine cannot finish it before the signal lands
    with Mp4Writer(long, fps=10) as writer:
        for t in range(n):
            writer.write(np.asarray(video.frames[t % 12]))
    out = tmp_path / "out"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "unifusion_sam", "track", str(long), "--text", "the red circle",
                             "--out-dir", str(out), *TINY], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=_default_sigint)
    deadline = time.time() + 240
    while time.time() < deadline and len(list((out / "masks").glob("*.png"))) < 5:
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err.decode()[-2000:]
    assert "interrupted after" in err.decode()
    pngs = sorted((out / "masks").glob("*.png"))
    assert 5 <= len(pngs) < n
    for p in pngs:
        assert load_label_map(p).shape == (64, 80)  # every written PNG is complete
    frames = list(iio.imiter(out / "track.mp4"))  # a playable MP4 of the frames done
    assert len(frames) >= len(pngs) - 1 and len(frames) <= len(pngs) + 1
    assert abs(len(list((out / "overlays").glob("*.png"))) - len(pngs)) <= 1


def test_readme_streams_a_folder_too(clip, tmp_path, capsys):
    root, video = clip
    folder = tmp_path / "frames"
    folder.mkdir()
    for t, frame in enumerate(video.frames[:3]):
        Image.fromarray(np.asarray(frame)).save(folder / f"{t:05d}.jpg")
    assert main(["track", str(folder), "--mask", str(root / "first.png"), "--out-dir", str(tmp_path / "o"), *TINY]) == 0
    assert len(list(Path(tmp_path / "o" / "masks").glob("*.png"))) == 3

"""The web demo's handlers, inputs and model loading without a browser, for both model families
(the random tiny SAM with an untrained adapter, and the untrained ``uniref-small`` full model)."""

import argparse
import io
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from unifusion_sam.cli import DEMO_HINT, main
from unifusion_sam.data.io import davis_palette, save_palette_png
from unifusion_sam.demo import DemoConfig, handlers
from unifusion_sam.demo.inputs import DemoError, editor_labels, editor_mask, open_video
from unifusion_sam.demo.loading import load_demo_model, resolve_demo_args
from unifusion_sam.loading import load_model

pytestmark = pytest.mark.usefixtures("one_thread")
H, W = 40, 56


@pytest.fixture(scope="module")
def models():
    return {"sam": load_model("none", sam="tiny", seed=0), "uniref": load_model("none", preset="uniref-small", seed=0)}


@pytest.fixture(params=["sam", "uniref"])
def model(request, models):
    return models[request.param]


@pytest.fixture()
def scene():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    labels = np.zeros((H, W), dtype=np.uint8)
    labels[5:18, 6:20] = 1
    labels[22:36, 30:50] = 2
    return image, labels


def _editor(image, painted: dict[tuple[int, int, int], np.ndarray], size: tuple[int, int] | None = None) -> dict:
    """An ImageEditor value: ``painted`` maps an RGB colour to where it was painted (at ``size``, default the image's)."""
    h, w = size or image.shape[:2]
    layer = np.zeros((h, w, 4), dtype=np.uint8)
    for colour, where in painted.items():
        layer[where] = (*colour, 255)
    return {"background": np.dstack([image, np.full(image.shape[:2], 255, np.uint8)]), "layers": [layer],
            "composite": image}


def _args(**kw) -> argparse.Namespace:
    base = dict(checkpoint=None, sam=None, sam_checkpoint=None, sam_size=None, sam_image_size=None, adapter=None,
                device="cpu", seed=0)
    return argparse.Namespace(**{**base, **kw})


# ----------------------------------------------------------------------------------------- images
def test_sentence(model, scene, tmp_path):
    image, _ = scene
    r = handlers.segment_sentence(model, image, "  the red square  ", tmp_path)
    assert r.overlay.shape == image.shape and r.overlay.dtype == np.uint8 and r.mask.shape == (H, W)
    saved = np.asarray(Image.open(r.mask_path))
    assert saved.shape == (H, W) and np.array_equal(saved > 0, r.mask) and set(np.unique(saved)) <= {0, 255}
    assert r.message.startswith(f"score {r.score:.3f}") and r.mask_path.is_relative_to(tmp_path)
    lower = slice(H // 2, H)  # below the caption band (at most half the image)
    outside = ~r.mask[lower]
    assert np.array_equal(r.overlay[lower][outside], image[lower][outside])
    if r.mask[lower].any():
        assert (r.overlay[lower][r.mask[lower]] != image[lower][r.mask[lower]]).any()


def test_sentence_bad_input(models, scene, tmp_path):
    model, (image, _) = models["sam"], scene
    with pytest.raises(DemoError, match="Type a sentence"):
        handlers.segment_sentence(model, image, "   ", tmp_path)
    with pytest.raises(DemoError, match="Type a sentence"):
        handlers.segment_sentence(model, image, None, tmp_path)
    with pytest.raises(DemoError, match="Upload an image first"):
        handlers.segment_sentence(model, None, "the dog", tmp_path)
    with pytest.raises(DemoError, match="uint8"):
        handlers.segment_sentence(model, image.astype(np.float32), "the dog", tmp_path)
    with pytest.raises(DemoError, match="must be text"):
        handlers.segment_sentence(model, image, 3, tmp_path)


def test_examples_drawn_and_uploaded(model, scene, tmp_path):
    image, labels = scene
    drawn = editor_mask(_editor(image, {(30, 144, 255): labels == 1}), (H, W))
    assert np.array_equal(drawn, labels == 1)
    upload = tmp_path / "ref.png"
    Image.fromarray((labels == 2).astype(np.uint8) * 255).save(upload)
    pairs = [handlers.example_pair(image, drawn, None, 1), handlers.example_pair(image[::-1].copy(), None, upload, 2),
             handlers.example_pair(None, None, None, 3)]
    assert pairs[2] is None and np.array_equal(pairs[1][1], labels == 2)
    r = handlers.segment_examples(model, image, pairs, tmp_path)
    assert r.overlay.shape == image.shape and r.message.startswith("2-shot, score") and r.mask_path.is_file()


def test_examples_bad_input(models, scene, tmp_path):
    model, (image, labels) = models["sam"], scene
    with pytest.raises(DemoError, match="at least one example"):
        handlers.segment_examples(model, image, [None, None], tmp_path)
    with pytest.raises(DemoError, match="example 2 has no mask"):
        handlers.example_pair(image, None, None, 2)
    with pytest.raises(DemoError, match="example 1 has no mask"):
        handlers.example_pair(image, np.zeros((H, W), bool), None, 1)
    small = tmp_path / "small.png"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(small)
    with pytest.raises(DemoError, match="but no image"):
        handlers.example_pair(None, None, small, 3)
    with pytest.raises(DemoError, match=r"8 x 8 pixels but its image is 56 x 40"):
        handlers.example_pair(image, None, small, 1)
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    with pytest.raises(DemoError, match="Cannot read the mask of example 1"):
        handlers.example_pair(image, None, text, 1)
    with pytest.raises(DemoError, match="Upload a query image first"):
        handlers.segment_examples(model, None, [(image, labels == 1)], tmp_path)


# ----------------------------------------------------------------------------------------- points
def test_points_reuse_the_embedding(models, scene, tmp_path):
    model, (image, _) = models["sam"], scene
    points = handlers.add_point(None, 12, 10, "positive")
    points = handlers.add_point(points, 40, 30, "negative")
    assert points == [(12.0, 10.0, 1), (40.0, 30.0, 0)]
    hits = model.predictor.cache.hits
    first = handlers.segment_points(model, image, points[:1], None, tmp_path)
    second = handlers.segment_points(model, image, points, "the square", tmp_path)
    assert model.predictor.cache.hits >= hits + 1  # the second click reused the first click's image embedding
    assert first.overlay.shape == second.overlay.shape == image.shape
    assert tuple(second.overlay[30, 40]) == (230, 0, 0) and tuple(first.overlay[10, 12]) == (0, 220, 0)


def test_points_bad_input(models, scene, tmp_path):
    image, _ = scene
    with pytest.raises(DemoError, match="Points are SAM prompts"):
        handlers.segment_points(models["uniref"], image, [(3, 3, 1)], None, tmp_path)
    with pytest.raises(DemoError, match="Click on the object"):
        handlers.segment_points(models["sam"], image, [], " ", tmp_path)
    with pytest.raises(DemoError, match="outside the 56 x 40"):
        handlers.segment_points(models["sam"], image, [(80, 3, 1)], None, tmp_path)
    with pytest.raises(DemoError, match="positive or negative"):
        handlers.add_point([], 1, 1, "maybe")


# ----------------------------------------------------------------------------------------- editor values
def test_editor_values(scene):
    image, labels = scene
    colours = davis_palette()[1:4]
    value = _editor(image, {tuple(int(c) for c in colours[0]): labels == 1, tuple(int(c) for c in colours[1]): labels == 2})
    assert np.array_equal(editor_labels(value, colours), labels)
    assert editor_labels(_editor(image, {}), colours) is None and editor_mask(_editor(image, {}), (H, W)) is None
    big = np.kron(labels == 2, np.ones((2, 2), dtype=bool))  # a canvas twice the image's size
    assert np.array_equal(editor_mask(_editor(image, {(1, 2, 3): big}, (2 * H, 2 * W)), (H, W)), labels == 2)
    with pytest.raises(DemoError, match="RGBA"):
        editor_mask({"background": image, "layers": [np.zeros((H, W, 3), np.uint8)]}, (H, W))


# ----------------------------------------------------------------------------------------- videos
def _frames(n: int, h: int = H, w: int = W) -> list[np.ndarray]:
    rng = np.random.default_rng(1)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(n)]


def _zip(path, frames, names=None, extra=()):
    with zipfile.ZipFile(path, "w") as zf:
        for name, frame in zip(names or [f"{i}.png" for i in range(len(frames))], frames):
            buffer = io.BytesIO()
            Image.fromarray(frame).save(buffer, format="PNG")
            zf.writestr(name, buffer.getvalue())
        for name, data in extra:
            zf.writestr(name, data)
    return path


def test_open_video_zip(tmp_path):
    frames = _frames(12)
    names = [f"clip/{i}.png" for i in range(12)]  # numeric order: 2 before 10
    path = _zip(tmp_path / "clip.zip", frames, names, extra=[("__MACOSX/clip/._1.png", b"x"), ("clip/.hidden.png", b"x"),
                                                            ("clip/readme.txt", b"hello")])
    video = open_video(path, 20)
    read = list(video.iter_frames())
    assert [n for n, _ in read] == [str(i) for i in range(12)] and not video.truncated and video.total == 12
    assert all(np.array_equal(a, b) for (_, a), b in zip(read, frames))
    short = open_video(path, 5)
    assert short.truncated and short.total == 5 and [n for n, _ in short.iter_frames()] == ["0", "1", "2", "3", "4"]
    twins = open_video(_zip(tmp_path / "twins.zip", frames[:2], ["a/0.png", "b/0.png"]), 5)
    assert [n for n, _ in twins.iter_frames()] == ["00000", "00001"]  # unique names for the per-frame PNGs


def test_open_video_bad_input(tmp_path):
    with pytest.raises(DemoError, match="Upload a video first"):
        open_video(None, 10)
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(DemoError, match=r"notes.txt: not a video \(.txt\)"):
        open_video(tmp_path / "notes.txt", 10)
    # zips that are not zips or hold no frames: tests/test_demo_limits.py
    with pytest.raises(DemoError, match="all frames must have one size"):
        list(open_video(_zip(tmp_path / "sizes.zip", [_frames(1)[0], _frames(1, 20, 20)[0]]), 10).iter_frames())
    with pytest.raises(DemoError, match="cannot decode"):
        open_video(_zip(tmp_path / "bad.zip", [], extra=[("0.png", b"garbage")]), 10)
    (tmp_path / "clip.mp4").write_bytes(b"garbage, not a video")
    with pytest.raises(DemoError, match="Cannot read the video clip.mp4"):
        open_video(tmp_path / "clip.mp4", 10)


def test_open_video_mp4(tmp_path):
    iio = pytest.importorskip("imageio.v3")
    pytest.importorskip("imageio_ffmpeg")
    frames = [np.full((48, 64, 3), 40 * i, dtype=np.uint8) for i in range(5)]
    iio.imwrite(tmp_path / "clip.mp4", np.stack(frames), fps=5, codec="libx264")
    video = open_video(tmp_path / "clip.mp4", 10)
    read = [f for _, f in video.iter_frames()]
    assert len(read) == 5 and read[0].shape == (48, 64, 3) and video.total == 5 and not video.truncated
    assert abs(int(read[3].mean()) - 120) < 8
    short = open_video(tmp_path / "clip.mp4", 3)
    assert len(list(short.iter_frames())) == 3 and short.truncated


def test_track_masks_and_sentence(model, tmp_path):
    frames = _frames(4)
    video = open_video(_zip(tmp_path / "clip.zip", frames), 10)
    labels = np.zeros((H, W), np.uint8)
    labels[4:16, 5:20], labels[20:36, 28:50] = 1, 3
    calls = []
    r = handlers.track_video(model, video, labels=handlers.first_frame_labels(video, labels, None), sentence="",
                             out_dir=tmp_path, progress=lambda done, total: calls.append((done, total)))
    assert r.frames == 4 and r.message == "tracked 2 objects from the first-frame mask through 4 frames"
    assert calls[0] == (0, 4) and calls[-1] == (4, 4)
    with zipfile.ZipFile(r.zip_path) as zf:
        assert sorted(n for n in zf.namelist() if n.endswith(".png")) == [f"masks/{i}.png" for i in range(4)]
        first = Image.open(io.BytesIO(zf.read("masks/0.png")))
    assert first.mode == "P" and np.array_equal(np.asarray(first), labels)  # the given mask is frame 0's output
    with Image.open(r.gif_path) as gif:
        assert gif.size == (W, H) and gif.n_frames >= 1
    r = handlers.track_video(model, video, labels=None, sentence="the square", out_dir=tmp_path,
                             config=DemoConfig(gif_fps=4))
    assert r.frames == 4 and r.message == 'tracked "the square" through 4 frames'


def test_track_bad_input(models, tmp_path):
    model = models["sam"]
    video = open_video(_zip(tmp_path / "clip.zip", _frames(2)), 10)
    labels = np.zeros((H, W), np.uint8)
    labels[2:9, 2:9] = 1
    with pytest.raises(DemoError, match="not both"):
        handlers.track_video(model, video, labels=labels, sentence="the dog", out_dir=tmp_path)
    with pytest.raises(DemoError, match="Paint the objects"):
        handlers.track_video(model, video, labels=None, sentence=" ", out_dir=tmp_path)
    assert handlers.first_frame_labels(video, np.zeros((H, W), np.uint8), None) is None
    upload = tmp_path / "first.png"
    save_palette_png(upload, np.ones((10, 10), np.uint8))
    with pytest.raises(DemoError, match=r"10 x 10 pixels but its image is 56 x 40"):
        handlers.first_frame_labels(video, None, upload)
    save_palette_png(upload, labels * 2)
    assert np.array_equal(handlers.first_frame_labels(video, labels, upload), labels * 2)  # the upload wins


# ----------------------------------------------------------------------------------------- loading and CLI
def test_resolve_demo_args(tmp_path):
    missing = DemoConfig(default_run=str(tmp_path / "nothing"))
    args, notice = resolve_demo_args(_args(), missing)
    assert (args.checkpoint, args.sam) == ("none", "tiny") and "No trained model" in notice
    assert resolve_demo_args(_args(adapter="uniref-small"), missing) == (_args(checkpoint="none", adapter="uniref-small"), None)
    run = tmp_path / "run"
    (run / "adapter").mkdir(parents=True)
    (run / "adapter" / "adapter_config.json").write_text("{}")
    args, notice = resolve_demo_args(_args(), DemoConfig(default_run=str(run)))
    assert args.checkpoint == str(run) and notice is None  # the default run, when it holds a model
    assert resolve_demo_args(_args(checkpoint=str(run), sam="tiny"))[0].sam == "tiny"  # --sam is kept for the loader


def test_load_demo_model_from_run_folders(tmp_path):
    from safetensors.torch import save_file

    run = tmp_path / "run"
    model = load_model("none", sam="tiny", seed=0)
    model.save_pretrained(run / "adapter")
    with pytest.raises(ValueError, match="give the SAM it was trained on"):
        load_demo_model(_args(checkpoint=str(run)))
    save_file({k: v.contiguous() for k, v in model.sam.state_dict().items()}, str(run / "sam_tiny.safetensors"))
    served = load_demo_model(_args(checkpoint=str(run)))
    assert served.family == "sam" and served.supports_points and served.notice is None
    assert served.description == f"UniFusion-SAM: adapter `{run}` on SAM `tiny`"
    state = {k: v for k, v in served.model.adapter_state_dict().items()}
    for k, v in model.adapter_state_dict().items():
        assert torch.equal(state[k], v), k
    load_model("none", preset="uniref-small", seed=0).save_pretrained(tmp_path / "uniref" / "model")
    served = load_demo_model(_args(checkpoint=str(tmp_path / "uniref")))
    assert served.family == "uniref" and not served.supports_points
    assert served.description == f"full UniRef++ model `{tmp_path / 'uniref'}`"
    served = load_demo_model(_args(checkpoint="none", adapter="uniref-small"))
    assert served.description == "untrained full UniRef++ model"


def test_cli_demo(monkeypatch, capsys):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "gradio" else real(name, *a))
    assert main(["demo", "--sam", "tiny"]) == 2 and DEMO_HINT in capsys.readouterr().err
    monkeypatch.undo()
    pytest.importorskip("gradio")
    import unifusion_sam.demo.app as app

    seen = {}
    monkeypatch.setattr(app, "launch", lambda served, **kw: seen.update(served=served, **kw))
    assert main(["demo", "--sam", "tiny", "--device", "cpu", "--port", "7999", "--host", "0.0.0.0"]) == 0
    assert seen["port"] == 7999 and seen["host"] == "0.0.0.0" and seen["served"].family == "sam"
    assert "model: UniFusion-SAM: untrained adapter on SAM `tiny`" in capsys.readouterr().out

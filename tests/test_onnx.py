"""ONNX export and the onnxruntime model (unifusion_sam.sam.onnx): every graph against its PyTorch module,
predict / track end to end, loading through every front door, and the errors a user meets."""

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from unifusion_sam.sam import build_sam, wrap_sam  # noqa: E402
from unifusion_sam.sam.onnx import (  # noqa: E402
    export_onnx,
    from_onnx,
    graphs,  # noqa: E402
)
from unifusion_sam.sam.onnx.runtime import OnnxSam  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


def _randomise(model):
    """Random adapter weights (the zero-initialised modulation would make fusion the identity)."""
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.requires_grad and not name.startswith("text_encoder.backbone"):
                p.add_(torch.randn(p.shape, generator=gen) * (0.2 if "modulation" in name else 0.02))
    return model.eval()


@pytest.fixture(scope="module")
def lite0(tmp_path_factory):
    """The ``sam-lite0`` stand-in (locality prior, position-aware language branch) with random adapter weights,
    and its export."""
    torch.manual_seed(0)
    model = _randomise(wrap_sam(build_sam("lite0"), adapter="sam-lite0"))
    folder = export_onnx(model, tmp_path_factory.mktemp("onnx") / "lite0")
    return model, folder, from_onnx(folder, device="cpu", threads=1)


@pytest.fixture(scope="module")
def tiny_hr(tmp_path_factory):
    """The ``lite0_hr`` stand-in's high-resolution decoder path (SAM 2's maps), random adapter weights."""
    torch.manual_seed(0)
    model = _randomise(wrap_sam(build_sam("lite0_hr"), adapter="sam-lite0-hr"))
    folder = export_onnx(model, tmp_path_factory.mktemp("onnx") / "lite0_hr")
    return model, folder, from_onnx(folder, device="cpu", threads=1)


def _scene(seed, size=(120, 160)):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 60, (*size, 3), dtype=np.uint8)
    masks = []
    for _ in range(3):
        y, x = rng.integers(10, size[0] - 40), rng.integers(10, size[1] - 40)
        image[y: y + 30, x: x + 30] = rng.integers(80, 255, 3, dtype=np.uint8)
        m = np.zeros(size, bool)
        m[y: y + 30, x: x + 30] = True
        masks.append(m)
    return image, masks


def _same_masks(a, b, logits):
    """Masks equal except where PyTorch's logit is within 1e-3 of the threshold."""
    differ = np.asarray(a) != np.asarray(b)
    return not (differ & (np.abs(np.asarray(logits)) > 1e-3)).any()


# ----------------------------------------------------------------------------- every graph
@pytest.mark.parametrize("which", ["lite0", "tiny_hr"])
def test_every_graph_matches_its_pytorch_module_on_several_shapes(which, request):
    model, folder, onnx_model = request.getfixturevalue(which)
    s, (h, w), c = model.image_size, model.backend.embedding_size, model.config.fusion.dim
    gen = torch.Generator().manual_seed(3)
    run = onnx_model._run
    worst = {}

    def check(name, module, feeds):
        with torch.no_grad():
            want = module(*feeds.values())
        want = want if isinstance(want, tuple) else (want,)
        got = run(name, **feeds)
        # absolute for the logits and scores (the decoder's outputs); features relative to their scale
        scale = 1.0 if name == "decoder" else max(1.0, max(float(x.abs().max()) for x in want))
        worst[name] = max(worst.get(name, 0.0), max(float((g - x).abs().max()) / scale for g, x in zip(got, want)))

    for b in (1, 3):
        pixels = torch.randn(b, 3, s, s, generator=gen)
        check("image", graphs.ImageGraph(model).eval(), {"pixels": pixels})
        with torch.no_grad():
            features = model.encode_image(pixels)
        masks = (torch.rand(b, s, s, generator=gen) > 0.7).float()
        masks[0] = 0  # an empty mask: the prototype falls back to the plain mean
        check("mask", graphs.MaskGraph(model).eval(), {"units": torch.rand(b, 3, s, s, generator=gen), "masks": masks,
                                                       "features": features})
        for n, refs in ((1, 1), (4, 3)):
            t = refs * h * w
            padding = torch.zeros(n, t, dtype=torch.bool)
            padding[-1, h * w:] = True
            if n > 1:
                padding[0] = True  # an object without mask references
            local = torch.rand(n, t, generator=gen) > 0.5
            check("fuse_mask", graphs.FuseMaskGraph(model).eval(), {
                "features": features[:1], "keys": torch.randn(n, t, c, generator=gen),
                "values": torch.randn(n, t, c, generator=gen), "key_padding": padding, "key_local": local,
                "mask_pooled": torch.randn(n, c, generator=gen), "has_mask": ~padding.all(1),
                "tracking": torch.rand(n, generator=gen) > 0.5})
            words = 1 + 5 * refs
            word_padding = torch.zeros(n, words, dtype=torch.bool)
            word_padding[-1, 2:] = True
            check("fuse_text", graphs.FuseTextGraph(model).eval(), {
                "features": features[:1], "words": torch.randn(n, words, c, generator=gen), "word_padding": word_padding,
                "text_pooled": torch.randn(n, c, generator=gen), "has_text": torch.arange(n) % 2 == 0})
            for k in (1, 4):
                coords = torch.rand(n, k, 2, generator=gen) * s
                labels = torch.randint(-1, 4, (n, k), generator=gen)
                check("prompt", graphs.PromptGraph(model).eval(), {"coords": coords, "labels": labels})
                feeds = {"fused": torch.randn(n, 256, h, w, generator=gen), "sparse": torch.randn(n, k, 256, generator=gen)}
                if onnx_model.export_config["high_res"]:
                    feeds["features"] = features[:1]
                check("decoder", graphs.DecoderGraph(model).eval(), feeds)
    tokens = model.text_encoder.tokenize(["a", "the big red square at the very top left of the picture", "ok"])
    check("text", graphs.TextGraph(model, list(tokens)).eval(), dict(tokens))
    assert set(worst) == set(onnx_model.sessions)
    assert max(worst.values()) < 1e-4, worst


def test_prompt_graph_is_metas_prompt_encoder(lite0):
    """Points with the padding point, a box, and both: the layout OnnxSam builds equals Meta's encoder."""
    model, _, onnx_model = lite0
    from unifusion_sam.interface import Prompts

    image, _ = _scene(0)
    prepared = model.prepare_image(image)
    points, labels, box = np.array([[30.0, 40.0], [100, 20]]), np.array([1, 0]), np.array([10.0, 20, 90, 100])
    for prompts in (Prompts(points, labels), Prompts(box=box), Prompts(points, labels, box)):
        got = onnx_model._prompt_tokens(prompts, prepared, 2)
        coords = None if prompts.points is None else torch.tensor(model.transform.coords(points, prepared.original_size),
                                                                  dtype=torch.float)[None]
        lab = None if prompts.points is None else torch.tensor(labels)[None]
        boxes = None if prompts.box is None else torch.tensor(model.transform.boxes(box[None], prepared.original_size),
                                                              dtype=torch.float)
        with torch.no_grad():
            want, _ = model.backend.embed_prompts(coords, lab, boxes, 2)
        assert got.shape == want.shape and float((got - want).abs().max()) < 1e-4



def test_fusion_graphs_mask_padding_with_a_bias_not_a_nan_guard(lite0):
    """The fusion graphs add the padding as a ``[N, 1, 1, L]`` bias: no IsNaN / Where over the full attention
    probabilities (the exporter's ``scaled_dot_product_attention`` added them, a fifth of the graph's time),
    and a fully padded object still gets exactly zero (its row attends to every token, then is zeroed)."""
    import onnx

    model, folder, onnx_model = lite0
    for name in ("fuse_mask", "fuse_text"):
        ops = {node.op_type for node in onnx.load(str(folder / f"{name}.onnx")).graph.node}
        assert "IsNaN" not in ops and "Softmax" in ops, (name, sorted(ops))
    session = onnx_model.sessions["fuse_mask"]
    (h, w), c = model.backend.embedding_size, model.config.fusion.dim
    t = h * w  # one reference map on the grid
    features = model.encode_image(torch.randn(1, 3, model.image_size, model.image_size)).detach().numpy()
    padding = np.zeros((2, t), bool)
    padding[1] = True  # the second object has no reference at all
    delta, token = session.run(None, {"features": features, "keys": np.random.randn(2, t, c).astype(np.float32),
                                      "values": np.random.randn(2, t, c).astype(np.float32), "key_padding": padding,
                                      "key_local": np.ones((2, t), bool), "mask_pooled": np.ones((2, c), np.float32),
                                      "has_mask": np.array([True, False]), "tracking": np.array([True, True])})
    assert np.isfinite(delta).all() and np.abs(delta[0]).max() > 0 and np.abs(delta[1]).max() == 0.0

def test_tokenizer_matches_transformers(lite0):
    model, _, onnx_model = lite0
    sentences = ["a red circle", "Ünïcödé naïve café — the left one!", "word " * 200, "  x  "]
    want = model.text_encoder.tokenizer(sentences, padding=True, truncation=True, max_length=77, return_tensors="np")
    got = onnx_model.tokenize(sentences)
    assert set(got) == set(want) and all(np.array_equal(got[k], want[k]) for k in got)
    assert got["input_ids"].shape[1] == 77  # the long sentence is truncated as transformers does


# ----------------------------------------------------------------------------- end to end
@pytest.mark.parametrize("which", ["lite0", "tiny_hr"])
def test_predict_text_examples_and_points_match_pytorch(which, request):
    model, _, onnx_model = request.getfixturevalue(which)
    image, masks = _scene(1)
    refs = [_scene(10 + k) for k in range(3)]
    cases = [
        {"text": "the bright square"},
        {"ref_images": [refs[0][0]], "ref_masks": [refs[0][1][0]]},
        {"ref_images": [r[0] for r in refs], "ref_masks": [r[1][0] for r in refs]},
        {"point_coords": np.array([[40.0, 50.0], [120, 90]]), "point_labels": np.array([1, 0])},
        {"text": "the square", "box": np.array([10.0, 10, 100, 90])},
    ]
    for kwargs in cases:
        want, got = model.predict(image, **kwargs), onnx_model.predict(image, **kwargs)
        assert np.abs(want.logits - got.logits).max() < 1e-3, kwargs.keys()
        assert _same_masks(want.mask, got.mask, want.logits), kwargs.keys()
        assert abs(want.score - got.score) < 1e-4


def test_track_two_objects_and_a_late_one_matches_pytorch(lite0):
    model, _, onnx_model = lite0
    from unifusion_sam.data.synthetic import SyntheticConfig, sample_video

    config = SyntheticConfig(seed=7, image_size=(96, 128), num_frames=12, late_entry_prob=0.0,
                             min_video_objects=3, max_video_objects=3)
    spec = sample_video(config, "heldout", 0)
    frames = [spec.render(t)[0] for t in range(12)]
    first, late = spec.labels(0), spec.labels(5)
    ids = [int(i) for i in np.unique(first) if i]
    masks = {1: first == ids[0], 2: first == ids[1]}
    later = {5: {3: late == ids[2]}}
    want = list(model.track(frames, masks=masks, new_objects=later))
    got = list(onnx_model.track(frames, masks=masks, new_objects=later))
    assert len(got) == 12 and sorted(got[-1].masks) == [1, 2, 3]
    for w, g in zip(want, got):
        assert sorted(w.masks) == sorted(g.masks)
        assert np.array_equal(w.label_map, g.label_map) or (w.label_map != g.label_map).mean() < 1e-3
        for obj in w.scores:
            assert abs(w.scores[obj] - g.scores[obj]) < 1e-3


def test_track_from_a_sentence_and_examples_matches_pytorch(lite0):
    model, _, onnx_model = lite0
    image, masks = _scene(2)
    frames = [np.roll(image, 3 * t, axis=1) for t in range(4)]
    ref = _scene(3)
    kwargs = {"text": {1: "the bright square"}, "examples": {2: [(ref[0], ref[1][0])]}}
    want, got = list(model.track(frames, **kwargs)), list(onnx_model.track(frames, **kwargs))
    assert len(want) == len(got) == len(frames)
    for w, g in zip(want, got):
        assert (w.label_map != g.label_map).mean() < 1e-3
        assert all(abs(w.scores[k] - g.scores[k]) < 1e-3 for k in w.scores)


def test_torch_glue_runs_on_one_thread_and_the_sessions_stop_spinning(lite0, monkeypatch):
    """Between the graphs torch runs on one thread (its OpenMP workers would spin and take onnxruntime's cores),
    the caller's count is restored after each call, and each session's threads spin only during its own run."""
    _, folder, _ = lite0
    onnx_model = from_onnx(folder, device="cpu", threads=2)
    for session in onnx_model.sessions.values():
        options = session.get_session_options()
        assert options.get_session_config_entry("session.intra_op.allow_spinning") == "1"
        assert options.get_session_config_entry("session.force_spinning_stop") == "1"
        assert options.get_session_config_entry("session.dynamic_block_base") == "2"
    seen = []
    run = onnx_model._run
    monkeypatch.setattr(onnx_model, "_run", lambda name, **feeds: seen.append(torch.get_num_threads()) or run(name, **feeds))
    image, masks = _scene(4)
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        onnx_model.predict(image, text="the bright square")
        assert torch.get_num_threads() == 2
        list(onnx_model.track([image, np.roll(image, 2, axis=1)], masks={1: masks[0]}))
        assert torch.get_num_threads() == 2
        # calls overlapping in a server's threads: the count comes back once the last one has left
        first, second = onnx_model.inference_context(), onnx_model.inference_context()
        first.__enter__()
        second.__enter__()
        assert torch.get_num_threads() == 1
        first.__exit__(None, None, None)
        assert torch.get_num_threads() == 1
        second.__exit__(None, None, None)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(previous)
    assert len(seen) >= 5 and set(seen) == {1}


# ----------------------------------------------------------------------------- loading and the front ends
def test_loads_through_from_pretrained_and_the_cli(lite0, tmp_path, capsys):
    import unifusion_sam
    from unifusion_sam.cli import main
    from unifusion_sam.data.io import save_image_atomic

    _, folder, _ = lite0
    model = unifusion_sam.from_pretrained(folder)
    assert isinstance(model, OnnxSam) and model.export_config["precision"] == "float32"
    image, _ = _scene(4)
    path = tmp_path / "photo.png"
    save_image_atomic(Image.fromarray(image), path)
    assert main(["segment", str(path), "--text", "the square", "--onnx", str(folder), "--out-dir", str(tmp_path)]) == 0
    assert (tmp_path / "photo_mask.png").is_file()
    assert main(["segment", str(path), "--text", "x", "--onnx", str(folder), "--checkpoint", "none"]) == 2
    assert "not both" in capsys.readouterr().err


def test_cli_export_onnx_and_precision_options(tmp_path, capsys):
    """int8 and float16 exports of the same (seeded) model against its float32 export: float16 to 1e-3 in
    logits, int8 (weights of every MatMul / Gemm quantised; a tiny random SAM's logits span only +-0.2, so the
    error is large relative to them) still correlated above 0.9."""
    from unifusion_sam.cli import main

    image, _ = _scene(5)
    assert main(["export-onnx", "none", str(tmp_path / "f32"), "--sam", "tiny"]) == 0
    full = from_onnx(tmp_path / "f32", device="cpu").predict(image, text="a square")
    out = tmp_path / "exported"
    assert main(["export-onnx", "none", str(out), "--sam", "tiny", "--int8"]) == 0
    config = json.loads((out / "export_config.json").read_text())
    assert config["precision"] == "int8" and config["opset"] == 17
    assert max(config["export_check_max_abs_diff"].values()) < 1e-4
    import onnx

    ops = {n.op_type for n in onnx.load(str(out / "decoder.onnx")).graph.node}
    assert "DynamicQuantizeLinear" in ops or "MatMulInteger" in ops
    quantised = from_onnx(out, device="cpu").predict(image, text="a square")
    assert quantised.mask.shape == image.shape[:2]
    assert 0 < np.abs(quantised.logits - full.logits).max() < 0.5 * np.abs(full.logits).max()
    assert np.corrcoef(quantised.logits.ravel(), full.logits.ravel())[0, 1] > 0.9
    capsys.readouterr()
    assert main(["export-onnx", "none", str(out), "--sam", "tiny"]) == 2  # an export is there already
    assert "overwrite" in capsys.readouterr().err
    assert main(["export-onnx", "none", str(out), "--sam", "tiny", "--overwrite", "--fp16"]) == 0
    assert json.loads((out / "export_config.json").read_text())["precision"] == "float16"
    half = from_onnx(out, device="cpu").predict(image, text="a square")  # float16 inside, float32 in and out
    assert half.logits.dtype == np.float32 and np.abs(half.logits - full.logits).max() < 1e-3
    assert main(["export-onnx", "none", str(tmp_path / "x"), "--adapter", "uniref-small"]) == 2
    assert "UniRef++" in capsys.readouterr().err


# ----------------------------------------------------------------------------- errors
def test_unexportable_models_are_named(tiny_sam_factory):
    from unifusion_sam.uniref import build_uniref

    with pytest.raises(ValueError, match="SamVisionEncoder|transformers"):
        export_onnx(tiny_sam_factory("hf"), "/nonexistent/never-written")
    with pytest.raises(ValueError, match="UniRef\\+\\+.*deformable"):
        build_uniref("uniref-small").export_onnx("/nonexistent/never-written")
    with pytest.raises(ValueError, match="text_point"):
        export_onnx(tiny_sam_factory(text_point=True), "/nonexistent/never-written")
    with pytest.raises(ValueError, match="opset"):
        export_onnx(tiny_sam_factory(), "/nonexistent/never-written", opset=9)


def test_broken_folders_are_refused_with_the_reason(lite0, tmp_path):
    _, folder, _ = lite0

    def copy():
        target = tmp_path / f"copy{len(list(tmp_path.iterdir()))}"
        shutil.copytree(folder, target)
        return target

    missing = copy()
    (missing / "decoder.onnx").unlink()
    with pytest.raises(FileNotFoundError, match="decoder graph decoder.onnx is missing"):
        from_onnx(missing)
    corrupt = copy()
    data = (corrupt / "mask.onnx").read_bytes()
    (corrupt / "mask.onnx").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="mask graph .* corrupt"):
        from_onnx(corrupt)
    with pytest.raises(ValueError, match="not a readable ONNX model|cannot load"):
        from_onnx(corrupt, verify=False)
    with pytest.raises(ValueError, match="expected opset 18"):
        from_onnx(folder, opset=18)
    swapped = copy()
    config = json.loads((swapped / "export_config.json").read_text())
    config["opset"] = 16
    (swapped / "export_config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="opset 17 but this export is of opset 16"):
        from_onnx(swapped)
    config["opset"], config["library_version"] = 17, "9.3.0"
    (swapped / "export_config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="exported by unifusion-sam 9.3.0"):
        from_onnx(swapped)
    with pytest.raises(FileNotFoundError, match="export_config.json is missing"):
        from_onnx(tmp_path)
    with pytest.raises(FileExistsError, match="overwrite"):
        export_onnx(lite0[0], folder)


def test_the_torch_free_example_segments_like_onnx_sam(lite0, tmp_path):
    """examples/onnx_without_torch.py, run with PyTorch made unimportable, gives OnnxSam's mask."""
    import subprocess
    import sys
    from pathlib import Path

    _, folder, onnx_model = lite0
    image, _ = _scene(6)
    Image.fromarray(image).save(tmp_path / "photo.png")
    script = Path(__file__).parents[1] / "examples" / "onnx_without_torch.py"
    code = ("import sys, runpy; sys.modules['torch'] = None; sys.modules['unifusion_sam'] = None; "
            f"sys.argv = ['x', {str(folder)!r}, {str(tmp_path / 'photo.png')!r}, 'the bright square', "
            f"{str(tmp_path / 'mask.png')!r}]; runpy.run_path({str(script)!r}, run_name='__main__')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    got = np.asarray(Image.open(tmp_path / "mask.png")) > 0
    want = onnx_model.predict(image, text="the bright square")
    union = (got | want.mask).sum()
    assert union == 0 or (got & want.mask).sum() / union > 0.98
    assert f"score {want.score:.3f}" in done.stdout

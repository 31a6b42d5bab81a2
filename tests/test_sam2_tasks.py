"""Every reference task, training and checkpoints on SAM 2 (issue #16), on both implementations.

RIS, 1- and 3-shot FSS, VOS (two objects, one appearing late) and RVOS run through the shared predictor
and video session; references change the output; a video session's state does not grow; a few dozen
AdamW steps on a fixed mixed batch halve the loss, and backward leaves SAM 2's frozen parts without
gradients; ``save_pretrained`` / ``from_pretrained`` in a fresh process reproduce the predictions
exactly, and an adapter refuses a SAM of another family or size.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures_sam2 import FAMILIES, HAS_SAM2, build_tiny_sam2, make_model
from test_sam_predict import _perturb_references, disc_mask
from test_sam_training import make_batch, mixed_samples, overfit
from test_video_session import _footprint, make_video

from unifusion_sam.inference import VideoSession
from unifusion_sam.losses import segmentation_loss
from unifusion_sam.sam import UniFusionSam, build_sam, wrap_sam

pytestmark = pytest.mark.usefixtures("one_thread")
REPO_ROOT = Path(__file__).resolve().parents[1]


def smooth_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w].astype(np.float64)
    phase = rng.uniform(0, 2 * np.pi, 3)
    img = np.stack([127 + 100 * np.sin(xx / (9 + 4 * c) + yy / 17 + phase[c]) for c in range(3)], axis=-1)
    return np.clip(img, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def models(text_encoder_parts):
    return {f: make_model(f, text_encoder_parts) for f in ("meta_sam2", "hf_sam2") if f != "meta_sam2" or HAS_SAM2}


# ------------------------------------------------------------------ image tasks
@pytest.mark.parametrize("family", FAMILIES)
def test_ris_and_fss_run_and_references_matter(models, family):
    model = models[family]
    h, w = 90, 120
    img = smooth_image(h, w, seed=3)
    refs = [smooth_image(h, w, seed=s) for s in (4, 5, 6)]
    masks = [disc_mask(h, w, h * 0.45, w * (0.35 + 0.1 * k), 18) for k in range(3)]
    calls = {"ris": dict(text="the red disc in the middle"), "fss-1shot": dict(ref_images=refs[:1], ref_masks=masks[:1]),
             "fss-3shot": dict(ref_images=refs, ref_masks=masks),
             "point+text": dict(text="the red disc", point_coords=[[60.0, 40.0]], point_labels=[1])}
    for task, kwargs in calls.items():
        out = model.predict(img, **kwargs)
        assert out.mask.shape == img.shape[:2] and out.logits.shape == img.shape[:2], task
        assert np.isfinite(out.logits).all() and 0.0 <= out.score <= 1.0, task
        assert out.low_res_logits.shape == (64, 64), task
        assert np.array_equal(model.predict(img, **kwargs).logits, out.logits), f"{task} is not deterministic"
    backup = _perturb_references(model)
    try:
        a, b = model.predict(img, text="the disc on the left"), model.predict(img, text="a blue square at the bottom")
        assert not np.allclose(a.logits, b.logits, atol=1e-4)
        left, right = disc_mask(h, w, 45, 30, 18), disc_mask(h, w, 45, 90, 18)
        c = model.predict(img, ref_images=[refs[0]], ref_masks=[left])
        d = model.predict(img, ref_images=[refs[0]], ref_masks=[right])
        assert not np.allclose(c.logits, d.logits, atol=1e-4)
    finally:
        model.load_state_dict(backup, strict=False)


# ------------------------------------------------------------------ video tasks
@pytest.mark.parametrize("family", FAMILIES)
def test_vos_with_a_late_object_and_rvos(models, family):
    model = models[family]
    frames, labels = make_video(n_frames=5, birth=(0, 2), index=2)
    m1, m2 = labels[0] == 1, labels[2] == 2
    results = list(model.track(frames, masks={1: m1}, new_objects={2: {2: m2}}))
    assert [r.index for r in results] == [0, 1, 2, 3, 4]
    assert [sorted(r.masks) for r in results] == [[1], [1], [1, 2], [1, 2], [1, 2]]
    np.testing.assert_array_equal(results[0].masks[1], m1)
    np.testing.assert_array_equal(results[2].masks[2], m2)
    for r in results:
        assert r.label_map.shape == (64, 64) and all(np.isfinite(s) for s in r.scores.values())
    results = list(model.track(frames, text="the shape moving right"))
    assert len(results) == 5 and all(set(r.masks) == {1} for r in results)


@pytest.mark.parametrize("family", FAMILIES)
def test_pooled_references_track_with_a_quarter_of_the_tokens(family):
    """The Hiera presets' ``reference_pool`` 2 on both SAM 2 implementations: each reference is
    (h/2) x (w/2) tokens, the locality prior's keys get the pooled grid, tracking runs, and the
    references still steer the masks (two objects tracked from their own first masks differ)."""
    model = make_model(family, None, text=None, reference_pool=2, fusion={"mask_pos_logit": 16.0})
    with torch.no_grad():
        model.fusion.modulation[1].bias[512:] = 1.0  # open the mask branch's gate
    h, w = model.backend.embedding_size
    frames, labels = make_video(n_frames=4, birth=(0, 0), index=2)
    seen = []
    original = model.fusion.forward
    model.fusion.forward = lambda *a, **k: seen.append((k["mask"].keys.shape[1], k.get("key_pos"))) or original(*a, **k)
    results = list(model.track(frames, masks={1: labels[0] == 1, 2: labels[0] == 2}, sigma=0.0))
    assert seen and all(n == 2 * (h // 2) * (w // 2) for n, _ in seen)  # first + previous, each pooled
    assert all(kp is not None and kp.shape[-2:] == (h // 2, w // 2) for _, kp in seen)
    assert all(np.isfinite(s) for r in results for s in r.scores.values())
    # the pooled references still steer the decode: following object 1 or object 2 scores differently
    model.fusion.forward = original
    one = [r.scores[1] for r in model.track(frames[:3], masks={1: labels[0] == 1}, sigma=0.0)]
    two = [r.scores[1] for r in model.track(frames[:3], masks={1: labels[0] == 2}, sigma=0.0)]
    assert one[1:] != two[1:]


@pytest.mark.parametrize("family", FAMILIES)
def test_video_state_is_constant_and_one_batched_decode_per_frame(models, family, monkeypatch):
    model = models[family]
    frames, labels = make_video(n_frames=5, birth=(0, 0), index=1)
    segments = []
    real = model.segment
    monkeypatch.setattr(model, "segment", lambda emb, *a, **k: segments.append(emb.shape[0]) or real(emb, *a, **k))
    session = VideoSession(model, sigma=0.0)
    session.add_object(1, labels[0] == 1)
    session.add_object(2, labels[0] == 2)
    session.add_text_object(3, "the shape moving right")
    footprints = []
    for t in range(12):
        session.step(frames[t % 5])
        if t in (5, 11):
            footprints.append(_footprint(session))
    assert footprints[0] == footprints[1] and footprints[0][0] > 0
    assert segments[1:] == [3] * 11  # all objects of a frame in one batched decode


# ------------------------------------------------------------------ training
FAST = {"text": {"trainable": False}, "mask": {"input_size": 64}}


@pytest.mark.parametrize("family", FAMILIES)
def test_overfits_a_mixed_task_batch(text_encoder_parts, family):
    model = make_model(family, text_encoder_parts, **FAST).train()
    first, last = overfit(model, mixed_samples(small=True), steps=25)
    print(f"\n{family}: loss {first['loss']:.3f} -> {last['loss']:.3f} (dice {first['dice']:.3f} -> {last['dice']:.3f})")
    assert np.isfinite(last["loss"]) and last["loss"] < 0.5 * first["loss"]


@pytest.mark.parametrize("family", FAMILIES)
def test_backward_leaves_frozen_parts_without_grad(text_encoder_parts, family):
    model = make_model(family, text_encoder_parts).train()
    batch, targets, valid = make_batch(model, mixed_samples(small=True), cache_embeddings=False)
    batch.point_coords = torch.tensor([[[100.0, 60.0]]] * 4)
    batch.point_labels = torch.ones(4, 1, dtype=torch.int)
    out = model(batch)
    assert out.logits.shape == (4, 1, 64, 64) and out.scores.shape == (4,)
    segmentation_loss(out.logits, out.scores, targets, valid)["loss"].backward()
    backend = model.backend
    frozen = [backend.image_encoder, backend.prompt_encoder,
              *(getattr(backend.mask_decoder, p) for p in backend.encoder_side_decoder_parts)]
    assert all(p.grad is None and not p.requires_grad for m in frozen for p in m.parameters())
    for name, p in model.named_parameters():
        if not p.requires_grad:
            assert p.grad is None, name
    assert any(float(p.grad.abs().sum()) > 0 for p in model.fusion.modulation.parameters())
    assert all(p.grad is not None for p in backend.mask_decoder.transformer.parameters())


# ------------------------------------------------------------------ checkpoints
FRESH_PROCESS = """
import sys
import numpy as np
import torch
sys.path.insert(0, {tests!r})
from test_sam2_tasks import load_sam, run_predictions
from unifusion_sam.sam import UniFusionSam

family, sam_path, source, out_path = sys.argv[1:]
torch.set_num_threads(1)
model = UniFusionSam.from_pretrained(source, sam=load_sam(family, sam_path))
np.savez(out_path, **run_predictions(model))
"""


def load_sam(family: str, path: str):
    """The SAM 2 saved at ``path``, rebuilt the way a user would."""
    if family == "meta_sam2":
        return build_sam("sam2_tiny", checkpoint=path)
    from safetensors.torch import load_file

    from unifusion_sam.sam import build_hf_sam

    sam = build_hf_sam("sam2_tiny")
    sam.load_state_dict(load_file(path))
    return sam


def run_predictions(model) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    image, ref = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8), rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)
    ref_mask = np.zeros((40, 56), dtype=bool)
    ref_mask[8:30, 10:40] = True
    calls = {"points": dict(point_coords=[[20, 30]], point_labels=[1]), "text": dict(text="the bright square"),
             "mask": dict(ref_images=[ref], ref_masks=[ref_mask]), "box": dict(box=[5, 5, 40, 30])}
    out = {}
    for name, kwargs in calls.items():
        pred = model.predict(image, **kwargs)
        out[name], out[name + "_score"] = pred.logits, np.array(pred.score)
    return out


@pytest.mark.parametrize("family", FAMILIES)
def test_save_and_load_in_a_fresh_process_reproduce_predictions(text_encoder_parts, tmp_path, family):
    from safetensors.torch import load_file, save_file

    model = make_model(family, text_encoder_parts, lora={"enabled": True})
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():  # move every adapter tensor away from its initialisation (LoRA B, zero gates)
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=gen) * 0.02)
    model.eval()
    expected = run_predictions(model)
    model.save_pretrained(tmp_path / "adapter")
    saved = load_file(str(tmp_path / "adapter" / "adapter_model.safetensors"))
    assert any(k.startswith("mask_decoder.") for k in saved) and any(k.startswith("lora.") for k in saved)
    assert not any(k.startswith(("mask_decoder.conv_s0", "mask_decoder.conv_s1")) for k in saved)
    card = (tmp_path / "adapter" / "README.md").read_text()
    assert "sam_family: " + family in card and 'build_' in card
    # the SAM as it was before wrapping (LoRA lives in the adapter), saved the way a user keeps it
    sam_path = tmp_path / "sam.safetensors"
    pristine = build_tiny_sam2(family)
    save_file({k: v.detach().clone().contiguous() for k, v in pristine.state_dict().items()}, str(sam_path))
    script = tmp_path / "fresh.py"
    script.write_text(FRESH_PROCESS.format(tests=str(Path(__file__).parent)))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, str(script), family, str(sam_path), str(tmp_path / "adapter"),
                           str(tmp_path / "out.npz")], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    got = dict(np.load(tmp_path / "out.npz"))
    assert set(got) == set(expected)
    for k in expected:
        assert np.array_equal(got[k], expected[k]), f"{k} differs after reloading"


def test_an_adapter_refuses_a_sam_of_another_family_or_size(tmp_path):
    families = [f for f in ("meta_sam2", "hf_sam2") if f != "meta_sam2" or HAS_SAM2]
    adapter = wrap_sam(build_tiny_sam2(families[0]), text=None)
    adapter.save_pretrained(tmp_path / "sam2")
    with pytest.raises(ValueError, match=rf"made for sam_family='{families[0]}'.*sam_family='meta', sam_size='tiny'"):
        UniFusionSam.from_pretrained(tmp_path / "sam2", sam=build_sam("tiny"))
    wrap_sam(build_sam("tiny"), text=None).save_pretrained(tmp_path / "sam1")
    with pytest.raises(ValueError, match=rf"made for sam_family='meta', sam_size='tiny'.*sam_family='{families[0]}'"):
        UniFusionSam.from_pretrained(tmp_path / "sam1", sam=build_tiny_sam2(families[0]))
    from unifusion_sam.sam import build_hf_sam

    with pytest.raises(ValueError, match=r"sam_size='sam2_tiny', image_size=256.*image_size=128"):
        UniFusionSam.from_pretrained(tmp_path / "sam2", sam=(build_sam if families[0] == "meta_sam2" else build_hf_sam)(
            "sam2_tiny", image_size=128))
    if len(families) == 2:  # Meta sam2 and transformers name their decoder weights differently
        with pytest.raises(ValueError, match="sam_family='meta_sam2'.*sam_family='hf_sam2'"):
            UniFusionSam.from_pretrained(tmp_path / "sam2", sam=build_tiny_sam2("hf_sam2"))


# ------------------------------------------------------------------ the training recipe, the CLI
@pytest.mark.slow
@pytest.mark.skipif(not HAS_SAM2, reason="Meta sam2 is not installed")
def test_recipe_trains_a_sam2_adapter_and_the_cli_loads_it(tmp_path, capsys):
    """``recipes/train_sam_unifusion.py --sam sam2_tiny`` (both stages, a few steps, a small held-out
    evaluation), then ``unifusion-sam segment --sam sam2_tiny --sam-checkpoint <the saved SAM 2>``."""
    import json

    from PIL import Image

    from unifusion_sam.cli import main

    out = tmp_path / "run"
    args = ["--sam", "sam2_tiny", "--adapter", "sam2-tiny", "--batch_size", "2", "--synthetic_image_size", "64",
            "--eval_samples", "2", "--eval_videos", "1", "--tracker", "none", "--stand_in.steps", "0",
            "--num_workers", "0", "--warmup_steps", "1", "--max_steps", "4", "--stage", "both", "--save_every", "100",
            "--adapter_overrides", '{"text": {"trainable": false}, "mask": {"input_size": 64}}',
            "--output_dir", str(out)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, str(REPO_ROOT / "recipes" / "train_sam_unifusion.py"), *args], env=env,
                         capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert np.isfinite(metrics["final_loss_image"]) and np.isfinite(metrics["final_loss_video"])
    config = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert (config["sam_family"], config["sam_size"], config["image_size"]) == ("meta_sam2", "sam2_tiny", 256)
    sam_path = out / "sam_sam2_tiny.safetensors"  # the random SAM 2 it trained on
    model = UniFusionSam.from_pretrained(out / "adapter", sam=build_sam("sam2_tiny", checkpoint=sam_path))
    assert model.predict(np.zeros((64, 64, 3), np.uint8), text="the red circle").mask.shape == (64, 64)

    image = tmp_path / "image.png"
    Image.fromarray(smooth_image(48, 64)).save(image)
    rc = main(["segment", str(image), "--text", "the red circle", "--checkpoint", str(out / "adapter"),
               "--sam", "sam2_tiny", "--sam-checkpoint", str(sam_path), "--out-dir", str(tmp_path / "cli")])
    assert rc == 0, capsys.readouterr().err
    assert Image.open(tmp_path / "cli" / "image_mask.png").size == (64, 48)

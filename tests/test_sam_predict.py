"""UniFusion-SAM prediction: exactly SAM without references, and every reference task on both SAMs.

Issue #3 "Must show" 1 and 2: with no reference and the zero-initialised fusion the wrapped model
returns what the wrapped SAM returns (Meta ``SamPredictor``, ``transformers.SamModel`` and its
``SamProcessor`` pipeline), wrapping shares SAM's tensors, and RIS / K-shot FSS / point+text calls run
on both implementations with references that change the output.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from unifusion_sam.sam import build_sam, wrap_sam

FAMILIES = ("meta", "hf")


def smooth_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A smooth uint8 RGB image (gradients + a disc) whose resized versions agree across resamplers."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w].astype(np.float64)
    phase = rng.uniform(0, 2 * np.pi, 3)
    img = np.stack([127 + 100 * np.sin(xx / (9 + 4 * c) + yy / 17 + phase[c]) for c in range(3)], axis=-1)
    disc = (yy - h * 0.45) ** 2 + (xx - w * 0.55) ** 2 < (min(h, w) * 0.2) ** 2
    img[disc] = (230, 40, 40)
    return np.clip(img, 0, 255).astype(np.uint8)


def noise_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def disc_mask(h: int, w: int, cy: float, cx: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    return (yy - cy) ** 2 + (xx - cx) ** 2 < r**2


PROMPTS = {
    "points": dict(point_coords=np.array([[50.0, 40.0], [100.0, 70.0]]), point_labels=np.array([1, 0])),
    "box": dict(box=np.array([10.0, 20.0, 90.0, 80.0])),
    "points+box": dict(point_coords=np.array([[50.0, 40.0]]), point_labels=np.array([1]),
                       box=np.array([10.0, 20.0, 90.0, 80.0])),
}


# ------------------------------------------------------------------ 1. exactly SAM without references
@pytest.mark.parametrize("shape", [(100, 140), (130, 112)])
@pytest.mark.parametrize("prompt", sorted(PROMPTS))
def test_meta_no_reference_equals_sam_predictor(tiny_models, shape, prompt):
    from segment_anything import SamPredictor

    model = tiny_models["meta"]
    img = noise_image(*shape, seed=1)
    kwargs = PROMPTS[prompt]
    predictor = SamPredictor(model.sam)
    predictor.set_image(img)
    masks, scores, low_res = predictor.predict(**kwargs, multimask_output=False, return_logits=True)
    ours = model.predict(img, **kwargs)
    assert np.array_equal(ours.logits, masks[0])
    assert np.array_equal(np.float32(ours.score), scores[0])
    assert np.array_equal(ours.low_res_logits, low_res[0])
    assert np.array_equal(ours.mask, masks[0] > model.sam.mask_threshold)


def test_wrapping_shares_sam_tensors():
    sam = build_sam("tiny")
    model = wrap_sam(sam)
    assert model.sam is sam
    ptrs = {id(p): p.data_ptr() for p in sam.parameters()}
    for name, p in model.backend.image_encoder.named_parameters():
        assert p.data_ptr() == ptrs[id(p)], name
    own = dict(sam.image_encoder.named_parameters())
    assert all(own[n] is p for n, p in model.backend.image_encoder.named_parameters())
    assert model.backend.prompt_encoder is sam.prompt_encoder and model.backend.mask_decoder is sam.mask_decoder
    # counted once: total = SAM + adapter, not SAM twice
    sam_total = sum(p.numel() for p in sam.parameters())
    adapter_total = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("sam."))
    assert model.num_parameters()[1] == sam_total + adapter_total


def test_hf_wrapping_shares_sam_tensors(tiny_models):
    model = tiny_models["hf"]
    sam = model.sam
    enc = dict(sam.vision_encoder.named_parameters())
    for name, p in model.backend.image_encoder.named_parameters():
        assert p is enc[name] and p.data_ptr() == enc[name].data_ptr()


def _hf_direct(model, img, kwargs):
    """Run transformers.SamModel itself on our preprocessed pixels, then the same postprocessing."""
    tf = model.transform
    prepared = tf.image(img)
    inputs = {}
    if "point_coords" in kwargs:
        coords = torch.tensor(tf.coords(kwargs["point_coords"], img.shape[:2]), dtype=torch.float)
        inputs["input_points"] = coords[None, None]
        inputs["input_labels"] = torch.as_tensor(kwargs["point_labels"])[None, None]
    if "box" in kwargs:
        inputs["input_boxes"] = torch.tensor(tf.boxes(kwargs["box"][None], img.shape[:2]), dtype=torch.float)[None]
    with torch.no_grad():
        out = model.sam(pixel_values=prepared.pixels, multimask_output=False, **inputs)
    low = out.pred_masks[:, 0]  # [1, 1, s, s]
    full = tf.postprocess(low, prepared.input_size, prepared.original_size)
    return full[0, 0].numpy(), float(out.iou_scores[0, 0, 0]), low[0, 0].numpy()


@pytest.mark.parametrize("prompt", sorted(PROMPTS))
def test_hf_no_reference_equals_sam_model(tiny_models, prompt):
    model = tiny_models["hf"]
    img = noise_image(100, 140, seed=2)
    logits, score, low = _hf_direct(model, img, PROMPTS[prompt])
    ours = model.predict(img, **PROMPTS[prompt])
    assert np.array_equal(ours.logits, logits)
    assert ours.score == score
    assert np.array_equal(ours.low_res_logits, low)


@pytest.mark.parametrize("prompt", ["points", "box"])
def test_hf_no_reference_close_to_sam_processor_pipeline(tiny_models, prompt):
    """The full HF pipeline (SamProcessor preprocessing + post_process_masks) agrees to ~1e-4.

    Preprocessing differs only by the rounding of the resized image (PIL in ResizeLongestSide,
    torchvision in SamImageProcessor); on this smooth image the logits agree to about 1e-6.
    """
    from transformers import SamImageProcessor, SamProcessor

    model = tiny_models["hf"]
    size = model.image_size
    processor = SamProcessor(SamImageProcessor(size={"longest_edge": size}, pad_size={"height": size, "width": size}))
    img = smooth_image(100, 140)
    kwargs = PROMPTS[prompt]
    call = {}
    if "point_coords" in kwargs:
        call = dict(input_points=[[kwargs["point_coords"].tolist()]], input_labels=[[kwargs["point_labels"].tolist()]])
    else:
        call = dict(input_boxes=[[kwargs["box"].tolist()]])
    inputs = processor(images=img, return_tensors="pt", **call)
    prepared = model.transform.image(img)
    assert inputs["pixel_values"].shape == prepared.pixels.shape
    pixel_gap = float((inputs["pixel_values"] - prepared.pixels).abs().max())
    model_inputs = {k: v for k, v in inputs.items() if k not in ("original_sizes", "reshaped_input_sizes")}
    with torch.no_grad():
        out = model.sam(**model_inputs, multimask_output=False)
    masks = processor.post_process_masks(out.pred_masks, inputs["original_sizes"], inputs["reshaped_input_sizes"],
                                         binarize=False)
    hf_logits = masks[0][0, 0].numpy()
    ours = model.predict(img, **kwargs)
    logit_gap = float(np.abs(hf_logits - ours.logits).max())
    score_gap = abs(float(out.iou_scores[0, 0, 0]) - ours.score)
    print(f"\nSamProcessor pipeline vs model.predict ({prompt}): pixels {pixel_gap:.2e}, "
          f"logits {logit_gap:.2e}, score {score_gap:.2e}")
    assert hf_logits.shape == ours.logits.shape == img.shape[:2]
    assert pixel_gap < 2e-2  # at most one uint8 level of the resized image, normalised
    assert logit_gap < 1e-4 and score_gap < 1e-4
    assert ((hf_logits > 0) == ours.mask).mean() > 0.999


@pytest.mark.parametrize("family", FAMILIES)
def test_zero_initialised_fusion_is_identity_with_references(tiny_models, family):
    model = tiny_models[family]
    img = smooth_image(64, 64)
    _, prepared, emb = model.predictor.embed(img)
    with torch.no_grad():
        feats = model.encode_text(["the red disc", "a long sentence about the disc on the right"])
        from unifusion_sam.fusion import ReferenceTokens

        lang = ReferenceTokens(feats.words[:1], feats.words[:1], feats.padding_mask[:1])
        m = model.transform.mask(disc_mask(64, 64, 30, 35, 12))
        ref = model.encode_mask_reference(prepared.unit, m, emb)
        fused = model.fuse(emb, lang, ref.levels[0])
    assert torch.equal(fused, emb)


# ------------------------------------------------------------------ 2. every reference task on both SAMs
def _task_calls(h: int, w: int):
    img = smooth_image(h, w, seed=3)
    refs = [smooth_image(h, w, seed=s) for s in (4, 5, 6)]
    masks = [disc_mask(h, w, h * 0.45, w * (0.35 + 0.1 * k), min(h, w) * 0.2) for k in range(3)]
    return img, {
        "ris": dict(text="the red disc in the middle"),
        "fss-1shot": dict(ref_images=refs[:1], ref_masks=masks[:1]),
        "fss-3shot": dict(ref_images=refs, ref_masks=masks),
        "point+text": dict(text="the red disc", point_coords=[[w * 0.55, h * 0.45]], point_labels=[1]),
        "rvos-like": dict(text="the red disc", ref_images=refs[:2], ref_masks=masks[:2]),
    }


@pytest.mark.parametrize("family", FAMILIES)
def test_every_task_runs(tiny_models, family):
    model = tiny_models[family]
    img, calls = _task_calls(90, 120)
    for task, kwargs in calls.items():
        out = model.predict(img, **kwargs)
        assert out.mask.shape == img.shape[:2] and out.mask.dtype == bool, task
        assert out.logits.shape == img.shape[:2] and np.isfinite(out.logits).all(), task
        assert isinstance(out.score, float) and np.isfinite(out.score), task
        assert out.low_res_logits.shape == (4 * model.backend.embedding_size[0],) * 2, task
        again = model.predict(img, **kwargs)
        assert np.array_equal(again.logits, out.logits), f"{task} is not deterministic"


def _perturb_references(model, seed: int = 0) -> dict:
    """Give the zero-initialised fusion modulation (and the reference tokens) random weights; returns a backup."""
    backup = {k: v.clone() for k, v in model.state_dict().items()
              if k.startswith(("fusion.", "text_token.", "mask_token."))}
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in (model.fusion.modulation[1], model.text_token, model.mask_token):
            module.weight.copy_(torch.randn(module.weight.shape, generator=g) * 0.2)
            module.bias.copy_(torch.randn(module.bias.shape, generator=g) * 0.2)
    return backup


@pytest.mark.parametrize("family", FAMILIES)
def test_references_change_the_output(tiny_models, family):
    model = tiny_models[family]
    img, _ = _task_calls(90, 120)
    h, w = img.shape[:2]
    ref = smooth_image(h, w, seed=7)
    left, right = disc_mask(h, w, 45, 30, 18), disc_mask(h, w, 45, 90, 18)
    backup = _perturb_references(model)
    try:
        a = model.predict(img, text="the red disc on the left")
        b = model.predict(img, text="a small blue square at the bottom")
        assert not np.allclose(a.logits, b.logits, atol=1e-4)
        c = model.predict(img, ref_images=[ref], ref_masks=[left])
        d = model.predict(img, ref_images=[ref], ref_masks=[right])
        assert not np.allclose(c.logits, d.logits, atol=1e-4)
        # the fused image embedding itself (not only the extra prompt token) depends on the sentence
        _, _, emb = model.predictor.embed(img)
        with torch.no_grad():
            from unifusion_sam.fusion import ReferenceTokens

            fused = []
            for text in ("the red disc on the left", "a small blue square at the bottom"):
                f = model.encode_text([text])
                fused.append(model.fuse(emb, ReferenceTokens(f.words, f.words, f.padding_mask), None))
        assert not torch.allclose(fused[0], fused[1], atol=1e-5)
        assert not torch.allclose(fused[0], emb, atol=1e-5)
    finally:
        model.load_state_dict(backup, strict=False)
    restored = model.predict(img, text="the red disc on the left")
    assert not np.array_equal(restored.logits, a.logits)  # back to the zero-initialised fusion


@pytest.mark.parametrize("family", FAMILIES)
def test_set_image_then_predict_without_image(tiny_models, family):
    model = tiny_models[family]
    img, calls = _task_calls(90, 120)
    model.set_image(img)
    try:
        direct = model.predict(img, **calls["ris"])
        cached = model.predict(**calls["ris"])
    finally:
        model.predictor.reset_image()
    assert np.array_equal(direct.logits, cached.logits)


def test_predict_does_not_change_training_state(tiny_sam_factory):
    """predict runs the network in eval mode (no dropout, BatchNorm running statistics left untouched)
    and gives every submodule its mode back."""
    model = tiny_sam_factory("meta").train()
    img, calls = _task_calls(64, 64)
    modes = {name: m.training for name, m in model.named_modules()}
    bn = {k: v.clone() for k, v in model.mask_encoder.state_dict().items() if "running" in k}
    first = model.predict(img, **calls["rvos-like"])
    second = model.predict(img, **calls["rvos-like"])
    assert np.array_equal(first.logits, second.logits)
    assert modes == {name: m.training for name, m in model.named_modules()}
    assert all(torch.equal(v, model.mask_encoder.state_dict()[k]) for k, v in bn.items())

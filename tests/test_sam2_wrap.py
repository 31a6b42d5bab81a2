"""``wrap_sam`` on SAM 2 (issue #16): exactly SAM 2 without references, frozen parts, LoRA on Hiera, presets.

On tiny random SAM 2 models built offline (``sam2_tiny``, :mod:`fixtures_sam2`): with no reference and the
zero-initialised fusion, point and box prompts give bit-identical logits to Meta's ``SAM2ImagePredictor``
and to ``transformers.Sam2Model`` with its ``Sam2Processor`` (pre- and post-processing included), and the
score is SAM 2's object-score head. Frame features fold the decoder's high-resolution maps exactly; only
adapter (and LoRA) parameters train, SAM 2's ``conv_s0`` / ``conv_s1`` stay frozen.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from fixtures_sam2 import FAMILIES, HAS_SAM2, build_tiny_sam2, make_model, needs_sam2

from unifusion_sam.encoders import MaskReferenceEncoder
from unifusion_sam.fusion import ReferenceTokens, UniFusion
from unifusion_sam.sam import SAM2_SPECS, build_hf_sam, list_presets, load_preset, wrap_sam
from unifusion_sam.sam.specs import sam2_name_from_state

pytestmark = pytest.mark.usefixtures("one_thread")

PROMPTS = {
    "points": dict(point_coords=np.array([[50.0, 40.0], [100.0, 70.0]]), point_labels=np.array([1, 0])),
    "box": dict(box=np.array([10.0, 20.0, 90.0, 80.0])),
    "points+box": dict(point_coords=np.array([[50.0, 40.0]]), point_labels=np.array([1]),
                       box=np.array([10.0, 20.0, 90.0, 80.0])),
}


def noise_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def models(text_encoder_parts):
    """One wrapped tiny SAM 2 per installed implementation, shared by read-only tests."""
    out = {}
    for family in ("meta_sam2", "hf_sam2"):
        if family == "meta_sam2" and not HAS_SAM2:
            continue
        out[family] = make_model(family, text_encoder_parts)
    return out


# ------------------------------------------------------------------ exactly SAM 2 without references
@needs_sam2
@pytest.mark.parametrize("shape", [(100, 140), (130, 112)])
@pytest.mark.parametrize("prompt", sorted(PROMPTS))
def test_meta_no_reference_equals_sam2_image_predictor(models, shape, prompt):
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    model = models["meta_sam2"]
    img, kwargs = noise_image(*shape, seed=1), PROMPTS[prompt]
    predictor = SAM2ImagePredictor(model.sam)
    grid = model.image_size // 16  # sam2 hard-codes the 1024 feature sizes; this SAM 2 runs at 256
    predictor._bb_feat_sizes = [(4 * grid, 4 * grid), (2 * grid, 2 * grid), (grid, grid)]
    captured = {}
    hook = model.sam.sam_mask_decoder.register_forward_hook(lambda m, i, out: captured.update(out=out))
    try:
        predictor.set_image(img)
        masks, _, low_res = predictor.predict(**kwargs, multimask_output=False, return_logits=True)
    finally:
        hook.remove()
    ours = model.predict(img, **kwargs)
    assert ours.logits.shape == img.shape[:2]
    assert np.array_equal(ours.logits, masks[0])
    assert np.array_equal(np.clip(ours.low_res_logits, -32.0, 32.0), low_res[0])  # the predictor clamps these
    assert np.array_equal(ours.mask, masks[0] > 0.0)
    assert ours.score == float(captured["out"][3].sigmoid()[0, 0])  # SAM 2's object score, as a probability


def _processor_call(kwargs: dict) -> dict:
    call = {}
    if "point_coords" in kwargs:
        call.update(input_points=[[kwargs["point_coords"].tolist()]], input_labels=[[kwargs["point_labels"].tolist()]])
    if "box" in kwargs:
        call.update(input_boxes=[[kwargs["box"].tolist()]])
    return call


@pytest.mark.parametrize("shape", [(100, 140), (130, 112)])
@pytest.mark.parametrize("prompt", sorted(PROMPTS))
def test_hf_no_reference_equals_sam2_model_and_processor(models, shape, prompt):
    from transformers import Sam2ImageProcessor, Sam2Processor

    model = models["hf_sam2"]
    s = model.image_size
    processor = Sam2Processor(Sam2ImageProcessor(size={"height": s, "width": s}))
    img, kwargs = noise_image(*shape, seed=2), PROMPTS[prompt]
    inputs = processor(images=img, return_tensors="pt", **_processor_call(kwargs))
    assert torch.equal(inputs["pixel_values"], model.transform.image(img).pixels)
    with torch.no_grad():
        out = model.sam(**{k: v for k, v in inputs.items() if k != "original_sizes"}, multimask_output=False)
    full = processor.post_process_masks(out.pred_masks, inputs["original_sizes"], binarize=False)[0][0, 0].numpy()
    ours = model.predict(img, **kwargs)
    assert np.array_equal(ours.logits, full)
    assert np.array_equal(ours.low_res_logits, out.pred_masks[0, 0, 0].numpy())
    assert ours.score == float(out.object_score_logits.sigmoid()[0, 0, 0])


@pytest.mark.parametrize("family", FAMILIES)
def test_frame_features_fold_the_high_resolution_maps_exactly(models, family):
    model = models[family]
    img = noise_image(90, 120, seed=3)
    prepared = model.transform.image(img)
    with torch.no_grad():
        features = model.encode_image(torch.cat([prepared.pixels, prepared.pixels.flip(-1)]))
        if family == "hf_sam2":  # Sam2Model's own image embeddings: [stride 4, stride 8, stride 16]
            reference = model.sam.get_image_embeddings(prepared.pixels)
        else:
            from sam2.sam2_image_predictor import SAM2ImagePredictor

            predictor = SAM2ImagePredictor(model.sam)
            predictor._bb_feat_sizes = [(64, 64), (32, 32), (16, 16)]
            predictor.set_image(img)
            reference = [*predictor._features["high_res_feats"], predictor._features["image_embed"]]
    backend = model.backend
    assert features.shape == (2, backend.feature_channels, 16, 16) and backend.feature_channels == 1024
    emb, (s4, s8) = backend.image_embedding(features), backend.decoder_inputs(features)
    assert emb.shape == (2, 256, 16, 16) and s4.shape == (2, 32, 64, 64) and s8.shape == (2, 64, 32, 32)
    for ours, ref in zip((s4, s8, emb), reference):
        assert torch.equal(ours[:1], ref)
    # one frame broadcast to N objects unfolds its maps once; the decoder broadcasts them
    expanded = features[:1].expand(3, -1, -1, -1)
    assert [t.shape[0] for t in backend.decoder_inputs(expanded)] == [1, 1]


@pytest.mark.parametrize("family", FAMILIES)
def test_zero_initialised_fusion_is_identity_with_references(models, family):
    model = models[family]
    img = noise_image(64, 64, seed=4)
    _, prepared, frame = model.predictor.embed(img)
    mask = torch.zeros(1, model.image_size, model.image_size)
    mask[:, 60:160, 80:200] = 1
    with torch.no_grad():
        feats = model.encode_text(["the red disc"])
        ref = model.encode_mask_reference(prepared.unit, mask, frame)
        emb = model.backend.image_embedding(frame)
        fused = model.fuse(emb, ReferenceTokens(feats.words, feats.words, feats.padding_mask), ref.levels[0])
    assert ref.levels[0].keys.shape == (1, 256, 256)  # keys: the 256-channel embedding, not the folded maps
    assert torch.equal(fused, emb)


# ------------------------------------------------------------------ what trains
def _numel(module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("variant", ["default", "lora", "decoder-frozen"])
def test_only_adapter_parameters_train(text_encoder_parts, family, variant):
    overrides = {"lora": {"enabled": True}} if variant == "lora" else \
        {"train_mask_decoder": False} if variant == "decoder-frozen" else {}
    model = make_model(family, text_encoder_parts, **overrides)
    backend, config = model.backend, model.config
    decoder = backend.mask_decoder
    frozen_decoder = [getattr(decoder, part) for part in backend.encoder_side_decoder_parts]
    assert backend.encoder_side_decoder_parts == ("conv_s0", "conv_s1")
    expected = _numel(UniFusion(config.fusion)) + _numel(MaskReferenceEncoder(config.mask))
    expected += 2 * (256 * 256 + 256) + _numel(model.text_encoder.proj) + _numel(model.text_encoder.backbone)
    if config.train_mask_decoder:
        expected += _numel(decoder) - sum(_numel(m) for m in frozen_decoder)
    lora = sum(p.numel() for n, p in model.named_parameters() if "lora_" in n)
    assert (lora > 0) == (variant == "lora")
    assert model.num_parameters()[0] == expected + lora
    for name, p in backend.image_encoder.named_parameters():
        assert p.requires_grad == ("lora_" in name), name
    assert not any(p.requires_grad for p in backend.prompt_encoder.parameters())
    assert not any(p.requires_grad for m in frozen_decoder for p in m.parameters())
    allowed = ("fusion.", "mask_encoder.", "mask_token.", "text_token.", "text_encoder.", "sam.mask_decoder.",
               "sam.sam_mask_decoder.")
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert name.startswith(allowed) or "lora_" in name, name
    # the memory path of SAM 2 (video) is not used and stays frozen
    assert all(not p.requires_grad for n, p in model.sam.named_parameters() if n.startswith(("memory_", "obj_ptr")))


@pytest.mark.parametrize("family", FAMILIES)
def test_lora_on_hiera_attention(family):
    from peft.tuners.lora import LoraLayer

    sam = build_tiny_sam2(family)
    plain = wrap_sam(copy.deepcopy(sam), text=None)
    model = wrap_sam(sam, adapter="sam2-tiny-lora", text=None)
    enc = model.backend.image_encoder
    prefix = "trunk.blocks" if family == "meta_sam2" else "backbone.blocks"
    adapted = sorted(n for n, m in enc.named_modules() if isinstance(m, LoraLayer))
    depth = sum(SAM2_SPECS["sam2_tiny"].stages)
    assert adapted == sorted(f"{prefix}.{i}.attn.{t}" for i in range(depth) for t in ("qkv", "proj"))
    # Hiera's block-level projections (where a stage widens) and the neck are not adapted
    assert not any(".attn." not in n for n in adapted)
    assert {n for n, p in enc.named_parameters() if p.requires_grad} == {n for n, _ in enc.named_parameters()
                                                                         if "lora_" in n}
    pixels = torch.randn(1, 3, 256, 256, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        assert torch.equal(model.encode_image(pixels), plain.encode_image(pixels))  # B = 0 at initialisation
    features = model.encode_image(pixels)
    assert features.requires_grad
    weights = torch.randn(features.shape, generator=torch.Generator().manual_seed(6))
    (features * weights).sum().backward()
    lora_b = [p for n, p in enc.named_parameters() if "lora_B" in n]
    assert lora_b and all(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in lora_b)
    assert all(p.grad is None for n, p in enc.named_parameters() if "lora_" not in n)


# ------------------------------------------------------------------ presets, sizes, registry
def test_sam2_presets():
    names = [n for n in list_presets() if n.startswith("sam2-")]
    expected = {f"sam2-hiera-{s}{lora}" for s in ("tiny", "small", "base-plus", "large") for lora in ("", "-lora")}
    assert expected | {"sam2-tiny", "sam2-tiny-lora"} == set(names)
    for name in names:
        config = load_preset(name)
        assert config.sam_family == "meta_sam2" and config.sam_size in SAM2_SPECS, name
        assert config.image_size == SAM2_SPECS[config.sam_size].image_size, name
        assert config.lora.enabled == name.endswith("-lora"), name
        assert SAM2_SPECS[config.sam_size].preset == name.removesuffix("-lora"), name
        # Hiera presets (input 1024, a 64 x 64 grid): references pooled to 32 x 32 tokens
        assert config.reference_pool == (1 if name.startswith("sam2-tiny") else 2), name


@pytest.mark.parametrize("family", FAMILIES)
def test_wrap_records_family_and_size_and_picks_the_preset(family):
    model = wrap_sam(build_tiny_sam2(family), text=None)
    assert (model.config.sam_family, model.config.sam_size, model.config.image_size) == (family, "sam2_tiny", 256)
    assert model.config.fusion == load_preset("sam2-tiny").fusion
    assert model.config.mask == load_preset("sam2-tiny").mask


def test_hf_sizes_and_any_input_size():
    for name in ("sam2_hiera_t", "sam2_hiera_s", "sam2_hiera_b+", "sam2_hiera_l"):
        with torch.device("meta"):
            model = wrap_sam(build_hf_sam(name), text=None)
        assert model.config.sam_size == name and model.config.image_size == 1024
        assert model.config.fusion == load_preset(SAM2_SPECS[name].preset).fusion
    model = wrap_sam(build_hf_sam("sam2_tiny", image_size=128), text=None)
    assert model.image_size == 128 and model.backend.embedding_size == (8, 8)
    assert model.config.mask.input_size == 64  # the preset's reference size scales with the input
    out = model.predict(noise_image(50, 70), point_coords=[[20.0, 30.0]], point_labels=[1])
    assert out.low_res_logits.shape == (32, 32) and out.logits.shape == (50, 70)


@needs_sam2
def test_meta_registry_names_and_checkpoint_size_detection(tmp_path):
    from safetensors.torch import save_file

    from unifusion_sam.sam import build_sam
    from unifusion_sam.sam.builders.options import build_sam_from_option

    sam = build_tiny_sam2("meta_sam2")
    assert sam2_name_from_state(sam.state_dict()) == "sam2_tiny"
    path = tmp_path / "sam2_tiny.safetensors"
    save_file({k: v.detach().clone().contiguous() for k, v in sam.state_dict().items()}, str(path))
    again = build_sam("sam2_tiny", checkpoint=path)
    assert all(torch.equal(a, b) for a, b in zip(sam.state_dict().values(), again.state_dict().values()))
    from_path = build_sam_from_option(str(path))  # the CLI's --sam PATH: the size is read from the weights
    assert wrap_sam(from_path, text=None).config.sam_size == "sam2_tiny"
    with pytest.raises(ValueError, match="multiple of 32, got 100"):
        build_sam("sam2_tiny", image_size=100)
    with pytest.raises(ValueError, match=r"does not match SAM size 'sam2_hiera_t'"):
        build_sam("sam2_hiera_t", checkpoint=path)


def test_wrap_rejects_other_models_naming_sam2():
    with pytest.raises(TypeError, match=r"Sam2Model.*Linear"):
        wrap_sam(torch.nn.Linear(2, 2))


@pytest.mark.parametrize("family", FAMILIES)
def test_a_reference_gets_the_single_mask_token_without_sam2s_fallback(models, family):
    """SAM 2 in eval mode swaps an unstable single mask for its best multimask output; the adapter trains the
    single-mask token only, so samples with a reference always get that token (without one: SAM 2 as is)."""
    model = models[family]
    decoder = model.backend.mask_decoder
    _, _, frame = model.predictor.embed(noise_image(80, 100, seed=7))
    emb, extras = model.backend.image_embedding(frame), model.backend.decoder_inputs(frame)
    token = torch.randn(1, 256, generator=torch.Generator().manual_seed(8))
    with torch.no_grad():
        sparse, dense = model.backend.embed_prompts(None, None, None, 1)
        with_ref = torch.cat([sparse, token[:, None]], dim=1)
        ours = model.decode(emb, token, torch.ones(1, dtype=torch.bool), extras=extras)[0]
        fallback = model.backend.decode(emb, with_ref, dense, extras=extras)[0]
        decoder.train()
        try:
            single = model.backend.decode(emb, with_ref, dense, extras=extras)[0]  # training: no fallback in SAM 2
        finally:
            decoder.eval()
        plain = model.decode(emb, None, extras=extras)[0]
        sam2 = model.backend.decode(emb, sparse, dense, extras=extras)[0]
    assert decoder.dynamic_multimask_via_stability  # switched off for the call only
    assert torch.equal(ours, single)
    assert torch.equal(plain, sam2)
    assert not torch.equal(fallback, single)  # on this random SAM 2 the fallback would have swapped the mask

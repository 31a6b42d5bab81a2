"""LoRA on SAM's image encoder (through peft) and the adapter presets in ``adapters/``.

Issue #3 "Must show" 5 and 7: ``wrap_sam(sam, lora={"enabled": True, "targets": ["qkv", "proj"]})``
leaves the output unchanged at initialisation (LoRA's B = 0) on both SAM implementations, the LoRA
weights are the image encoder's only trainable parameters and get gradients through ``encode_image``,
and the patch embedding is not adapted. Every preset loads; the tiny ones wrap both SAMs.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from unifusion_sam.sam import (
    CUSTOM_SAMS,
    SAM2_SPECS,
    SAM_SPECS,
    UniFusionSamConfig,
    build_hf_sam,
    build_sam,
    list_presets,
    load_preset,
    wrap_sam,
)

FAMILIES = ("meta", "hf")
LORA = {"enabled": True, "targets": ["qkv", "proj"]}
ADAPTERS = Path(__file__).resolve().parents[1] / "adapters"


@pytest.fixture(scope="module")
def lora_pairs():
    """``family -> (plain SAM, LoRA-wrapped copy of the same SAM)`` built through ``wrap_sam``."""
    pairs = {}
    for family, build in (("meta", build_sam), ("hf", build_hf_sam)):
        torch.manual_seed(0)
        sam = build("tiny")
        pairs[family] = (sam, wrap_sam(copy.deepcopy(sam), lora=LORA))
    return pairs


def _encode(sam, family, pixels):
    with torch.no_grad():
        return sam.image_encoder(pixels) if family == "meta" else sam.vision_encoder(pixels).last_hidden_state


def _lora_params(model):
    return {n: p for n, p in model.named_parameters() if "lora_" in n}


@pytest.mark.parametrize("family", FAMILIES)
def test_lora_targets_attention_linears_only(lora_pairs, family):
    from peft.tuners.lora import LoraLayer

    _, model = lora_pairs[family]
    enc = model.backend.image_encoder
    adapted = sorted(n for n, m in enc.named_modules() if isinstance(m, LoraLayer))
    depth = SAM_SPECS["tiny"].depth
    prefix = "blocks" if family == "meta" else "layers"
    assert adapted == sorted(f"{prefix}.{i}.attn.{t}" for i in range(depth) for t in ("qkv", "proj"))
    patch = enc.patch_embed.proj if family == "meta" else enc.patch_embed.projection
    assert type(patch) is nn.Conv2d and not any("lora_" in n for n, _ in patch.named_parameters())
    assert not any("patch_embed" in n for n in _lora_params(model))
    # LoRA weights are the only trainable parameters of the image encoder; B starts at zero
    trainable = {n for n, p in enc.named_parameters() if p.requires_grad}
    assert trainable == {n for n, _ in enc.named_parameters() if "lora_" in n} and trainable
    assert all(float(p.detach().abs().max()) == 0 for n, p in enc.named_parameters() if "lora_B" in n)
    r = load_preset("sam-tiny").lora.r
    assert all(r in p.shape for p in _lora_params(model).values())
    assert not any(p.requires_grad for p in model.backend.prompt_encoder.parameters())


@pytest.mark.parametrize("family", FAMILIES)
def test_lora_output_unchanged_at_init(lora_pairs, family):
    sam, model = lora_pairs[family]
    pixels = torch.randn(2, 3, 256, 256, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(model.encode_image(pixels), _encode(sam, family, pixels))
    img = np.random.default_rng(2).integers(0, 256, (70, 90, 3), dtype=np.uint8)
    plain = wrap_sam(sam, text=None)  # the same SAM without LoRA (shares its weights, adds none to the encoder)
    for kwargs in (dict(point_coords=[[30.0, 40.0]], point_labels=[1]), dict(box=[5.0, 5.0, 60.0, 50.0])):
        assert np.array_equal(model.predict(img, **kwargs).logits, plain.predict(img, **kwargs).logits)


@pytest.mark.parametrize("family", FAMILIES)
def test_lora_receives_gradients_through_encode_image(lora_pairs, family):
    _, model = lora_pairs[family]
    lora = _lora_params(model)
    backup = {n: p.detach().clone() for n, p in lora.items()}
    try:
        _check_lora_gradients(model, lora)
    finally:  # the module-scoped model goes back to B = 0
        with torch.no_grad():
            for n, p in lora.items():
                p.copy_(backup[n])
                p.grad = None


def _check_lora_gradients(model, lora):
    pixels = torch.randn(1, 3, 256, 256, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert not model.encode_image(pixels).requires_grad
    emb = model.encode_image(pixels)
    assert emb.requires_grad
    # a random projection: SAM's neck ends in a LayerNorm, so a plain sum has zero gradient
    weights = torch.randn(emb.shape, generator=torch.Generator().manual_seed(4))
    (emb * weights).sum().backward()
    assert all(p.grad is not None for p in lora.values())
    assert all(float(p.grad.abs().sum()) > 0 for n, p in lora.items() if "lora_B" in n)
    for n, p in model.backend.image_encoder.named_parameters():
        if "lora_" not in n:
            assert p.grad is None, n
    # one optimiser step on the LoRA weights changes the embedding: the adapter is live
    before = emb.detach()
    torch.optim.SGD(lora.values(), lr=1.0).step()
    with torch.no_grad():
        assert not torch.allclose(model.encode_image(pixels), before)


def test_without_lora_the_encoder_runs_without_grad(tiny_models):
    model = tiny_models["meta"]
    assert not model.lora_enabled
    assert not model.encode_image(torch.zeros(1, 3, 256, 256)).requires_grad


@pytest.mark.parametrize("family", FAMILIES)
def test_lora_count_in_trainable_parameters(lora_pairs, family):
    sam, model = lora_pairs[family]
    plain = wrap_sam(copy.deepcopy(sam))
    width, depth, r = SAM_SPECS["tiny"].embed_dim, SAM_SPECS["tiny"].depth, model.config.lora.r
    lora = depth * r * ((width + 3 * width) + (width + width))  # qkv: C -> 3C, proj: C -> C
    assert sum(p.numel() for p in _lora_params(model).values()) == lora
    assert model.num_parameters()[0] == plain.num_parameters()[0] + lora
    assert model.num_parameters()[1] == plain.num_parameters()[1] + lora


# ------------------------------------------------------------------ 7. presets
def test_every_preset_file_loads():
    names = list_presets()
    # sam2-*.json: the SAM 2 presets (tests/test_sam2_wrap.py); uniref-*.json: the full model's presets
    assert names == sorted(p.stem for pattern in ("sam-*.json", "sam2-*.json") for p in ADAPTERS.glob(pattern))
    with pytest.raises(ValueError, match="unknown adapter preset 'uniref-r50'"):
        load_preset("uniref-r50")
    assert {"sam-tiny", "sam-tiny-lora", "sam-vit-b", "sam-vit-b-authors", "sam-vit-h", "sam-vit-h-lora"} <= set(names)
    for name in names:
        config = load_preset(name)
        assert isinstance(config, UniFusionSamConfig)
        sizes = {**{k: v.image_size for k, v in SAM_SPECS.items()}, **{k: v.image_size for k, v in CUSTOM_SAMS.items()},
                 **{k: v.image_size for k, v in SAM2_SPECS.items()}}
        assert config.image_size == sizes[config.sam_size], name
        assert config.lora.enabled == name.endswith("-lora"), name
        # the file round-trips through the config (no key silently dropped)
        on_disk = json.loads((ADAPTERS / f"{name}.json").read_text())
        assert config.to_dict() == UniFusionSamConfig.from_dict(on_disk).to_dict()
        assert set(config.to_dict()) == set(on_disk), name
    authors = load_preset("sam-vit-b-authors")
    assert (authors.fusion.num_heads, authors.fusion.head_dim, authors.mask.input_size) == (8, 256, None)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("preset", ["sam-tiny", "sam-tiny-lora"])
def test_wrap_with_tiny_presets(family, preset):
    sam = build_sam("tiny") if family == "meta" else build_hf_sam("tiny")
    model = wrap_sam(sam, adapter=preset)
    assert model.config.sam_family == family and model.config.sam_size == "tiny" and model.config.image_size == 256
    assert model.lora_enabled == preset.endswith("-lora")
    assert model.config.fusion == load_preset(preset).fusion
    img = np.random.default_rng(5).integers(0, 256, (50, 70, 3), dtype=np.uint8)
    ref = np.zeros((50, 70), dtype=bool)
    ref[10:30, 20:40] = True
    out = model.predict(img, text="the square", ref_images=[img], ref_masks=[ref])
    assert out.mask.shape == (50, 70) and np.isfinite(out.score)


def test_default_preset_follows_the_sam_size():
    model = wrap_sam(build_sam("tiny"), text=None)
    assert model.config.fusion == load_preset("sam-tiny").fusion
    assert model.config.mask == load_preset("sam-tiny").mask


def test_overrides_and_config_objects():
    sam = build_sam("tiny")
    model = wrap_sam(sam, text=None, fusion={"head_dim": 8}, mask={"input_size": 64}, train_mask_decoder=False)
    assert model.config.fusion.head_dim == 8 and model.config.fusion.num_heads == load_preset("sam-tiny").fusion.num_heads
    assert model.config.mask.input_size == 64 and model.text_encoder is None
    assert not any(p.requires_grad for p in sam.mask_decoder.parameters())
    config = load_preset("sam-tiny").replace(text=None)
    assert wrap_sam(build_sam("tiny"), adapter=config).text_encoder is None


@pytest.mark.parametrize("kwargs,exc,match", [
    (dict(adapter="sam-vit-q"), ValueError, r"unknown adapter preset 'sam-vit-q'.*sam-tiny"),
    (dict(adapter=3), TypeError, r"int"),
    (dict(colour="red"), ValueError, r"unknown adapter option 'colour'"),
    (dict(fusion={"heads": 4}), ValueError, r"heads"),
    (dict(lora={"targets": ["mlp"]}), ValueError, r"mlp"),
    (dict(fusion={"dim": 128}), ValueError, r"256"),
])
def test_bad_presets_and_overrides(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        wrap_sam(build_sam("tiny"), **kwargs)


def test_wrap_rejects_other_models():
    with pytest.raises(TypeError, match="Linear"):
        wrap_sam(nn.Linear(2, 2))


def test_preset_reference_size_follows_the_sam_input_size():
    from unifusion_sam.sam import build_sam, load_preset, wrap_sam

    preset = load_preset("sam-tiny")
    assert (preset.image_size, preset.mask.input_size) == (256, 128)
    model = wrap_sam(build_sam("tiny", image_size=128), adapter="sam-tiny", text=None)
    assert model.config.image_size == 128 and model.config.mask.input_size == 64
    explicit = wrap_sam(build_sam("tiny", image_size=128), adapter="sam-tiny", text=None, mask={"input_size": 96})
    assert explicit.config.mask.input_size == 96

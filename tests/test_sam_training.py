"""UniFusion-SAM training: a mixed-task batch overfits, and only the adapter trains.

Issue #3 "Must show" 3 and 4: a few dozen AdamW steps on one fixed batch of RIS + FSS (1- and 3-shot)
+ VOS + RVOS samples drive ``segmentation_loss`` below half its initial value on both SAM
implementations; only adapter parameters require gradients, SAM's frozen encoders get none, and the
trainable count equals the sum of the configured parts, computed independently.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from unifusion_sam.data.synthetic import SyntheticConfig, SyntheticDataset
from unifusion_sam.encoders import MaskReferenceEncoder
from unifusion_sam.fusion import UniFusion
from unifusion_sam.losses import segmentation_loss
from unifusion_sam.sam import SamBatch, load_preset

FAMILIES = ("meta", "hf")


def mixed_samples(small: bool = False):
    """RIS x2, FSS 1-shot and 3-shot, VOS x2, RVOS x1 (``small``: one RIS, FSS 1-shot, VOS and RVOS);
    96 x 128 images, so SAM's input is padded and the loss uses the valid region."""
    cfg1 = SyntheticConfig(image_size=(96, 128), num_shots=1)
    cfg3 = SyntheticConfig(image_size=(96, 128), num_shots=3)
    ris, fss, vos = (SyntheticDataset("train", task, 8, cfg1) for task in ("ris", "fss", "vos"))
    rvos = SyntheticDataset("train", "rvos", 8, cfg1)
    if small:
        return [ris[0], fss[2], vos[0], rvos[0]]
    return [ris[0], ris[1], fss[2], SyntheticDataset("train", "fss", 8, cfg3)[3], vos[0], vos[1], rvos[0]]


def make_batch(model, samples, cache_embeddings: bool = True):
    """SamBatch + full-resolution targets ``[B, S, S]`` and valid masks for ``samples`` (RefSample list).

    With ``cache_embeddings`` the frozen image encoder runs once here and the batch carries embeddings.
    """
    tf = model.transform
    texts, pixels, units, ref_masks, ref_pixels, owner, targets, valid = [], [], [], [], [], [], [], []
    for i, s in enumerate(samples):
        texts.append(s.text)
        pixels.append(tf.image(s.image).pixels)
        targets.append(tf.mask(s.mask))
        valid.append(tf.mask(np.ones(s.mask.shape, dtype=bool)))
        for img, m in zip(s.ref_images, s.ref_masks):
            prepared = tf.image(img)
            units.append(prepared.unit)
            ref_pixels.append(prepared.pixels)
            ref_masks.append(tf.mask(m))
            owner.append(i)
    batch = SamBatch(texts=texts, ref_units=torch.cat(units), ref_masks=torch.cat(ref_masks),
                     ref_owner=torch.tensor(owner))
    if cache_embeddings:
        with torch.no_grad():
            batch.embeddings = model.encode_image(torch.cat(pixels))
            batch.ref_embeddings = model.encode_image(torch.cat(ref_pixels))
    else:
        batch.pixels, batch.ref_pixels = torch.cat(pixels), torch.cat(ref_pixels)
    return batch, torch.cat(targets), torch.cat(valid)


# ------------------------------------------------------------------ 3. overfitting a mixed batch
def overfit(model, samples, steps: int, lr: float = 1e-3):
    """AdamW on every trainable parameter for ``steps`` steps on one fixed batch (cached embeddings).

    Returns the (loss, bce, dice) terms before training and after the last step."""
    batch, targets, valid = make_batch(model, samples)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
    first = None
    for _ in range(steps):
        out = model(batch)
        terms = segmentation_loss(out.logits, out.scores, targets, valid)
        if first is None:
            first = {k: float(v.detach()) for k, v in terms.items()}
        opt.zero_grad(set_to_none=True)
        terms["loss"].backward()
        opt.step()
    with torch.no_grad():
        out = model(batch)
        last = {k: float(v) for k, v in segmentation_loss(out.logits, out.scores, targets, valid).items()}
    return first, last


def test_mixed_batch_layout(tiny_sam_factory):
    model = tiny_sam_factory("meta")
    samples = mixed_samples()
    assert {s.task for s in samples} == {"ris", "fss", "vos", "rvos"}
    assert sorted(len(s.ref_images) for s in samples) == [0, 0, 1, 1, 1, 1, 3]
    batch, targets, valid = make_batch(model, samples)
    batch.validate()
    assert batch.embeddings.shape == (7, 256, 16, 16) and batch.ref_embeddings.shape == (7, 256, 16, 16)
    assert batch.ref_owner.tolist() == [2, 3, 3, 3, 4, 5, 6]
    assert targets.shape == valid.shape == (7, 256, 256)
    assert valid[:, :192].all() and not valid[:, 192:].any()  # 96 x 128 -> 192 x 256, padded at the bottom
    assert all(t.any() for t in targets)


# Cheaper settings for the default run: frozen text transformer, 64-pixel reference input for ResNet-18.
FAST = {"text": {"trainable": False}, "mask": {"input_size": 64}}


@pytest.mark.parametrize("family", FAMILIES)
def test_overfits_a_mixed_task_batch(tiny_sam_factory, family):
    model = tiny_sam_factory(family, **FAST).train()
    first, last = overfit(model, mixed_samples(small=True), steps=25)
    print(f"\n{family}: loss {first['loss']:.3f} -> {last['loss']:.3f} (dice {first['dice']:.3f} -> {last['dice']:.3f})")
    assert np.isfinite(last["loss"])
    assert last["loss"] < 0.5 * first["loss"]


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_overfits_a_mixed_task_batch_full(tiny_sam_factory, family):
    """The default preset (text transformer trains), all seven samples, long enough for Dice to fall."""
    model = tiny_sam_factory(family).train()
    first, last = overfit(model, mixed_samples(), steps=60)
    print(f"\n{family}: loss {first['loss']:.3f} -> {last['loss']:.3f} (dice {first['dice']:.3f} -> {last['dice']:.3f})")
    assert last["loss"] < 0.4 * first["loss"]
    assert last["dice"] < 0.75 * first["dice"]  # the masks themselves fit, not only the background


# ------------------------------------------------------------------ 4. only the adapter trains
def _numel(module) -> int:
    return sum(p.numel() for p in module.parameters())


def expected_trainable(model, config) -> int:
    """Sum of the configured parts, each counted on freshly built modules or SAM's own submodules."""
    c = config.fusion.dim
    total = _numel(UniFusion(config.fusion)) + _numel(MaskReferenceEncoder(config.mask))
    total += c * 256 + 256  # mask token Linear(C, 256)
    if config.text is not None:
        hidden = model.text_encoder.backbone.config.hidden_size
        total += c * 256 + 256  # text token Linear(C, 256)
        total += hidden * c + c + 2 * c  # text projection Linear(hidden, C) + LayerNorm(C)
        if config.text.trainable:
            total += _numel(model.text_encoder.backbone)
    if config.train_mask_decoder:
        total += _numel(model.backend.mask_decoder)
    if config.lora.enabled:
        r, per_block = config.lora.r, 0
        width = model.backend.model.config.vision_config.hidden_size if model.backend.family == "hf" else \
            model.backend.image_encoder.patch_embed.proj.out_channels
        shapes = {"qkv": (width, 3 * width), "proj": (width, width)}
        per_block = sum(r * (fan_in + fan_out) for fan_in, fan_out in (shapes[t] for t in config.lora.targets))
        depth = model.backend.model.config.vision_config.num_hidden_layers if model.backend.family == "hf" else \
            len(model.backend.image_encoder.blocks)
        total += depth * per_block
    return total


VARIANTS = {
    "default": {},
    "text-frozen": {"text": {"trainable": False}},
    "decoder-frozen": {"train_mask_decoder": False},
    "no-text": {"text": None},
    "lora": {"lora": {"enabled": True, "targets": ["qkv", "proj"]}},
}


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_trainable_count_is_sum_of_configured_parts(tiny_sam_factory, capsys, family, variant):
    model = tiny_sam_factory(family, **VARIANTS[variant])
    config = model.config
    trainable, total = model.num_parameters()
    assert trainable == expected_trainable(model, config)
    assert total == sum(p.numel() for p in model.parameters())  # SAM counted once, adapter included
    model.print_trainable_parameters()
    printed = capsys.readouterr().out
    found = re.search(r"trainable params: ([\d,]+) \|\| all params: ([\d,]+) \|\| trainable%: ([\d.]+)", printed)
    assert found, printed
    assert int(found[1].replace(",", "")) == trainable and int(found[2].replace(",", "")) == total
    assert abs(float(found[3]) - 100 * trainable / total) < 1e-3
    # every trainable parameter belongs to an adapter part
    allowed = ("fusion.", "mask_encoder.", "mask_token.", "text_token.", "text_encoder.")
    if config.train_mask_decoder:
        allowed += ("sam.mask_decoder.",)
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert name.startswith(allowed) or "lora_" in name, name
    if variant == "text-frozen":
        assert not any(p.requires_grad for p in model.text_encoder.backbone.parameters())
        assert all(p.requires_grad for p in model.text_encoder.proj.parameters())
        assert load_preset("sam-tiny").text.trainable  # the preset trains it; the override removed it


def test_overrides_remove_parts_from_the_count(tiny_sam_factory):
    default = tiny_sam_factory("meta").num_parameters()[0]
    frozen_text = tiny_sam_factory("meta", text={"trainable": False})
    backbone = _numel(frozen_text.text_encoder.backbone)
    assert frozen_text.num_parameters()[0] == default - backbone
    frozen_decoder = tiny_sam_factory("meta", train_mask_decoder=False)
    assert frozen_decoder.num_parameters()[0] == default - _numel(frozen_decoder.sam.mask_decoder)


@pytest.mark.parametrize("family", FAMILIES)
def test_backward_leaves_frozen_encoders_without_grad(tiny_sam_factory, family):
    model = tiny_sam_factory(family).train()
    samples = mixed_samples(small=True)
    batch, targets, valid = make_batch(model, samples, cache_embeddings=False)  # encode_image inside forward
    batch.point_coords = torch.tensor([[[100.0, 60.0]]] * 4)
    batch.point_labels = torch.ones(4, 1, dtype=torch.int)
    out = model(batch)
    segmentation_loss(out.logits, out.scores, targets, valid)["loss"].backward()
    frozen = {"image encoder": model.backend.image_encoder, "prompt encoder": model.backend.prompt_encoder}
    for part, module in frozen.items():
        for name, p in module.named_parameters():
            assert not p.requires_grad and p.grad is None, f"{part}: {name}"
    for name, p in model.named_parameters():
        if not p.requires_grad:
            assert p.grad is None, name
    for part in (model.fusion.q_proj, model.fusion.modulation[1], model.mask_encoder.conv1, model.mask_token,
                 model.text_token, model.text_encoder.proj[0], model.backend.mask_decoder.iou_prediction_head):
        grads = [p.grad for p in part.parameters()]
        assert all(g is not None for g in grads), part
    assert any(float(p.grad.abs().sum()) > 0 for p in model.fusion.modulation.parameters())

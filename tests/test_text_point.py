"""The text point (a sentence's location as a SAM point prompt) and the stand-in's promptable decoder."""

import math

import numpy as np
import pytest
import torch

from unifusion_sam.data.synthetic import SyntheticConfig, SyntheticDataset
from unifusion_sam.sam import build_sam, wrap_sam
from unifusion_sam.sam.adapter.batch import SamBatch
from unifusion_sam.sam.adapter.grounding import TextPointHead, positive_point_embedding, text_point_loss
from unifusion_sam.sam.backends.transforms import SamTransform
from unifusion_sam.sam.builders.stand_in import StandInConfig, pretrain_image_encoder
from unifusion_sam.sam.builders.stand_in.pretrain import SceneTargets, point_prompt_loss


def test_label_embedding_is_sams_positive_point():
    sam = build_sam("tiny")
    torch.testing.assert_close(positive_point_embedding(sam.prompt_encoder), sam.prompt_encoder.point_embeddings[1].weight[0])
    assert positive_point_embedding(torch.nn.Linear(2, 2), 8).eq(0).all()


def test_head_puts_the_point_where_the_sentence_matches():
    """A fused map whose one cell equals the direction the sentence asks for: the token is that cell's
    grid encoding plus the label embedding, and the heat map peaks there."""
    torch.manual_seed(0)
    head = TextPointHead(dim=8, inner=8, label=torch.arange(8.0))
    with torch.no_grad():
        head.q_proj.weight.copy_(torch.eye(8) * 40)
        head.q_proj.bias.zero_()
        head.k_proj.weight.copy_(torch.eye(8))
        head.k_proj.bias.zero_()
        head.pos_proj.weight.zero_()
    fused = torch.zeros(1, 8, 4, 4)
    fused[0, :, 2, 3] = torch.tensor([1.0, -1, 1, -1, 1, -1, 1, -1])  # LayerNorm keeps it, zeros stay zeros
    pe = torch.randn(1, 8, 4, 4)
    sentence = torch.tensor([[1.0, -1, 1, -1, 1, -1, 1, -1]])
    token, heat = head(fused, pe, sentence)
    assert heat.shape == (1, 16) and int(heat.argmax()) == 2 * 4 + 3
    torch.testing.assert_close(token[0], pe[0, :, 2, 3] + torch.arange(8.0), atol=1e-4, rtol=0)


def test_point_loss_is_minus_log_mass_on_the_target():
    heat = torch.zeros(2, 4)  # a 2 x 2 grid, uniform probabilities 1/4
    targets = torch.zeros(2, 32, 32)
    targets[0, :16, :16] = 1  # the first cell, fully
    targets[0, 16:, 16:24] = 1  # half of the last cell
    loss = text_point_loss(heat, targets, torch.tensor([True, False]))
    torch.testing.assert_close(loss, torch.tensor([-math.log(0.25 * 1.5), 0.0]))


@pytest.fixture(scope="module")
def pair():
    torch.manual_seed(0)
    sam = build_sam("tiny")
    return wrap_sam(sam, adapter="sam-tiny"), wrap_sam(sam, adapter="sam-tiny", text_point=True)


def _batch(model, texts, with_refs):
    torch.manual_seed(1)
    b, s = len(texts), model.image_size
    batch = SamBatch(pixels=torch.randn(b, 3, s, s), texts=texts)
    if with_refs:
        batch.ref_pixels, batch.ref_units = torch.randn(b, 3, s, s), torch.rand(b, 3, s, s)
        batch.ref_masks = (torch.rand(b, s, s) > 0.5).float()
        batch.ref_owner = torch.arange(b)
    return batch


def test_samples_without_a_sentence_decode_as_without_the_head(pair):
    plain, pointed = pair
    pointed.load_state_dict(plain.state_dict(), strict=False)  # the same adapter, plus a head
    plain.eval(), pointed.eval()
    with torch.no_grad():
        a = plain(_batch(plain, [None, "the red circle", None], with_refs=True))
        b = pointed(_batch(pointed, [None, "the red circle", None], with_refs=True))
    torch.testing.assert_close(a.logits[[0, 2]], b.logits[[0, 2]])
    assert not torch.allclose(a.logits[1], b.logits[1])  # the sentence's sample gets the point
    assert b.has_point.tolist() == [False, True, False] and b.point_heat.shape == (3, plain.image_size // 16 * plain.image_size // 16)
    assert a.point_heat is None


def test_point_loss_trains_the_head(pair):
    """On a fixed batch a few steps move the heat map's mass onto the target."""
    _, model = pair
    model.train()
    batch = _batch(model, ["the left one", "the right one"], with_refs=False)
    s = model.image_size
    targets = torch.zeros(2, s, s)
    targets[0, :, : s // 4] = 1
    targets[1, :, -s // 4:] = 1
    opt = torch.optim.Adam(model.text_point.parameters(), lr=1e-2)
    losses = []
    for _ in range(15):
        out = model(batch)
        loss = text_point_loss(out.point_heat, targets, out.has_point).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_scene_targets_give_a_point_inside_its_object():
    sam = build_sam("tiny")
    transform = SamTransform(sam.image_encoder.img_size, sam.pixel_mean, sam.pixel_std)
    targets = SceneTargets(SyntheticDataset("train", "ris", 4, SyntheticConfig(seed=3, image_size=(48, 64))), transform, 4)
    for i in range(4):
        *_, point, mask = targets[i]
        x, y = (int(v) for v in point.round())
        assert mask.shape == (256, 256) and mask[y, x] == 1 and 0 < mask.sum() < 256 * 256


def test_stand_in_decoder_term_trains_the_decoder_only_when_asked():
    syn = SyntheticConfig(seed=0, image_size=(64, 64))
    for weight in (0.0, 1.0):
        torch.manual_seed(0)
        sam = build_sam("tiny")
        before = {k: v.clone() for k, v in sam.mask_decoder.state_dict().items()}
        pretrain_image_encoder(sam, syn, StandInConfig(steps=2, batch_size=2, decoder_weight=weight), num_workers=0,
                               progress=False)
        changed = any(not torch.equal(before[k], v) for k, v in sam.mask_decoder.state_dict().items())
        assert changed == (weight > 0)
        if weight > 0:  # left frozen, in eval mode and without gradients, like the encoder
            assert not any(p.requires_grad for p in sam.mask_decoder.parameters()) and not sam.mask_decoder.training
            assert all(p.grad is None for p in sam.parameters())


def test_point_prompt_loss_falls_as_the_decoder_trains():
    """SAM's decoder trained on one scene's point (the stand-in's decoder term) learns its object's mask."""
    torch.manual_seed(0)
    sam = build_sam("tiny")
    targets = SceneTargets(SyntheticDataset("train", "ris", 2, SyntheticConfig(seed=3, image_size=(64, 64))),
                           SamTransform(sam.image_encoder.img_size, sam.pixel_mean, sam.pixel_std), 2)
    pixels, *_, point, mask = targets[0]
    with torch.no_grad():
        emb = sam.image_encoder(pixels[None])
    opt = torch.optim.Adam(sam.mask_decoder.parameters(), lr=1e-3)
    losses = []
    for _ in range(12):
        loss = point_prompt_loss(sam, emb, point[None], mask[None])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert np.isfinite(losses).all() and losses[-1] < 0.7 * losses[0]


def test_text_point_is_saved_with_the_adapter(pair, tmp_path):
    _, model = pair
    with torch.no_grad():
        model.text_point.q_proj.weight.mul_(3.0)
    model.save_pretrained(tmp_path)
    loaded = type(model).from_pretrained(tmp_path, sam=model.sam)
    assert "text_point.q_proj.weight" in model.adapter_state_dict()
    torch.testing.assert_close(loaded.text_point.q_proj.weight, model.text_point.q_proj.weight)

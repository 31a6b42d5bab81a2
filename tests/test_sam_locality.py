"""UniFusion-SAM's locality prior: SAM's grid encoding reaches UniFusion for tracking samples only."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from test_sam_training import make_batch, mixed_samples

from unifusion_sam.data.synthetic import SyntheticConfig, SyntheticDataset
from unifusion_sam.sam import SamBatch
from unifusion_sam.sam.training import collate_sam, prepare_sam_sample


@pytest.mark.parametrize("family", ["meta", "hf"])
def test_backend_dense_pe_is_the_decoders_grid_encoding(tiny_models, family):
    model = tiny_models[family]
    pe = model.backend.dense_pe()
    h, w = model.backend.embedding_size
    assert pe.shape == (1, 256, h, w)
    # a sin/cos encoding: |pe|^2 = C / 2 at every location (what the prior's initial scale assumes)
    torch.testing.assert_close(pe.square().sum(1), torch.full((1, h, w), 128.0), rtol=1e-4, atol=1e-3)
    if family == "meta":
        assert torch.equal(pe, model.backend.prompt_encoder.get_dense_pe())


def _open_gates(model) -> None:
    with torch.no_grad():
        model.fusion.modulation[1].bias[512:] = 1.0  # alpha = 1: the mask branch's output shows


@pytest.mark.parametrize("family", ["meta", "hf"])
def test_only_tracking_samples_get_the_prior(tiny_sam_factory, family):
    prior = tiny_sam_factory(family, fusion={"mask_pos_logit": 16.0})
    plain = tiny_sam_factory(family)  # same seed: identical except for the prior's projection
    plain.load_state_dict(prior.state_dict(), strict=False)
    for model in (prior, plain):
        _open_gates(model)
        model.eval()
    batch, _, _ = make_batch(prior, mixed_samples(small=True))
    b = batch.batch_size
    with torch.no_grad():
        without = plain(batch).logits
        batch.tracking = torch.zeros(b, dtype=torch.bool)
        off = prior(batch).logits
        batch.tracking = torch.tensor([False, False, True, True])  # RIS, FSS | VOS, RVOS
        on = prior(batch).logits
        batch.tracking = torch.ones(b, dtype=torch.bool)
        all_on = prior(batch).logits  # one projection of the grid encoding shared by every sample
    torch.testing.assert_close(off, without)  # not tracking: exactly the model without the prior
    torch.testing.assert_close(on[:2], without[:2])
    assert (on[2:] - without[2:]).abs().amax() > 1e-3
    torch.testing.assert_close(all_on[2:], on[2:])


def test_collate_marks_video_samples_as_tracking(tiny_models):
    cfg = SyntheticConfig(image_size=(64, 64))
    rng = np.random.default_rng(0)
    tf = tiny_models["meta"].transform
    samples = [SyntheticDataset("train", task, 4, cfg)[0] for task in ("ris", "fss", "vos", "rvos")]
    pseudo = replace(SyntheticDataset("train", "ris", 4, cfg)[1], task="pseudo_vos")  # two views of one image
    batch = collate_sam([prepare_sam_sample(s, tf, rng, flip_prob=0.0) for s in samples + [pseudo]])
    assert batch.batch.tracking.tolist() == [False, False, True, True, True]


def test_track_passes_tracking_and_predict_does_not(tiny_models, monkeypatch):
    model = tiny_models["meta"]
    seen = []
    original = type(model).fuse

    def spy(self, embeddings, lang, mask, tracking=None, pe=None):
        seen.append(None if tracking is None else tracking.tolist())
        return original(self, embeddings, lang, mask, tracking, pe)

    monkeypatch.setattr(type(model), "fuse", spy)
    video = SyntheticDataset("heldout", "vos", 2, SyntheticConfig(image_size=(64, 64))).video(0)
    first = np.asarray(video.annotations[0])
    ids = [k for k in np.unique(first) if k > 0]
    list(model.track(video.frames[:3], masks={int(k): first == k for k in ids}))
    assert seen[-1] == [True] * len(ids)  # frames after the first: references are earlier frames
    seen.clear()
    model.predict(video.frames[1], ref_images=[video.frames[0]], ref_masks=[first == ids[0]])
    assert seen == [None]  # example images, not frames of this video


def test_grid_encoding_is_computed_once_per_forward(tiny_sam_factory, monkeypatch):
    """Fusion and both decoder groups (with and without the reference token) share one encoding."""
    model = tiny_sam_factory("meta", fusion={"mask_pos_logit": 16.0})
    batch, _, _ = make_batch(model, mixed_samples(small=True))
    batch.tracking = torch.tensor([False, False, True, True])
    batch.point_coords, batch.point_labels = torch.full((4, 1, 2), 40.0), torch.ones(4, 1)
    batch.texts = [None, None, None, "a thing"]  # RIS sample without any reference: a second decoder group
    calls = []
    original = type(model.backend).dense_pe
    monkeypatch.setattr(type(model.backend), "dense_pe", lambda self: calls.append(1) or original(self))
    with torch.no_grad():
        model(batch)
    assert len(calls) == 1


def test_bad_tracking_flags_are_rejected():
    batch = SamBatch(texts=["a", "b"], embeddings=torch.zeros(2, 256, 4, 4), tracking=torch.ones(3, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"tracking must be a \[B\] = \[2\] bool tensor"):
        batch.validate()
    batch.tracking = torch.ones(2)
    with pytest.raises(ValueError, match="tracking must be"):
        batch.validate()


def test_pooled_references_have_a_quarter_of_the_tokens_and_keys_get_their_own_grid(tiny_sam_factory):
    """``reference_pool=2``: each reference is ``(h/2) * (w/2)`` tokens, and the locality prior gives each
    pooled key the encoding pooled over its block: fusing pooled tokens equals fusing the same tokens
    repeated over their 2 x 2 blocks on the full grid (softmax over duplicates is the same average)."""
    import torch.nn.functional as F

    from unifusion_sam.fusion import ReferenceTokens

    model = tiny_sam_factory("meta", fusion={"mask_pos_logit": 16.0}, reference_pool=2)
    _open_gates(model)
    h, w = model.backend.embedding_size
    s = model.image_size
    torch.manual_seed(1)
    units, masks = torch.rand(2, 3, s, s), (torch.rand(2, s, s) > 0.7).float()
    with torch.no_grad():
        frame = model.encode_image(torch.randn(2, 3, s, s))
        ref = model.encode_mask_reference(units, masks, frame)
        keys, values = ref.levels[0].keys, ref.levels[0].values
        assert keys.shape == (2, (h // 2) * (w // 2), 256) and values.shape == keys.shape
        pooled = ReferenceTokens(keys.reshape(1, -1, 256), values.reshape(1, -1, 256))
        query = model.backend.image_embedding(model.encode_image(torch.randn(1, 3, s, s)))
        pe = model.backend.dense_pe()
        fused = model.fuse(query, None, pooled, tracking=torch.tensor([True]), pe=pe)

        def repeat(t):  # [1, K * h/2 * w/2, C] -> [1, K * h * w, C], each token over its 2 x 2 block
            maps = t.reshape(-1, h // 2, w // 2, 256).permute(0, 3, 1, 2)
            return F.interpolate(maps, scale_factor=2, mode="nearest").flatten(2).transpose(1, 2).reshape(1, -1, 256)

        full = ReferenceTokens(repeat(keys), repeat(values))
        key_pos = F.interpolate(F.avg_pool2d(pe, 2), scale_factor=2, mode="nearest")
        same = model.fusion(query, mask=full, pos=pe, key_pos=key_pos)
        torch.testing.assert_close(fused, same, rtol=1e-4, atol=1e-4)
        assert (fused - query).abs().max() > 1e-3  # the references did something
        # without the pooled keys' own encoding the result differs: the keys' positions matter
        assert (model.fusion(query, mask=full, pos=pe) - fused).abs().max() > 1e-4


def test_reference_pool_must_divide_the_grid():
    from unifusion_sam.sam import load_preset
    from unifusion_sam.sam.adapter.config import merge_overrides

    config = load_preset("sam-tiny")
    for bad in (0, -2, 1.5):
        with pytest.raises((ValueError, TypeError), match="reference_pool"):
            merge_overrides(config, {"reference_pool": bad})
    with pytest.raises(ValueError, match="divide"):
        merge_overrides(config, {"reference_pool": 3})
    assert merge_overrides(config, {"reference_pool": 2}).reference_pool == 2

"""UniFusion-SAM's locality prior: SAM's grid encoding reaches UniFusion for tracking samples only."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from test_sam_training import make_batch, mixed_samples

from unifusion_sam.data.synthetic import SyntheticConfig, SyntheticDataset
from unifusion_sam.sam import SamBatch
from unifusion_sam.training import collate
from unifusion_sam.training.samples import prepare


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
    batch = collate([prepare(s, tf, rng, flip_prob=0.0) for s in samples + [pseudo]])
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

"""Example-prompted tracking (an object shown by pictures taken elsewhere), objects of every kind added mid-video,
and the errors of ``track`` / ``VideoSession`` for bad references."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from unifusion_sam.data.synthetic import SyntheticConfig, SyntheticDataset, object_examples, sample_video
from unifusion_sam.inference import VideoSession
from unifusion_sam.interface import Decoded, MaskReference, ObjectQuery

pytestmark = pytest.mark.usefixtures("one_thread")
CONFIG = SyntheticConfig(seed=5, image_size=(64, 64), num_frames=6, late_entry_prob=0.0)


@pytest.fixture(scope="module")
def model(tiny_sam_factory):
    return tiny_sam_factory("meta")


@pytest.fixture(scope="module")
def clip():
    video = SyntheticDataset("heldout", "vos", 1, CONFIG).video(0)
    shape = sample_video(CONFIG, "heldout", 0).shapes[0]
    return video, [np.asarray(video.annotations[t]) for t in range(6)], object_examples(CONFIG, "heldout", 1, shape, 2)


class Recorder:
    """Wraps ``decode_objects``: records each object's references (count, local flags) and, after the real
    forward, replaces the logits with ``found_from``: frames from it on show the objects (a square)."""

    def __init__(self, model, found_from: int = 2) -> None:
        self.model, self.real, self.found_from = model, model.decode_objects, found_from
        self.frames: list[list[tuple[int, list[bool] | None, bool]]] = []

    def __call__(self, frame, prepared, objects, *, task, tracking=False, prompts=None):
        decoded = self.real(frame, prepared, objects, task=task, tracking=tracking, prompts=prompts)
        self.frames.append([(len(o.masks), [None if m.local is None else bool(m.local[0]) for m in o.masks],
                             o.text is not None) for o in objects])
        logits = torch.full_like(decoded.logits, -20.0)
        if len(self.frames) - 1 >= self.found_from:
            logits[..., 4:12, 4:12] = 20.0
        return Decoded(logits, torch.ones_like(decoded.scores), decoded.extras)


def test_examples_alone_until_found_then_examples_the_found_frame_and_the_previous_frame(model, clip, monkeypatch):
    video, labels, examples = clip
    recorder = Recorder(model, found_from=2)
    monkeypatch.setattr(model, "decode_objects", recorder)
    session = VideoSession(model, sigma=0.5)
    session.add_example_object(1, examples)
    results = [session.step(f) for f in video.frames[:5]]
    assert [r.masks[1].any() for r in results] == [False, False, True, True, True]
    assert session.objects[1].found_at == 2 and session.objects[1].kind == "examples"
    # frames 0-2: the two examples only (other images: not local); then + the found frame's mask (the anchor,
    # encoded once on frame 2) and the previous frame's mask, both frames of this video (local)
    assert [f[0][:2] for f in recorder.frames] == [(2, [False, False])] * 3 + [(4, [False, False, True, True])] * 2
    assert session.objects[1].first is not None and session.objects[1].examples is not None
    with pytest.raises(ValueError, match="tracked already"):
        session.add_example_object(1, examples)


def test_example_references_take_no_locality_prior(tiny_sam_factory, clip):
    """An object decoded from examples on a video frame (``tracking=True``) is decoded exactly as few-shot
    segmentation decodes it (``tracking=False``): where the object lies in an example is no cue."""
    model = tiny_sam_factory("meta").eval()
    c = model.config.fusion.dim
    with torch.no_grad():  # UniFusion is the identity at init: open its gate so that fusion shows
        model.fusion.modulation[1].bias[2 * c:] = 1.0
    video, _, examples = clip
    pairs = model.predictor.reference_pairs([e[0] for e in examples], [e[1] for e in examples])
    with torch.no_grad():
        refs = model.predictor.encode_references(pairs, task="fss")
        _, prepared, frame = model.predictor.embed(video.frames[1], task="video")
        shots = [refs[j] for j in range(len(refs))]
        as_fss = model.decode_objects(frame, prepared, [ObjectQuery(masks=shots)], task="fss", tracking=False)
        marked = [MaskReference(s.levels, s.prototype, torch.tensor([False])) for s in shots]
        in_video = model.decode_objects(frame, prepared, [ObjectQuery(masks=marked)], task="video", tracking=True)
        unmarked = model.decode_objects(frame, prepared, [ObjectQuery(masks=shots)], task="video", tracking=True)
    assert torch.equal(in_video.logits, as_fss.logits) and torch.equal(in_video.scores, as_fss.scores)
    assert not torch.equal(unmarked.logits, as_fss.logits)  # as frames of the video they would take the prior


def test_track_mixes_masks_sentences_and_examples_and_adds_them_mid_video(model, clip, monkeypatch):
    video, labels, examples = clip
    recorder = Recorder(model, found_from=0)
    monkeypatch.setattr(model, "decode_objects", recorder)
    results = list(model.track(video.frames, masks={1: labels[0] == 1}, sigma=0.5,
                               new_objects={2: {2: "the red circle", 3: examples}, 4: {4: labels[4] == 2}}))
    assert [sorted(r.masks) for r in results] == [[1]] * 2 + [[1, 2, 3]] * 2 + [[1, 2, 3, 4]] * 2
    kinds = [[(n, text) for n, _, text in frame] for frame in recorder.frames]  # decoded from frame 1 on
    assert kinds[0] == [(2, False)]  # frame 1: the mask object (first + previous)
    assert kinds[1] == [(2, False), (0, True), (2, False)]  # frame 2: + a sentence, + examples, both new
    assert np.array_equal(results[4].masks[4], labels[4] == 2)  # a mask given later is that frame's output


def test_bad_references_are_clear_errors(model, clip):
    video, labels, examples = clip
    image, mask = examples[0]
    with pytest.raises(ValueError, match=r"examples of object 1: .*shape \(10, 10\) but its image is \(64, 64\)"):
        model.track(video.frames, examples={1: [(image, np.zeros((10, 10), bool))]})
    with pytest.raises(ValueError, match="examples of object 1: the mask of example 0 is empty"):
        model.track(video.frames, examples={1: [(image, np.zeros(mask.shape, bool))]})
    with pytest.raises(ValueError, match="examples of object 2: examples must be a non-empty list"):
        model.track(video.frames, examples={2: []})
    with pytest.raises(ValueError, match=r"object id 1 is given twice \(masks and text\)"):
        model.track(video.frames, masks={1: labels[0] == 1}, text={1: "the red circle"})
    with pytest.raises(ValueError, match=r"object id 3 is given twice \(examples and new_objects\[2\]\)"):
        model.track(video.frames, examples={3: examples}, new_objects={2: {3: labels[2] == 1}})
    with pytest.raises(ValueError, match="keyed by frame index .* got -1"):
        model.track(video.frames, new_objects={-1: {1: labels[0] == 1}})
    with pytest.raises(TypeError, match="a reference is a mask .* got int"):
        model.track(video.frames, new_objects={1: {1: 5}})
    with pytest.raises(ValueError, match="track needs masks, text, examples or new_objects"):
        model.track(video.frames)


def test_examples_on_the_full_model_and_no_prompts_for_it(clip):
    from unifusion_sam.uniref import build_uniref

    torch.manual_seed(0)
    small = build_uniref("uniref-small", image_sizes={"min_size": 64, "max_size": 128},
                         fss_sizes={"min_size": 64, "max_size": 128}, video_sizes={"min_size": 64, "max_size": 128})
    video, labels, examples = clip
    results = list(small.track(video.frames[:3], examples={1: examples}, masks={2: labels[0] == 2}, sigma=0.0))
    assert [sorted(r.masks) for r in results] == [[1, 2]] * 3
    session = VideoSession(small, sigma=0.0)
    session.add_object(1, labels[0] == 1)
    session.step(video.frames[0])
    with pytest.raises(ValueError, match="point and box prompts are a feature of the SAM family"):
        session.correct(1, points=[[5, 5]], labels=[1])
    assert np.array_equal(session.correct(1, mask=labels[0] == 1).masks[1], labels[0] == 1)


def test_synthetic_examples_show_the_videos_object():
    shape = sample_video(CONFIG, "train", 3).shapes[0]
    pairs = object_examples(CONFIG, "train", 7, shape, 3)
    assert len(pairs) == 3 and all(img.shape == (64, 64, 3) and m.shape == (64, 64) and m.any() for img, m in pairs)
    again = object_examples(CONFIG, "train", 7, shape, 3)
    assert all(np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) for a, b in zip(pairs, again))
    colour = np.asarray(shape.rgb, np.float32)
    for img, m in pairs:  # the object's own colour under its mask (texture aside)
        assert np.abs(img[m].astype(np.float32).mean(0) - colour).max() < 40
    sample = SyntheticDataset("train", "vos", 10, CONFIG).example_video_sample(3, shots=2, found_prob=1.0)
    assert sample.task == "vos_examples" and sample.meta["ref_local"] == [False, False, True]
    assert len(sample.ref_images) == 3 and sample.mask.shape == (64, 64)


def test_absent_example_samples_have_empty_targets_on_another_videos_frame():
    """``absent_prob``: search samples whose frame shows no trace of the examples' object (an empty target,
    so the score learns to say "not here"); found samples never are; the choice is fixed per item."""
    data = SyntheticDataset("train", "vos", 40, CONFIG)
    samples = [data.example_video_sample(i, shots=2, found_prob=0.5, absent_prob=0.5) for i in range(40)]
    absent = [s for s in samples if s.meta["absent"]]
    assert 5 <= len(absent) <= 15, len(absent)
    for s in absent:
        base = data.video_sample(s.meta["index"])
        assert not s.meta["found"] and not s.mask.any() and s.mask.shape == base.mask.shape
        assert not np.array_equal(s.image, base.image)  # another video's frame
        assert s.meta["ref_local"] == [False, False]
    assert all(s.mask.any() for s in samples if not s.meta["absent"])
    again = data.example_video_sample(absent[0].meta["index"], shots=2, found_prob=0.5, absent_prob=0.5)
    assert again.meta["absent"] and np.array_equal(again.image, absent[0].image)
    none = [data.example_video_sample(i, shots=2, found_prob=0.5) for i in range(40)]
    assert not any(s.meta["absent"] for s in none)
    with pytest.raises(ValueError, match="absent_prob"):
        data.example_video_sample(0, absent_prob=1.5)
    with pytest.raises(TypeError, match="absent_prob must be a number"):
        data.example_video_sample(0, absent_prob=True)
    from unifusion_sam.training import DataSource

    with pytest.raises(ValueError, match="absent_prob"):
        DataSource(kind="synthetic", task="vos_examples", options={"absent_prob": -0.1})


def test_both_families_train_on_example_prompted_samples(tiny_sam_factory):
    """The ``vos_examples`` sample kind (examples from other scenes, plus the previous frame when found): its
    references carry their local flags into the SAM batch, and a few steps on one batch lower each family's loss."""
    from unifusion_sam.sam.training import SamSamplePrep, collate_sam, sam_loss
    from unifusion_sam.training import DataSource, StageConfig, build_source
    from unifusion_sam.uniref import build_uniref
    from unifusion_sam.uniref.training import UniRefTrainFamily, collate_uniref

    source = build_source(DataSource(kind="synthetic", task="vos_examples", options={"shots": 2, "found_prob": 0.5}),
                          64, 0)
    samples = [source.sample(np.random.default_rng(i)) for i in range(4)]
    assert {len(s.ref_images) for s in samples} == {2, 3} and all(s.task == "vos_examples" for s in samples)
    sam = tiny_sam_factory("meta", text=None)
    batch = collate_sam([SamSamplePrep(sam.transform)(s, np.random.default_rng(0), 0.0) for s in samples])
    flags = [f for s in samples for f in s.meta["ref_local"]]
    assert batch.batch.ref_local.tolist() == flags
    assert batch.batch.tracking.tolist() == [any(s.meta["ref_local"]) for s in samples]

    def losses(model, step, params):
        optimizer = torch.optim.AdamW(params, lr=1e-3)
        out = []
        for _ in range(8):
            loss = step()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            out.append(float(loss.detach()))
        return out

    sam.train()
    seen = losses(sam, lambda: sam_loss(sam, batch, None)["loss"], [p for p in sam.parameters() if p.requires_grad])
    assert np.isfinite(seen).all() and np.mean(seen[-2:]) < np.mean(seen[:2]), seen

    torch.manual_seed(0)
    small = build_uniref("uniref-small", text=None, video_sizes={"min_size": 64, "max_size": 128})
    family = UniRefTrainFamily.for_model(small)
    prep = family.sample_prep("video", StageConfig(data=[DataSource()], min_sizes=(64,)))
    ubatch = collate_uniref([prep(s, np.random.default_rng(0), 0.0) for s in samples])
    assert ubatch.vos and len(ubatch.ref_owner) == sum(len(s.ref_images) for s in samples)
    small.train()
    seen = losses(small, lambda: family.loss(small, ubatch)["loss"], [p for p in small.parameters() if p.requires_grad])
    assert np.isfinite(seen).all() and np.mean(seen[-2:]) < np.mean(seen[:2]), seen

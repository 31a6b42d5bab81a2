"""The online video session (issue #4): bookkeeping, batching, constant state, bad input.

Most tests drive :class:`VideoSession` with :class:`OracleNet`, a stub implementing the inference
interface the session uses (:class:`~unifusion_sam.interface.ReferenceSegmenter`: ``prepare_image``,
``prepare_mask``, ``encode_frame``, ``encode_text``, ``encode_masks``, ``decode_objects``,
``postprocess``). The stub's tensors carry meaning: an encoded frame holds its frame index, an encoded
mask reference holds the id of the ground-truth object its mask shows (and its frame), a sentence
"object k" holds k. ``decode_objects`` reads, for each object of its batch, the object from the
references it was given (asserting that an object never mixes two objects' references) and returns
that object's ground truth on the current frame, so a session that hands an object the wrong
references produces wrong masks. Scores and
probability maps can be overridden per (object, frame). A few tests run the real tiny SAM end to end.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from unifusion_sam.data.synthetic import SyntheticConfig, VideoSpec, sample_video
from unifusion_sam.encoders.text import TextFeatures
from unifusion_sam.fusion.unifusion import ReferenceTokens
from unifusion_sam.inference import SIGMA_PRESETS, VideoSession, resolve_sigma
from unifusion_sam.interface import Decoded, MaskReference, MaskResult
from unifusion_sam.sam.backends.transforms import SamTransform

C = 8  # stub channels: what each one carries
ID, FRAME, AREA, TEXT = 0, 1, 2, 3
S = 256  # stub SAM input size (like the tiny SAM): embeddings 16 x 16, low-res logits 64 x 64
BIG = 20.0  # |logit| of a confident pixel


pytestmark = pytest.mark.usefixtures("one_thread")


# ------------------------------------------------------------------ synthetic videos
def make_video(size=(64, 64), n_frames=12, birth=(0, 5), leave=None, index=0):
    """Two objects from the synthetic generator; object 2 first appears on frame ``birth[1]`` and,
    with ``leave``, is gone from frame ``leave`` on. Returns (frames, label maps)."""
    config = SyntheticConfig(image_size=size, num_frames=n_frames, late_entry_prob=0.0)
    spec = sample_video(config, "heldout", index)
    both = VideoSpec(spec.background, spec.shapes[:2], spec.centres[:2], spec.scales[:2], list(birth))
    alone = VideoSpec(spec.background, spec.shapes[:1], spec.centres[:1], spec.scales[:1], [birth[0]])
    frames, labels = [], []
    for t in range(n_frames):
        image, label = (alone if leave is not None and t >= leave else both).render(t)
        frames.append(image)
        labels.append(label)
    return frames, labels


@pytest.fixture(scope="module")
def late_video():
    frames, labels = make_video(birth=(0, 5), leave=9)
    assert all((labels[t] == 1).any() for t in range(12))  # object 1 is visible throughout
    assert [bool((lab == 2).any()) for lab in labels] == [False] * 5 + [True] * 4 + [False] * 3
    return frames, labels


# ------------------------------------------------------------------ the stub network
class RecordingTransform(SamTransform):
    def __init__(self) -> None:
        super().__init__(S, torch.tensor([123.675, 116.28, 103.53]), torch.tensor([58.395, 57.12, 57.375]))
        self.image_sizes: list[tuple[int, int]] = []

    def image(self, image, device="cpu"):
        self.image_sizes.append(image.shape[:2])
        return super().image(image, device)


def _logit(p: float) -> float:
    return float(np.log(p / (1 - p)))


class OracleNet:
    """Stub network; ``gt(t)`` is frame t's label map at the session's working size.

    ``score(k, t)`` defaults to 0.9 when object k is in frame t and 0.05 otherwise; ``logits(k, t)``
    (a working-size map) defaults to +/-BIG on the ground truth. A reference mask shows the object it
    overlaps most, which must cover half of it unless ``strict=False``.
    """

    def __init__(self, gt, score=None, logits=None, strict=True) -> None:
        self.gt, self.strict = gt, strict
        self.score = score or (lambda k, t: 0.9 if (gt(t) == k).any() else 0.05)
        self.logits = logits or (lambda k, t: np.where(gt(t) == k, BIG, -BIG))
        self.transform = RecordingTransform()
        self.predictor = SimpleNamespace(embed=self._embed)
        self.device = torch.device("cpu")
        self.frame = -1
        self._cache: dict = {}
        self.calls: dict[str, int] = defaultdict(int)
        self.rows: dict[int, list[list[dict]]] = defaultdict(list)  # frame -> segment calls -> rows
        self.mask_refs: dict[int, list[tuple[int, int, float]]] = defaultdict(list)  # frame -> (frame, id, area)

    # the inference interface the session uses
    def _embed(self, image, name="image", task="ris"):  # the predictor's embed, without its cache
        assert task == "video"
        prepared = self.prepare_image(image, task)
        return image, prepared, self.encode_frame(prepared)

    def prepare_image(self, rgb, task, pad_to=None):
        return self.transform.image(rgb, self.device)

    def prepare_mask(self, mask, prepared):
        return self.transform.mask(mask, self.device)[0]

    def encoder_version(self):
        return 0.0

    def encode_frame(self, prepared):
        assert prepared.pixels.shape == (1, 3, S, S)
        self.calls["encode_image"] += 1
        self.frame += 1
        emb = torch.zeros(1, C, S // 16, S // 16)
        emb[:, FRAME] = self.frame
        return emb

    def encode_text(self, texts):
        self.calls["encode_text"] += 1
        (text,) = texts
        words = torch.zeros(1, 2, C)
        words[..., ID] = float(text.split()[-1])
        words[..., TEXT] = 1.0
        return TextFeatures(words, torch.zeros(1, 2, dtype=torch.bool), words.mean(1))

    def encode_masks(self, frames, prepared, masks):
        (embedding,) = frames  # the session encodes a frame's masks together, on that frame's encoding
        assert masks.dim() == 3 and masks.shape[1:] == (S, S) and prepared[0].unit.shape[1:] == (3, S, S)
        self.calls["encode_mask_reference"] += 1
        tokens = torch.zeros(masks.shape[0], 1, C)
        for r in range(masks.shape[0]):
            frame = int(embedding[0, FRAME, 0, 0])
            area = float(masks[r].sum())
            obj = self._identify(masks[r], frame) if area else 0
            tokens[r, 0, ID], tokens[r, 0, FRAME], tokens[r, 0, AREA] = obj, frame, area
            self.mask_refs[self.frame].append((frame, obj, area))
        return MaskReference([ReferenceTokens(tokens, tokens.clone())], tokens[:, 0].clone())

    def decode_objects(self, frame_emb, prepared, objects, *, task, tracking=False, prompts=None):
        assert task == "video" and tracking and prompts is None
        self.calls["segment"] += 1
        frame = int(frame_emb[0, FRAME, 0, 0])
        assert frame == self.frame, "the query encoding must be the current frame's"
        rows, logits, scores = [], [], []
        for i, o in enumerate(objects):
            mask_refs = [(int(ref.levels[0].keys[0, 0, FRAME]), int(ref.levels[0].keys[0, 0, ID])) for ref in o.masks]
            text = None if o.text is None else int(o.text.words[0][~o.text.padding_mask[0]][0, ID])
            ids = {k for _, k in mask_refs if k} | ({text} if text else set())
            assert len(ids) == 1, f"object {i} of frame {frame} mixes references of objects {ids} ({mask_refs}, {text})"
            (obj,) = ids
            rows.append({"obj": obj, "mask_refs": mask_refs, "text": text})
            logits.append(self._low_res(self.logits(obj, frame)))
            scores.append(self.score(obj, frame))
        self.rows[self.frame].append(rows)
        return Decoded(torch.stack(logits), torch.tensor(scores, dtype=torch.float32))

    def postprocess(self, decoded, prepared, task):
        full = self.transform.postprocess(decoded.logits, prepared.input_size, prepared.original_size)[:, 0]
        return MaskResult(full.sigmoid(), full > 0, full)

    # helpers
    def _identify(self, mask, frame):
        """The ground-truth object that a reference mask (SAM input resolution) shows."""
        label = self.gt(frame)
        overlap = {k: float((mask * self._at_input(label, k)).sum()) for k in np.unique(label) if k}
        best = max(overlap, key=overlap.get, default=0)
        assert best and (overlap[best] > 0.5 * float(mask.sum()) or not self.strict), f"frame {frame}: no object"
        return int(best)

    def _at_input(self, label, k):
        key = (id(label), int(k))
        if key not in self._cache:
            self._cache[key] = (label, self.transform.mask(label == k)[0])  # keeps `label` alive: ids stay unique
        return self._cache[key][1]

    def _low_res(self, logit_map):
        """A working-size logit map -> SAM's low-res ``[1, S/4, S/4]`` logits (resize, pad, pool)."""
        x = torch.as_tensor(np.asarray(logit_map, dtype=np.float32))[None, None]
        h, w = self.transform.input_size(x.shape[-2:])
        x = F.pad(F.interpolate(x, size=(h, w), mode="nearest"), (0, S - w, 0, S - h), value=-BIG)
        return F.avg_pool2d(x, 4)[0]


def blank_frames(n, size=(64, 64)):
    return [np.full((*size, 3), 100 + t, np.uint8) for t in range(n)]


# ------------------------------------------------------------------ bookkeeping with the oracle
def test_late_object_joins_ids_are_stable_and_a_leaving_object_is_empty(late_video):
    frames, labels = late_video
    given = {0: {1: labels[0] == 1}, 5: {2: labels[5] == 2}}

    def logits(k, t):  # once object 2 has left, its logits claim the whole frame: only its score rules it out
        return np.full(labels[t].shape, BIG) if k == 2 and t >= 9 else np.where(labels[t] == k, BIG, -BIG)

    net = OracleNet(lambda t: labels[t], logits=logits)
    session = VideoSession(net, sigma=0.4)
    results = list(session.run(frames, new_objects=given))

    assert [r.index for r in results] == list(range(12))
    for t, r in enumerate(results):
        ids = {1} if t < 5 else {1, 2}
        assert set(r.masks) == ids and set(r.scores) == ids, t  # absent before it is given, then stable
        assert r.label_map.dtype == np.uint8 and r.label_map.shape == (64, 64)
        np.testing.assert_array_equal(r.label_map, labels[t])  # follows the ground truth, ids never swap
        for k in ids:
            assert r.masks[k].dtype == bool and r.masks[k].shape == (64, 64)
            np.testing.assert_array_equal(r.masks[k], r.label_map == k)
    np.testing.assert_array_equal(results[5].masks[2], given[5][2])  # joins with exactly the given mask
    assert results[0].scores == {1: 1.0} and results[5].scores[2] == 1.0
    for t in (9, 10, 11):  # gone: low score -> empty mask, though its logits cover the frame
        assert results[t].scores[2] < 0.4 and not results[t].masks[2].any()
        assert results[t].masks[1].any()

    # each row got its own object's references: first reference (frame given) + previous frame
    assert net.rows[0] == [] and net.rows[5] == [[{"obj": 1, "mask_refs": [(0, 1), (4, 1)], "text": None}]]
    for t in range(1, 12):
        (rows,) = net.rows[t]
        by_obj = {row["obj"]: row["mask_refs"] for row in rows}
        assert by_obj[1] == [(0, 1), (t - 1, 1)]
        if t > 5:
            assert by_obj[2] == [(5, 2), (t - 1, 2 if t - 1 < 9 else 0)]  # an empty previous mask shows nothing
    assert net.calls["encode_image"] == 12


def test_run_continues_a_stream_and_new_objects_use_the_session_frame_index(late_video):
    frames, labels = late_video
    session = VideoSession(OracleNet(lambda t: labels[t]))
    first = list(session.run(frames[:3], new_objects={0: {1: labels[0] == 1}}))
    rest = list(session.run(iter(frames[3:8]), new_objects={5: {2: labels[5] == 2}}))  # any iterable
    assert [r.index for r in first + rest] == list(range(8))
    assert [sorted(r.masks) for r in rest] == [[1], [1], [1, 2], [1, 2], [1, 2]]
    np.testing.assert_array_equal(rest[2].masks[2], labels[5] == 2)


def test_soft_aggregation_and_score_gate():
    """background = prod(1 - p_i), argmax over [background, p_1, p_2]; score <= sigma zeroes a mask."""
    size = (64, 64)
    left = np.zeros(size, bool)
    left[:, :32] = True
    cases = {  # frame -> (p1, p2, score1, expected label map)
        1: (0.6, 0.7, 0.9, np.full(size, 2)),
        2: (0.4, 0.35, 0.9, np.full(size, 1)),  # bg 0.6 * 0.65 = 0.39 < 0.4: object 1 wins below 0.5
        3: (0.35, 0.3, 0.9, np.full(size, 0)),  # bg 0.65 * 0.7 = 0.455 beats both
        4: (0.9, 0.6, 0.3, np.full(size, 2)),  # object 1's score is under sigma: its p = 0.9 is ignored
        5: (np.where(left, 0.9, 0.1), 0.5, 0.9, np.where(left, 1, 2)),  # right: bg 0.9 * 0.5 = 0.45 < 0.5
    }

    def logits(k, t):
        p = np.broadcast_to(np.asarray(cases[t][k - 1], dtype=np.float64), size)
        return np.log(p / (1 - p))

    net = OracleNet(lambda t: np.zeros(size, np.uint8), score=lambda k, t: cases[t][2] if k == 1 else 0.9, logits=logits)
    net._identify = lambda mask, frame: 1 if frame == 0 and mask[0, 0] else 2 if frame == 0 else 0
    session = VideoSession(net, sigma=0.4)
    first = {1: left, 2: ~left}
    results = list(session.run(blank_frames(6, size), new_objects={0: first}))
    for t, (_, _, _, expected) in cases.items():
        r = results[t]
        np.testing.assert_array_equal(r.label_map, expected.astype(np.uint8), err_msg=f"frame {t}")
        for k in (1, 2):
            np.testing.assert_array_equal(r.masks[k], expected == k)
    assert not results[4].masks[1].any() and results[4].scores[1] == pytest.approx(0.3)


def test_given_masks_are_output_exactly_even_where_predictions_overlap(late_video):
    frames, labels = late_video
    net = OracleNet(lambda t: labels[t], logits=lambda k, t: np.full(labels[t].shape, BIG), strict=False)  # all
    session = VideoSession(net, sigma=0.4)
    m2 = labels[5] == 2
    results = list(session.run(frames[:7], new_objects={0: {1: labels[0] == 1}, 5: {2: m2}}))
    np.testing.assert_array_equal(results[5].masks[2], m2)  # p1 ~ 1 everywhere does not eat the given mask
    np.testing.assert_array_equal(results[5].masks[1], ~m2)


def test_max_short_side_infers_downscaled_and_returns_original_size():
    frames, labels = make_video(size=(96, 128), n_frames=6, birth=(0, 2))
    work = [F.interpolate(torch.as_tensor(lab)[None, None].float(), size=(48, 64), mode="nearest")[0, 0]
            .numpy().astype(np.uint8) for lab in labels]
    net = OracleNet(lambda t: work[t])
    session = VideoSession(net, sigma=0.4, max_short_side=48)
    results = list(session.run(frames, new_objects={0: {1: labels[0] == 1}, 2: {2: labels[2] == 2}}))
    assert net.transform.image_sizes == [(48, 64)] * 6  # the network saw the downscaled frames
    for t, r in enumerate(results):
        assert r.label_map.shape == (96, 128) and r.label_map.dtype == np.uint8
        for k, m in r.masks.items():
            assert m.shape == (96, 128)
            truth = labels[t] == k
            assert (m & truth).sum() / (m | truth).sum() > 0.8, (t, k)  # nearest-upscaled oracle masks
    np.testing.assert_array_equal(results[0].masks[1], labels[0] == 1)  # given masks: exact, full size
    np.testing.assert_array_equal(results[2].masks[2], labels[2] == 2)


def test_rvos_language_only_until_a_confident_frame_then_it_is_the_first_reference():
    frames, labels = make_video(n_frames=7, birth=(0, 0))
    found = 3  # language-only predictions score under sigma before this frame

    net = OracleNet(lambda t: labels[t], score=lambda k, t: 0.9 if k == 2 or t >= found else 0.1)
    session = VideoSession(net, sigma="rvos")
    session.add_text_object(1, "object 1")  # RVOS object, tracked in the same batch as a VOS object
    results = list(session.run(frames, new_objects={0: {2: labels[0] == 2}}))

    assert net.calls["encode_text"] == 1
    for t, r in enumerate(results):
        assert set(r.masks) == {1, 2}
        if t < found:
            assert not r.masks[1].any() and r.scores[1] == pytest.approx(0.1)
        else:
            np.testing.assert_array_equal(r.masks[1], labels[t] == 1)
        (call,) = net.rows[t]  # one batch per frame: the text object with the mask object
        row = {row["obj"]: row for row in call}[1]
        if t <= found:  # language only
            assert row["mask_refs"] == [] and row["text"] == 1
        else:  # the first confident frame + the previous frame, and the sentence
            assert row["mask_refs"] == [(found, 1), (t - 1, 1)] and row["text"] == 1
    # the confident prediction on frame `found` was encoded as object 1's first reference, on that frame
    assert [(f, k) for f, k, _ in net.mask_refs[found] if k == 1] == [(found, 1)]
    assert not any(k == 1 for t in range(found) for _, k, _ in net.mask_refs[t])


def test_one_batched_segment_per_frame_and_one_image_encode(late_video):
    frames, labels = late_video
    net = OracleNet(lambda t: labels[t])
    session = VideoSession(net)
    results = list(session.run(frames, new_objects={0: {1: labels[0] == 1}, 5: {2: labels[5] == 2}}))
    assert len(results) == 12 and net.calls["encode_image"] == 12
    for t in range(12):
        tracked = 0 if t == 0 else 1 if t <= 5 else 2
        assert len(net.rows[t]) == min(tracked, 1) and (not tracked or len(net.rows[t][0]) == tracked)


# ------------------------------------------------------------------ constant state
def _state_tensors(obj, seen=None):
    """Every tensor / array reachable from the session's state (not the model), by identity."""
    seen = {} if seen is None else seen
    if isinstance(obj, (torch.Tensor, np.ndarray)):
        seen[id(obj)] = obj
    elif isinstance(obj, dict):
        for v in obj.values():
            _state_tensors(v, seen)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            _state_tensors(v, seen)
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        for f in dataclasses.fields(obj):
            _state_tensors(getattr(obj, f.name), seen)
    return seen


def _footprint(session):
    state = {k: v for k, v in vars(session).items() if k not in ("model", "transform")}
    found = _state_tensors(state)
    nbytes = sum(t.numel() * t.element_size() if isinstance(t, torch.Tensor) else t.nbytes for t in found.values())
    return len(found), nbytes


def test_session_state_does_not_grow_with_frames(late_video):
    frames, labels = late_video
    net = OracleNet(lambda t: labels[t % 5])  # loop the first five frames (object 1 only)
    session = VideoSession(net)
    session.add_text_object(3, "object 1")  # an RVOS object too
    session.add_object(1, labels[0] == 1)
    footprints = {}
    for t in range(100):
        session.step(frames[t % 5])
        if t + 1 in (30, 100):
            footprints[t + 1] = _footprint(session)
    assert session.frame_index == 99
    assert footprints[30] == footprints[100] and footprints[30][0] > 0
    assert session._prev is not None and set(session.objects) == {1, 3}


# ------------------------------------------------------------------ bad input
def test_frame_of_another_size_names_both_sizes():
    session = VideoSession(OracleNet(lambda t: np.zeros((64, 64), np.uint8)))
    session.step(blank_frames(1)[0])
    with pytest.raises(ValueError, match=r"\(48, 80\).*\(64, 64\)"):
        session.step(np.zeros((48, 80, 3), np.uint8))
    assert session.frame_index == 0


def test_empty_iterable_gives_no_results():
    session = VideoSession(OracleNet(lambda t: np.zeros((64, 64), np.uint8)))
    assert list(session.run([])) == [] and list(session.run(iter(()))) == []
    assert session.frame_index == -1


def test_mask_of_the_wrong_size_names_both_shapes_and_leaves_the_session_intact():
    frames, labels = make_video(n_frames=3, birth=(0, 0))
    net = OracleNet(lambda t: labels[t])
    session = VideoSession(net)
    session.add_object(1, labels[0] == 1)
    session.add_object(2, np.zeros((32, 48), bool))
    with pytest.raises(ValueError, match=r"object 2.*\(32, 48\).*\(64, 64\)"):
        session.step(frames[0])
    assert session.frame_index == -1 and net.calls["encode_image"] == 0
    session.add_object(2, labels[0] == 2)  # corrected: the session goes on from frame 0
    r = session.step(frames[0])
    assert r.index == 0 and set(r.masks) == {1, 2}
    np.testing.assert_array_equal(r.masks[1], labels[0] == 1)


@pytest.mark.parametrize("obj_id", [0, 256, -1, True, 1.0, "1"])
def test_bad_object_ids(obj_id):
    session = VideoSession(OracleNet(lambda t: np.zeros((64, 64), np.uint8)))
    with pytest.raises(ValueError, match=r"\[1, 255\]"):
        session.add_object(obj_id, np.zeros((64, 64), bool))
    with pytest.raises(ValueError, match=r"\[1, 255\]"):
        session.add_text_object(obj_id, "object 1")
    assert session.objects == {}


def test_sigma_presets():
    assert resolve_sigma("davis") == 0.3 and resolve_sigma("lvos") == 0.5 and resolve_sigma(0.25) == 0.25
    assert SIGMA_PRESETS["youtube_vos"] == SIGMA_PRESETS["mose"] == 0.4
    with pytest.raises(ValueError, match="unknown sigma preset 'davis17'.*youtube_vos"):
        VideoSession(OracleNet(lambda t: None), sigma="davis17")
    with pytest.raises(TypeError):
        resolve_sigma(None)


# ------------------------------------------------------------------ the real tiny SAM
@pytest.fixture(scope="module")
def tiny(tiny_sam_factory):
    return tiny_sam_factory("meta")


@pytest.fixture(scope="module")
def short_video():
    return make_video(n_frames=4, birth=(0, 0), index=1)


def test_track_end_to_end_vos_and_rvos(tiny, short_video):
    frames, labels = short_video
    m1, m2 = labels[0] == 1, labels[0] == 2
    results = list(tiny.track(frames, masks={1: m1, 2: m2}))
    assert [r.index for r in results] == [0, 1, 2, 3]
    for r in results:
        assert set(r.masks) == {1, 2} and set(r.scores) == {1, 2}
        assert r.label_map.shape == (64, 64) and r.label_map.dtype == np.uint8
        assert all(m.shape == (64, 64) and m.dtype == bool for m in r.masks.values())
        assert all(np.isfinite(s) for s in r.scores.values())
    np.testing.assert_array_equal(results[0].masks[1], m1)
    np.testing.assert_array_equal(results[0].masks[2], m2)
    assert results[0].scores == {1: 1.0, 2: 1.0}

    results = list(tiny.track(frames, text="the shape moving right"))
    assert len(results) == 4
    for r in results:
        assert set(r.masks) == {1} and r.masks[1].shape == (64, 64) and np.isfinite(r.scores[1])


def test_track_counts_one_segment_per_frame_and_one_image_encode(tiny, monkeypatch):
    frames, labels = make_video(n_frames=4, birth=(0, 2), index=2)
    calls = defaultdict(list)

    def spy(name):
        real = getattr(tiny, name)

        def wrapper(*args, **kwargs):
            calls[name].append(args[0].shape[0])  # batch size of the first argument
            return real(*args, **kwargs)

        monkeypatch.setattr(tiny, name, wrapper)

    for name in ("encode_image", "segment", "encode_mask_reference"):  # the SAM stages behind the interface
        spy(name)
    for r in tiny.track(frames, masks={1: labels[0] == 1}, new_objects={2: {2: labels[2] == 2}}):
        # one batched forward per frame (none on frame 0: only a given mask, nothing to decode) and one
        # image encode per frame: reference frames are never re-encoded
        assert len(calls["segment"]) == r.index and len(calls["encode_image"]) == r.index + 1
    assert calls["segment"] == [1, 1, 2]  # batch = objects tracked (object 2 was given on frame 2)
    assert calls["encode_image"] == [1, 1, 1, 1]
    # given masks (frame 0: object 1, frame 2: object 2) and one batch of previous-frame references per frame
    assert calls["encode_mask_reference"] == [1, 1, 1, 1, 2]


def test_track_runs_in_eval_mode_and_restores_modes(tiny, short_video):
    frames, labels = short_video
    bn = [m for m in tiny.mask_encoder.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    before = [b.running_mean.clone() for b in bn]
    tiny.train()
    modes = {name: m.training for name, m in tiny.named_modules()}
    both = list(tiny.track(frames[:3], masks={1: labels[0] == 1, 2: labels[0] == 2}))
    alone = list(tiny.track(frames[:3], masks={1: labels[0] == 1}))
    assert {name: m.training for name, m in tiny.named_modules()} == modes
    assert all(torch.equal(a, b.running_mean) for a, b in zip(before, bn))  # no statistics updated
    for a, b in zip(alone, both):  # an object's result does not depend on the other objects of its batch
        assert a.scores[1] == pytest.approx(b.scores[1], abs=1e-5)
    runs = [[r.scores[1] for r in tiny.track(frames[:2], text="the shape moving right")] for _ in range(2)]
    assert runs[0] == runs[1]  # no dropout in the text encoder
    assert tiny.training and tiny.text_encoder.training
    tiny.eval()


def test_track_with_bad_sigma_and_empty_frames(tiny):
    with pytest.raises(ValueError, match="unknown sigma preset"):
        next(tiny.track([np.zeros((64, 64, 3), np.uint8)], masks={1: np.ones((64, 64), bool)}, sigma="nope"))
    assert list(tiny.track([], masks={1: np.ones((64, 64), bool)})) == []
    with pytest.raises(ValueError, match=r"\[1, 255\]"):
        next(tiny.track([np.zeros((64, 64, 3), np.uint8)], masks={256: np.ones((64, 64), bool)}))


def test_keep_last_seen_keeps_an_invisible_objects_last_reference_and_its_frame(late_video):
    """The full UniRef++ model's rule (the authors' loop): an object whose mask comes out empty keeps its
    last non-empty previous reference, encoded on the frame it was seen on."""
    frames, labels = late_video
    net = OracleNet(lambda t: labels[t])
    session = VideoSession(net, sigma=0.4, keep_last_seen=True)
    assert not VideoSession(net).keep_last_seen  # the default follows the model (this stub: no attribute)
    list(session.run(frames, new_objects={0: {1: labels[0] == 1}, 5: {2: labels[5] == 2}}))
    for t in range(6, 12):
        (rows,) = net.rows[t]
        by_obj = {row["obj"]: row["mask_refs"] for row in rows}
        assert by_obj[1] == [(0, 1), (t - 1, 1)]
        assert by_obj[2] == [(5, 2), (min(t - 1, 8), 2)]  # gone from frame 9 on: frame 8's mask stays
    net.keep_last_seen = True
    assert VideoSession(net).keep_last_seen


def test_embedding_cache_bounds_frames_by_count_and_by_bytes():
    from unifusion_sam.inference import EmbeddingCache
    from unifusion_sam.interface import PreparedImage

    def entry(i):  # what the predictor caches: (prepared image, frame features); 1 KiB + 512 B of tensors
        return PreparedImage(torch.full((1, 1, 16, 16), float(i)), (16, 16), (16, 16)), [torch.zeros(128)]

    cache = EmbeddingCache(capacity=10, max_bytes=3 * 1536)
    for i in range(5):
        cache.put(f"k{i}", entry(i))
    assert len(cache) == 3 and cache.bytes == 3 * 1536
    assert cache.get("k0") is None and cache.get("k1") is None  # the oldest went first
    assert cache.get("k2")[0].pixels[0, 0, 0, 0] == 2 and (cache.hits, cache.misses) == (1, 2)
    cache.put("k5", entry(5))  # k2 was just used: k3 goes
    assert cache.get("k3") is None and cache.get("k2") is not None
    cache.put("k2", entry(7))  # replacing an entry does not count its bytes twice
    assert cache.bytes == 3 * 1536 and cache.get("k2")[0].pixels[0, 0, 0, 0] == 7
    by_count = EmbeddingCache(capacity=2)
    for i in range(4):
        by_count.put(f"k{i}", entry(i))
    assert len(by_count) == 2 and by_count.get("k3") is not None
    tiny_budget = EmbeddingCache(capacity=4, max_bytes=100)  # an entry larger than the budget is not kept
    tiny_budget.put("big", entry(0))
    assert len(tiny_budget) == 0 and tiny_budget.bytes == 0
    cache.clear()
    with cache.holding(5):  # room for more entries inside the block; trimmed to the old capacity after
        for i in range(5):
            cache.put(f"h{i}", (torch.zeros(1),))
        assert len(cache) == 5 and cache.capacity == 10
    cache.resize(2)
    assert len(cache) == 2 and cache.get("h4") is not None and cache.bytes == 2 * 4
    with cache.holding(6):
        for i in range(6):
            cache.put(f"g{i}", (torch.zeros(1),))
        assert len(cache) == 6
    assert cache.capacity == 2 and len(cache) == 2 and cache.get("g5") is not None
    cache.clear()
    assert len(cache) == 0 and cache.bytes == 0
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="capacity"):
            EmbeddingCache(capacity=bad)
    with pytest.raises(ValueError, match="max_bytes"):
        EmbeddingCache(capacity=1, max_bytes=-5)


@pytest.mark.parametrize("max_short_side", [None, 40])
def test_independent_objects_track_as_if_alone(tiny, short_video, max_short_side):
    """Two sentences tracked together with ``independent=True`` give, per object, what a session of
    that sentence alone gives (masks may overlap), also when frames are tracked at a smaller working
    size; the default session makes them compete."""
    frames, _ = short_video
    assert max_short_side is None or min(frames[0].shape[:2]) > max_short_side
    sentences = {1: "the shape moving right", 2: "the big red circle"}
    together = list(tiny.track(frames, text=sentences, sigma=-1.0, independent=True, max_short_side=max_short_side))
    for k, sentence in sentences.items():
        alone = list(tiny.track(frames, text=sentence, sigma=-1.0, max_short_side=max_short_side))
        for a, b in zip(alone, together):
            assert abs(a.scores[1] - b.scores[k]) < 1e-4
            assert (a.masks[1] != b.masks[k]).mean() < 0.005
    assert any(r.masks[1].any() for r in together)
    competing = list(tiny.track(frames, text=sentences, sigma=-1.0))
    assert not any((r.masks[1] & r.masks[2]).any() for r in competing)
    with pytest.raises(TypeError, match="independent"):
        VideoSession(tiny, independent="yes")


def test_set_previous_mask_replaces_only_the_previous_reference(late_video):
    """``set_previous_mask`` (a correction that does not re-anchor, or teacher forcing): the next frame's
    previous reference is the mask given, on the frame just processed; the first reference and the frame's
    returned masks are untouched."""
    frames, labels = late_video
    # object 1 comes out empty on frame 1, so without the call its previous reference on frame 2 is empty
    net = OracleNet(lambda t: labels[t], logits=lambda k, t: np.full(labels[t].shape, -BIG) if t == 1
                    else np.where(labels[t] == k, BIG, -BIG))
    session = VideoSession(net, sigma=0.4)
    session.add_object(1, labels[0] == 1)
    with pytest.raises(ValueError, match="step"):
        session.set_previous_mask(1, labels[0] == 1)
    with pytest.raises(ValueError, match="unknown object 2"):
        session.set_previous_mask(2, labels[0] == 2)
    session.step(frames[0])
    result = session.step(frames[1])
    assert not result.masks[1].any()
    with pytest.raises(ValueError, match="mask of object 1"):
        session.set_previous_mask(1, np.ones((8, 8), bool))
    session.set_previous_mask(1, labels[1] == 1)
    assert not result.masks[1].any()  # the returned frame is not rewritten
    session.step(frames[2])
    (rows,) = net.rows[2]
    assert rows[0]["mask_refs"] == [(0, 1), (1, 1)]  # first reference kept, previous = the given mask on frame 1
    area = float(net._at_input(labels[1], 1).sum())
    assert net.mask_refs[2][-1] == (1, 1, area)
    # without the call the previous reference would have been the empty prediction
    net2 = OracleNet(lambda t: labels[t], logits=net.logits)
    plain = VideoSession(net2, sigma=0.4)
    list(plain.run(frames[:3], new_objects={0: {1: labels[0] == 1}}))
    assert net2.rows[2][0][0]["mask_refs"] == [(0, 1), (1, 0)]
    # an object waiting for its given mask follows none yet; a pending mask replaces the references anyway
    session.add_object(3, labels[2] == 1)
    with pytest.raises(ValueError, match="given for the next frame"):
        session.set_previous_mask(3, labels[2] == 1)
    session.add_text_object(4, "object 2")  # a sentence before a confident frame: no mask to follow yet
    with pytest.raises(ValueError, match="follows no mask"):
        session.set_previous_mask(4, labels[2] == 1)


def test_soft_aggregation_by_hand():
    """background = prod(1 - p_i); each pixel takes the first largest of [background, p_1, ...]: a tie goes to
    the background, then to the lower id; labels are the object ids; the map is resized nearest-neighbour."""
    from unifusion_sam.inference.tracking import aggregate

    p3 = torch.tensor([[0.9, 0.2, 0.5, 0.0]])
    p7 = torch.tensor([[0.1, 0.7, 0.5, 0.0]])
    # background: 0.09, 0.24, 0.25, 1.0 -> 3, 7, 3 (0.5 == 0.5: the lower id), 0
    assert aggregate({7: p7, 3: p3}, (1, 4)).tolist() == [[3, 7, 3, 0]]
    # one object at 0.5: background 0.5 ties it and wins
    assert aggregate({5: torch.tensor([[0.5, 0.6]])}, (1, 2)).tolist() == [[0, 5]]
    assert aggregate({3: p3, 7: p7}, (2, 8)).tolist() == [[3, 3, 7, 7, 3, 3, 0, 0]] * 2
    assert aggregate({}, (2, 3)).tolist() == [[0, 0, 0]] * 2

"""Fuzzing ``model.track`` and :class:`~unifusion_sam.inference.VideoSession` (the tiny SAM): frames of every
kind and size, masks that do not match their frames, object ids of every kind, ``new_objects`` keyed by
anything (a new object at a negative frame index used to be accepted silently), sentences, examples and the
session's own arguments; random sequences of session calls. The rule of :mod:`fuzzing` applies; valid input
must give one result per frame with masks at the frame size."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from fuzzing import Quiet, counted, ok_or_refused, refused, too_thin_for_sam
from hypothesis import example, given
from hypothesis import strategies as st
from strategies import (
    ANY_VALUE,
    KEYS,
    NOT_ARRAYS,
    SENTENCES,
    arrays,
    image_is_valid,
    mask_is_valid,
    masks_for,
    sentence_is_valid,
)

from unifusion_sam.inference import VideoSession

H, W = 16, 20
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model(tiny_sam_factory):
    return Quiet(tiny_sam_factory("meta"), "tiny-sam")


def frames(n: int = 2, size=(H, W)) -> list[np.ndarray]:
    rng = np.random.default_rng(n)
    return [rng.integers(0, 256, (*size, 3), dtype=np.uint8) for _ in range(n)]


def square(size=(H, W)) -> np.ndarray:
    m = np.zeros(size, bool)
    m[2:8, 3:9] = True
    return m


def id_is_valid(obj_id) -> bool:
    return not isinstance(obj_id, bool) and isinstance(obj_id, (int, np.integer)) and 1 <= int(obj_id) <= 255


def check_results(results, n: int, size=(H, W)) -> None:
    assert len(results) == n
    for r in results:
        assert r.label_map.shape == tuple(size)
        assert all(m.shape == tuple(size) and m.dtype == bool for m in r.masks.values())
        assert all(np.isfinite(s) for s in r.scores.values())


def run_track(model, video, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return list(model.track(video, **kwargs))


# ------------------------------------------------------------------ frames and masks
@given(video=st.lists(st.one_of(arrays(20), st.sampled_from(frames(3)), NOT_ARRAYS), min_size=0, max_size=3),
       data=st.data())
@counted("track")
def test_track_frames(model, video, data):
    first = video[0] if video and isinstance(video[0], np.ndarray) and video[0].ndim >= 2 else np.zeros((H, W, 3))
    mask = data.draw(masks_for(first.shape[:2]), label="mask")
    results = ok_or_refused(run_track, model, video, masks={1: mask}, needles=["frame", "mask of object 1", "thin"],
                            what="track(frames)")
    valid = all(image_is_valid(f) and f.shape[:2] == video[0].shape[:2] for f in video)
    valid = valid and not (video and (too_thin_for_sam(video[0].shape[:2]) or not mask_is_valid(mask, first.shape[:2])))
    assert (results is not None) == valid, f"frames {[getattr(f, 'shape', f) for f in video]}: valid={valid}"
    if results is not None:
        check_results(results, len(video), first.shape[:2])


@given(masks=st.dictionaries(KEYS, st.one_of(masks_for((H, W)), NOT_ARRAYS), max_size=3),
       texts=st.one_of(st.none(), SENTENCES, NOT_ARRAYS, st.dictionaries(KEYS, SENTENCES, max_size=2)))
@example(masks={0: square()}, texts=None)
@example(masks={256: square()}, texts=None)
@example(masks={True: square()}, texts=None)
@example(masks={1: square()}, texts={1.0: "a dog"})
@counted("track")
def test_track_object_ids_and_sentences(model, masks, texts):
    results = ok_or_refused(run_track, model, frames(2), masks=masks, text=texts,
                            needles=["object", "text", "mask", "track needs"], what="track(ids)")
    if results is not None:
        check_results(results, 2)
        ids = set(masks) | (set(texts) if isinstance(texts, dict) else {1} if texts is not None else set())
        assert all(id_is_valid(k) for k in ids), f"object ids {ids} were accepted"
        assert all(sentence_is_valid(t) for t in (texts.values() if isinstance(texts, dict) else [texts] if texts
                                                   is not None else []))
        assert set(results[-1].masks) == {int(k) for k in ids}


@given(index=KEYS, obj_id=KEYS, reference=st.one_of(st.just(square()), SENTENCES, NOT_ARRAYS))
@example(index=-1, obj_id=1, reference=square())  # the known bug: a new object at a negative frame index
@example(index=-3, obj_id=2, reference="a dog")
@example(index=1.0, obj_id=2, reference=square())
@example(index=np.int64(1), obj_id=2, reference=square())
@example(index=True, obj_id=2, reference=square())
@counted("track")
def test_track_new_objects(model, index, obj_id, reference):
    new = {index: {obj_id: reference}}
    valid_index = not isinstance(index, bool) and isinstance(index, (int, np.integer)) and index >= 0
    results = ok_or_refused(run_track, model, frames(2), masks={3: square()}, new_objects=new,
                            needles=["new_objects", "object", "reference", "text", "mask"], what="track(new_objects)")
    if results is not None:
        assert valid_index and id_is_valid(obj_id), f"new_objects {new!r} was accepted"
        check_results(results, 2)
        if index <= 1:
            assert int(obj_id) in results[-1].masks
    if not valid_index:
        refused(VideoSession(model).run(frames(1), new).__next__, needles=["new_objects", repr(index)],
                what="VideoSession.run(new_objects)")


@given(new_objects=st.one_of(ANY_VALUE, st.dictionaries(st.integers(0, 3), ANY_VALUE, max_size=2),
                             st.lists(st.integers(), max_size=2)),
       examples=st.one_of(st.none(), ANY_VALUE, st.dictionaries(st.integers(1, 3), st.one_of(
           ANY_VALUE, st.lists(st.tuples(st.sampled_from(frames(1)), masks_for((H, W))), max_size=2)), max_size=2)))
@example(new_objects=None, examples=[1])  # regression: "cannot convert dictionary update sequence element #0"
@counted("track")
def test_track_containers(model, new_objects, examples):
    results = ok_or_refused(run_track, model, frames(2), masks={5: square()}, new_objects=new_objects,
                            examples=examples, needles=["new_objects", "object", "example", "reference"],
                            what="track(containers)")
    if results is not None:
        check_results(results, 2)


@given(sigma=st.one_of(ANY_VALUE, st.sampled_from(["davis", "lvos", "nope", ""])), max_short_side=ANY_VALUE,
       mask_refs=st.one_of(ANY_VALUE, st.sampled_from(["first", "previous", "first+previous", "both"])),
       independent=ANY_VALUE)
@example(sigma=float("nan"), max_short_side=None, mask_refs="first", independent=False)  # regression: accepted
@example(sigma=0.4, max_short_side=True, mask_refs="first", independent=False)  # regression: accepted as 1
@counted("track")
def test_track_options(model, sigma, max_short_side, mask_refs, independent):
    results = ok_or_refused(run_track, model, frames(2), masks={1: square()}, sigma=sigma,
                            max_short_side=max_short_side, mask_refs=mask_refs, independent=independent,
                            needles=["sigma", "max_short_side", "mask_refs", "independent"], what="track(options)")
    if results is not None:
        check_results(results, 2)
        assert sigma is None or isinstance(sigma, str) or sigma == sigma, "sigma NaN was accepted"
        assert max_short_side is None or (type(max_short_side) is int and max_short_side > 0)


# ------------------------------------------------------------------ a session driven by random calls
OPS = st.one_of(
    st.tuples(st.just("add_object"), ANY_VALUE, st.one_of(masks_for((H, W)), NOT_ARRAYS)),
    st.tuples(st.just("add_text_object"), ANY_VALUE, st.one_of(SENTENCES, NOT_ARRAYS)),
    st.tuples(st.just("add"), ANY_VALUE, st.one_of(masks_for((H, W)), SENTENCES, NOT_ARRAYS)),
    st.tuples(st.just("step"), st.one_of(st.sampled_from(frames(2)), arrays(20), NOT_ARRAYS)),
    st.tuples(st.just("correct"), ANY_VALUE, st.one_of(masks_for((H, W)), NOT_ARRAYS)),
    st.tuples(st.just("correct_points"), ANY_VALUE, st.one_of(arrays(3), st.just([[3.0, 4.0]])), ANY_VALUE),
    st.tuples(st.just("set_previous_mask"), ANY_VALUE, st.one_of(masks_for((H, W)), NOT_ARRAYS)),
    st.tuples(st.just("remove_object"), ANY_VALUE),
)


@given(ops=st.lists(OPS, min_size=1, max_size=6))
@example(ops=[("add_object", 1, None), ("step", frames(2)[0])])  # regression: an object with no mask was accepted
@example(ops=[("add_object", 1, square()), ("remove_object", [1])])  # regression: "unhashable type: 'list'"
@example(ops=[("step", frames(2)[0]), ("add_object", 1, square((H + 1, W)))])  # refused now, not on the next step
@counted("VideoSession")
def test_session_random_calls(model, ops):
    session = VideoSession(Quiet(model.__dict__["_obj"], "tiny-sam"), sigma=0.0)
    steps = 0
    for op, *args in ops:
        if op == "correct_points":
            obj_id, points, labels = args
            result = ok_or_refused(session.correct, obj_id, points=points, labels=labels,
                                   needles=["object", "point", "label", "correct", "step"], what="correct(points)")
        elif op == "correct":
            result = ok_or_refused(session.correct, args[0], mask=args[1],
                                   needles=["object", "mask", "correct", "step"], what="correct(mask)")
        else:
            result = ok_or_refused(getattr(session, op), *args, needles=["object", "mask", "text", "frame", "image",
                                                                        "reference", "step", "thin"], what=op)
        if op == "step" and result is not None:
            steps += 1
            assert result.index == steps - 1 and result.label_map.shape == (H, W)
            assert all(m.shape == (H, W) for m in result.masks.values())
    assert session.frame_index == steps - 1


# ------------------------------------------------------------------ regressions kept as plain tests
@pytest.mark.parametrize("index", [-1, -5, 1.5, "0", True, None])
def test_new_object_at_a_bad_frame_index_is_refused(model, index):
    """The issue's known bug: a new object given at a negative frame index was accepted silently."""
    new = {index: {2: square()}}
    refused(lambda: list(model.track(frames(2), masks={1: square()}, new_objects=new)),
            needles=["new_objects", repr(index)], what="track")
    refused(lambda: list(VideoSession(model).run(frames(2), new)), needles=["new_objects", repr(index)], what="run")


def test_add_object_refuses_a_missing_or_misfit_mask_when_given(model):
    session = VideoSession(model)
    refused(session.add_object, 1, None, needles=["mask of object 1", "NoneType"])
    refused(session.add_object, 1, "a dog", needles=["mask of object 1", "str"])
    assert session.objects == {}
    session.add_object(1, square())
    session.step(frames(1)[0])
    refused(session.add_object, 2, square((H + 1, W)), needles=["mask of object 2", f"({H + 1}, {W})"])
    assert set(session.objects) == {1}
    refused(session.remove_object, [1], needles=["[1]"])
    assert set(session.objects) == {1}

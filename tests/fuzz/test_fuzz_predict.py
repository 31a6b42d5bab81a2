"""Fuzzing ``model.predict`` / ``set_image`` (the tiny SAM wrapped with the ``sam-tiny`` adapter): images of
every rank, dtype and size, reference masks that do not fit their images, sentences of every kind and
SAM-style prompts with NaN / inf. Valid input must give an ``H x W`` bool mask and a finite score; anything
else must be refused by the rule of :mod:`fuzzing`."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from fuzzing import Quiet, counted, ok_or_refused, refused, too_thin_for_sam
from hypothesis import example, given
from hypothesis import strategies as st
from strategies import (
    ANY_VALUE,
    NOT_ARRAYS,
    SENTENCES,
    arrays,
    image_is_valid,
    image_size,
    mask_is_valid,
    masks_for,
    sentence_is_valid,
    valid_images,
)

POINT = {"point_coords": [[0.0, 0.0]], "point_labels": [1]}

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model(tiny_sam_factory):
    return Quiet(tiny_sam_factory("meta"), "tiny-sam")


def check_prediction(pred, size) -> None:
    assert pred.mask.shape == tuple(size) and pred.mask.dtype == bool
    assert np.isfinite(pred.score)
    assert pred.logits.shape == tuple(size) and np.isfinite(pred.logits).all()


def needles_for_image(x, name: str = "image") -> list:
    out = [name]
    if isinstance(x, np.ndarray):
        out += [str(x.shape), str(x.dtype)]
    return out


@given(image=st.one_of(arrays(), valid_images(), NOT_ARRAYS))
@example(image=np.zeros((1, 3000, 3), np.uint8))  # regression: resized, its shorter side was 0 pixels (PIL's error)
@example(image=np.zeros((600, 1, 3), np.uint8))
@example(image=np.zeros((0, 0, 3), np.uint8))
@counted("predict")
def test_predict_image(model, image):
    if image_is_valid(image) and too_thin_for_sam(image_size(image)):
        refused(model.predict, image, **POINT, needles=["too thin"], what="predict(thin image)")
    elif image_is_valid(image):
        check_prediction(model.predict(image, **POINT), image_size(image))
    else:
        refused(model.predict, image, **POINT, needles=needles_for_image(image), what="predict(image)")


@given(image=valid_images(max_side=32, extreme=False), data=st.data())
@counted("predict")
def test_predict_reference_masks(model, image, data):
    size = image_size(image)
    ref = data.draw(valid_images(max_side=32, extreme=False), label="ref_image")
    mask = data.draw(st.one_of(masks_for(image_size(ref)), masks_for(size), NOT_ARRAYS), label="ref_mask")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # all reference masks empty: documented warning
        if mask_is_valid(mask, image_size(ref)):
            check_prediction(model.predict(image, ref_images=[ref], ref_masks=[mask]), size)
        else:
            shape = str(mask.shape) if isinstance(mask, np.ndarray) else None
            refused(model.predict, image, ref_images=[ref], ref_masks=[mask], needles=["ref_masks[0]", shape],
                    what="predict(ref_masks)")


@given(refs=st.one_of(st.none(), st.lists(st.one_of(valid_images(max_side=16, extreme=False), arrays(8)), max_size=3),
                      NOT_ARRAYS),
       masks=st.one_of(st.none(), st.lists(st.one_of(arrays(8), st.just(np.ones((8, 8), bool))), max_size=3), NOT_ARRAYS))
@example(refs=False, masks=[])  # regression: "'bool' object is not iterable" named no argument
@counted("predict")
def test_predict_reference_lists(model, refs, masks):
    image = np.zeros((8, 8, 3), np.uint8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        pred = ok_or_refused(model.predict, image, ref_images=refs, ref_masks=masks, text="a dog",
                             needles=["ref_", "image", "mask", "text"], what="predict(ref lists)")
    if pred is not None:
        check_prediction(pred, (8, 8))


@given(text=st.one_of(SENTENCES, NOT_ARRAYS, st.lists(st.text(max_size=5), max_size=2)))
@example(text="")
@example(text="\x00")
@example(text="x" * 20000)
@counted("predict")
def test_predict_text(model, text):
    image = np.full((12, 20, 3), 90, np.uint8)
    if sentence_is_valid(text):
        check_prediction(model.predict(image, text=text), (12, 20))
    else:
        refused(model.predict, image, text=text, needles=["text"], what="predict(text)")


COORDS = st.one_of(arrays(4), NOT_ARRAYS, st.lists(st.lists(st.floats(-50, 50) | st.just(np.nan), min_size=2,
                                                             max_size=2), min_size=0, max_size=3))
LABELS = st.one_of(arrays(4), NOT_ARRAYS, st.lists(st.integers(-1, 2), max_size=3), st.lists(ANY_VALUE, max_size=3))
BOXES = st.one_of(st.none(), arrays(4), NOT_ARRAYS, st.lists(st.floats(-50, 50) | st.sampled_from([np.nan, np.inf]),
                                                             min_size=4, max_size=4))


@given(coords=st.one_of(st.none(), COORDS), labels=st.one_of(st.none(), LABELS), box=BOXES)
@example(coords=[[np.inf, 3.0]], labels=[1], box=None)
@example(coords=None, labels=None, box=[0.0, 0.0, np.nan, 5.0])
@example(coords=None, labels=None, box="")  # regression: numpy's "could not convert string to float" named no box
@example(coords=False, labels=[[], [0]], box=None)  # regression: numpy's "inhomogeneous shape" named no labels
@example(coords=[[1.0, 1.0], [2.0, 2.0]], labels=[None, 1], box=None)  # regression: np.unique's TypeError
@example(coords=[[1.0, 1.0]], labels=[1], box={"x": 1})  # regression: float() of a dict
@example(coords=[[1.0 + 2.0j, 1.0]], labels=[1], box=None)  # regression: complex coords were cast with a warning
@counted("predict")
def test_predict_prompts(model, coords, labels, box):
    image = np.full((20, 30, 3), 50, np.uint8)
    pred = ok_or_refused(model.predict, image, point_coords=coords, point_labels=labels, box=box,
                         needles=["point", "box", "nothing to segment", "label"], what="predict(prompts)")
    if pred is not None:
        check_prediction(pred, (20, 30))


@given(image=st.one_of(arrays(), valid_images(), NOT_ARRAYS))
@counted("predict")
def test_set_image_then_predict(model, image):
    model.predictor.reset_image()
    if image_is_valid(image) and too_thin_for_sam(image_size(image)):
        refused(model.set_image, image, needles=["too thin"], what="set_image(thin image)")
    elif image_is_valid(image):
        model.set_image(image)
        check_prediction(model.predict(**POINT), image_size(image))
    else:
        refused(model.set_image, image, needles=needles_for_image(image), what="set_image")
        refused(model.predict, **POINT, needles=["image"], what="predict() without an image")

"""UniFusion-SAM input validation: bad input is a clear ValueError / TypeError naming the value.

Issue #3 "Must show" 6. Every error is raised by the predictor's checks, before any tensor reaches
torch (the traceback's last frame is in ``unifusion_sam``). Grayscale and RGBA images are converted
(transforms.py documents it): grayscale equals the same image repeated to RGB, RGBA drops alpha.
"""

from __future__ import annotations

import traceback
import warnings

import numpy as np
import pytest
import torch

H, W = 60, 80


def image(seed: int = 0, shape=(H, W, 3)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def square_mask(shape=(H, W)) -> np.ndarray:
    m = np.zeros(shape, dtype=bool)
    m[shape[0] // 4 : shape[0] // 2, shape[1] // 4 : shape[1] // 2] = True
    return m


POINT = dict(point_coords=[[20.0, 30.0]], point_labels=[1])


@pytest.fixture(params=["meta", "hf"])
def model(request, tiny_models):
    return tiny_models[request.param]


def raises_cleanly(exc_type, match, fn, *args, **kwargs):
    """``fn`` raises ``exc_type`` matching ``match`` from the library's own checks, not deep in torch."""
    with pytest.raises(exc_type, match=match) as info:
        fn(*args, **kwargs)
    last = traceback.extract_tb(info.tb)[-1].filename
    assert "unifusion_sam" in last and "site-packages" not in last, last
    return info


# ------------------------------------------------------------------ images
@pytest.mark.parametrize("bad,exc,match", [
    (image().astype(np.float32), TypeError, r"uint8.*float32"),
    (image().astype(np.float64) / 255.0, TypeError, r"float64"),
    (image().astype(np.uint16) * 200, TypeError, r"uint16"),
    (image().astype(bool), TypeError, r"bool"),
    (image(shape=(H, W, 5)), ValueError, r"\(60, 80, 5\)"),
    (image(shape=(H, W, 2)), ValueError, r"\(60, 80, 2\)"),
    (image(shape=(H * W,)), ValueError, r"\(4800,\)"),
    (image(shape=(2, H, W, 3)), ValueError, r"\(2, 60, 80, 3\)"),
    (image(shape=(0, W, 3)), ValueError, r"empty.*\(0, 80, 3\)"),
    (torch.zeros(H, W, 3, dtype=torch.uint8), TypeError, r"torch.Tensor"),
    ([[1, 2], [3, 4]], TypeError, r"list"),
    ("image.png", TypeError, r"str"),
])
def test_bad_image(model, bad, exc, match):
    raises_cleanly(exc, match, model.predict, bad, **POINT)


def test_bad_reference_image_is_named(model):
    raises_cleanly(TypeError, r"ref_images\[1\].*float32", model.predict, image(),
                   ref_images=[image(1), image(2).astype(np.float32)], ref_masks=[square_mask(), square_mask()])


@pytest.mark.parametrize("gray_shape", [(H, W), (H, W, 1)])
def test_grayscale_equals_rgb_repeat(model, gray_shape):
    gray = image(3, shape=(H, W))
    rgb = np.repeat(gray[:, :, None], 3, axis=2)
    a = model.predict(gray.reshape(gray_shape), **POINT)
    b = model.predict(rgb, **POINT)
    assert np.array_equal(a.logits, b.logits) and a.score == b.score


def test_rgba_drops_alpha_and_pil_images_work(model):
    from PIL import Image

    rgb = image(4)
    rgba = np.concatenate([rgb, np.full((H, W, 1), 7, dtype=np.uint8)], axis=2)
    expected = model.predict(rgb, **POINT).logits
    assert np.array_equal(model.predict(rgba, **POINT).logits, expected)
    assert np.array_equal(model.predict(Image.fromarray(rgb), **POINT).logits, expected)
    assert np.array_equal(model.predict(Image.fromarray(rgba, "RGBA"), **POINT).logits, expected)
    gray = image(5, shape=(H, W))
    assert np.array_equal(model.predict(Image.fromarray(gray, "L"), **POINT).logits,
                          model.predict(gray, **POINT).logits)


# ------------------------------------------------------------------ references
def test_reference_mask_of_another_size_names_both_shapes(model):
    info = raises_cleanly(ValueError, r"ref_masks\[0\]", model.predict, image(),
                          ref_images=[image(1)], ref_masks=[square_mask((H, W + 1))])
    assert "(60, 81)" in str(info.value) and "(60, 80)" in str(info.value)


def test_reference_mask_must_be_binary(model):
    bad = square_mask().astype(np.uint8) * 3
    raises_cleanly(ValueError, r"binary.*3", model.predict, image(), ref_images=[image(1)], ref_masks=[bad])


@pytest.mark.parametrize("n_images,n_masks", [(2, 1), (1, 3)])
def test_reference_lists_of_different_lengths(model, n_images, n_masks):
    raises_cleanly(ValueError, rf"{n_images} ref_images but {n_masks} ref_masks", model.predict, image(),
                   ref_images=[image(k) for k in range(n_images)], ref_masks=[square_mask()] * n_masks)


def test_reference_images_and_masks_come_together(model):
    raises_cleanly(ValueError, "together", model.predict, image(), ref_images=[image(1)])
    raises_cleanly(ValueError, "together", model.predict, image(), ref_masks=[square_mask()])
    raises_cleanly(ValueError, "empty", model.predict, image(), ref_images=[], ref_masks=[])


def test_reference_masks_accept_bool_01_and_0255(model):
    m = square_mask()
    outs = [model.predict(image(), ref_images=[image(1)], ref_masks=[v]).logits
            for v in (m, m.astype(np.uint8), m.astype(np.uint8) * 255, m.astype(np.float32))]
    assert all(np.array_equal(o, outs[0]) for o in outs[1:])


def test_empty_reference_masks(model):
    empty = np.zeros((H, W), dtype=bool)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # one empty reference among others: allowed, silent
        out = model.predict(image(), ref_images=[image(1), image(2)], ref_masks=[square_mask(), empty])
    assert out.mask.shape == (H, W) and np.isfinite(out.score)
    with pytest.warns(UserWarning, match="all reference masks are empty"):
        out = model.predict(image(), ref_images=[image(1), image(2)], ref_masks=[empty, empty])
    assert out.mask.shape == (H, W) and np.isfinite(out.logits).all()


# ------------------------------------------------------------------ text
@pytest.mark.parametrize("bad,exc,match", [
    ("", ValueError, r"empty"),
    ("   ", ValueError, r"empty"),
    (5, TypeError, r"int.*5"),
    (["a dog"], TypeError, r"list"),
    (b"a dog", TypeError, r"bytes"),
])
def test_bad_text(model, bad, exc, match):
    raises_cleanly(exc, match, model.predict, image(), text=bad)


def test_text_to_an_adapter_without_text_encoder(tiny_sam_factory):
    model = tiny_sam_factory("meta", text=None)
    assert model.text_encoder is None and model.text_token is None
    raises_cleanly(ValueError, r"no text encoder", model.predict, image(), text="the dog")
    assert model.predict(image(), ref_images=[image(1)], ref_masks=[square_mask()]).mask.shape == (H, W)


# ------------------------------------------------------------------ prompts
@pytest.mark.parametrize("coords,labels,match", [
    ([[80.0, 10.0]], [1], r"\[80.0, 10.0\].*outside.*80 x 60"),
    ([[10.0, 60.0]], [1], r"\[10.0, 60.0\].*outside"),
    ([[-1.0, 10.0]], [1], r"\[-1.0, 10.0\].*outside"),
    ([[np.nan, 10.0]], [1], r"finite.*nan"),
    ([[10.0, np.inf]], [1], r"finite.*inf"),
    ([[10.0, 10.0]], [2], r"point_labels.*2"),
    ([[10.0, 10.0]], [-1], r"point_labels.*-1"),
    ([[10.0, 10.0], [20.0, 20.0]], [1], r"point_labels must have shape \(2,\)"),
    ([10.0, 10.0], [1], r"N x 2.*\(2,\)"),
    ([[10.0, 10.0, 1.0]], [1], r"N x 2.*\(1, 3\)"),
])
def test_bad_points(model, coords, labels, match):
    raises_cleanly(ValueError, match, model.predict, image(), point_coords=coords, point_labels=labels)


def test_points_need_labels(model):
    raises_cleanly(ValueError, "together", model.predict, image(), point_coords=[[10.0, 10.0]])
    raises_cleanly(ValueError, "together", model.predict, image(), point_labels=[1])


@pytest.mark.parametrize("box,match", [
    ([30.0, 10.0, 20.0, 40.0], r"\[30.0, 10.0, 20.0, 40.0\]"),  # x0 > x1
    ([10.0, 10.0, 10.0, 40.0], r"x0 < x1"),  # empty
    ([10.0, 10.0, 90.0, 40.0], r"90.0.*<= 80"),  # outside
    ([-5.0, 10.0, 20.0, 40.0], r"-5.0"),
    ([10.0, 10.0, 20.0], r"\(x0, y0, x1, y1\).*\(3,\)"),
    ([10.0, np.nan, 20.0, 40.0], r"nan"),
])
def test_bad_box(model, box, match):
    raises_cleanly(ValueError, match, model.predict, image(), box=box)


def test_nothing_to_segment(model):
    raises_cleanly(ValueError, "nothing to segment", model.predict, image())


def test_no_image(tiny_sam_factory):
    model = tiny_sam_factory("meta", text=None)
    raises_cleanly(ValueError, "set_image", model.predict, None, **POINT)

"""J and F (region / boundary) against hand-computed values (DAVIS toolkit conventions)."""

import numpy as np
import pytest

from unifusion_sam.metrics import (
    boundary_f,
    boundary_precision_recall,
    boundary_radius,
    dilate_disk,
    disk,
    intersection_union,
    jaccard,
    seg2bmap,
)


def box(shape, rows, cols):
    m = np.zeros(shape, dtype=bool)
    m[rows[0] : rows[1] + 1, cols[0] : cols[1] + 1] = True
    return m


# ---------------------------------------------------------------- J


def test_jaccard_hand_case():
    gt = np.array([[1, 1, 0], [0, 0, 0]])
    pred = np.array([[0, 1, 1], [0, 0, 0]])
    assert intersection_union(pred, gt) == (1, 3)
    assert jaccard(pred, gt) == pytest.approx(1 / 3)


def test_jaccard_nonzero_is_foreground():
    gt = np.array([[0, 7], [0, 0]], dtype=np.uint8)
    pred = np.array([[0, 1], [0, 0]], dtype=np.int64)
    assert jaccard(pred, gt) == 1.0


def test_empty_empty_is_one():
    z = np.zeros((5, 7), dtype=bool)
    assert jaccard(z, z) == 1.0
    assert boundary_f(z, z) == 1.0
    assert boundary_precision_recall(z, z) == (1.0, 1.0, 1.0)


def test_empty_prediction_vs_object_is_zero():
    gt = box((8, 8), (2, 5), (2, 5))
    empty = np.zeros_like(gt)
    assert jaccard(empty, gt) == 0.0
    assert boundary_f(empty, gt) == 0.0
    # toolkit: predicted boundary empty -> precision 1, recall 0; GT boundary empty -> precision 0, recall 1
    assert boundary_precision_recall(empty, gt) == (1.0, 0.0, 0.0)
    assert boundary_precision_recall(gt, empty) == (0.0, 1.0, 0.0)
    assert jaccard(gt, empty) == 0.0


def test_shape_mismatch_names_both_shapes():
    a = np.zeros((4, 5), dtype=bool)
    b = np.zeros((5, 4), dtype=bool)
    for fn in (jaccard, boundary_f, intersection_union):
        with pytest.raises(ValueError, match=r"\(4, 5\).*\(5, 4\)"):
            fn(a, b)


def test_non_2d_input_rejected():
    with pytest.raises(ValueError, match="2-D"):
        jaccard(np.zeros((2, 3, 4)), np.zeros((2, 3, 4)))


# ---------------------------------------------------------------- seg2bmap


def test_seg2bmap_square():
    seg = box((4, 4), (1, 2), (1, 2))
    expected = np.array(
        [
            [1, 1, 1, 0],
            [1, 0, 1, 0],
            [1, 1, 1, 0],
            [0, 0, 0, 0],
        ],
        dtype=bool,
    )
    np.testing.assert_array_equal(seg2bmap(seg), expected)


def test_seg2bmap_one_pixel():
    seg = np.zeros((3, 3), dtype=bool)
    seg[1, 1] = True
    expected = np.array([[1, 1, 0], [1, 1, 0], [0, 0, 0]], dtype=bool)
    np.testing.assert_array_equal(seg2bmap(seg), expected)


def test_seg2bmap_object_touching_right_and_all_borders():
    # columns 2..3 of a 3 x 4 image: the side on the image border has no boundary
    seg = np.array([[0, 0, 1, 1]] * 3, dtype=bool)
    expected = np.array([[0, 1, 0, 0]] * 3, dtype=bool)
    np.testing.assert_array_equal(seg2bmap(seg), expected)
    # an object covering the whole image has an empty boundary
    assert not seg2bmap(np.ones((3, 3), dtype=bool)).any()


def test_seg2bmap_same_size_arguments_and_bad_target():
    seg = box((4, 6), (1, 2), (1, 3))
    np.testing.assert_array_equal(seg2bmap(seg, width=6, height=4), seg2bmap(seg))
    with pytest.raises(ValueError, match="can't convert"):
        seg2bmap(seg, width=12, height=8)


# ---------------------------------------------------------------- radius and disk


def test_boundary_radius():
    # ceil(0.008 * sqrt(480**2 + 854**2)) = ceil(7.837) = 8
    assert boundary_radius((480, 854)) == 8
    assert boundary_radius((24, 32)) == 1  # ceil(0.008 * 40) = ceil(0.32)
    assert boundary_radius((480, 854), bound_th=3) == 3
    assert boundary_radius((480, 854), bound_th=2.5) == 2.5


def test_disk_matches_skimage_definition():
    np.testing.assert_array_equal(disk(1), np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], dtype=bool))
    expected2 = np.array(
        [
            [0, 0, 1, 0, 0],
            [0, 1, 1, 1, 0],
            [1, 1, 1, 1, 1],
            [0, 1, 1, 1, 0],
            [0, 0, 1, 0, 0],
        ],
        dtype=bool,
    )
    np.testing.assert_array_equal(disk(2), expected2)
    # skimage builds arange(-1.5, 2.5) = [-1.5, -0.5, 0.5, 1.5]: only the central 2 x 2 is inside
    expected15 = np.zeros((4, 4), dtype=bool)
    expected15[1:3, 1:3] = True
    np.testing.assert_array_equal(disk(1.5), expected15)
    assert disk(8).shape == (17, 17)
    assert disk(8)[8, 0] and disk(8)[0, 8] and not disk(8)[1, 1]


def test_dilate_disk_integer_and_even_kernel():
    img = np.zeros((5, 5), dtype=bool)
    img[2, 2] = True
    plus = np.zeros_like(img)
    plus[1:4, 2] = True
    plus[2, 1:4] = True
    np.testing.assert_array_equal(dilate_disk(img, 1), plus)
    # even-sized kernel: OpenCV anchors it at ksize // 2 = 2, so the 2 x 2 lands down-right
    even = np.zeros_like(img)
    even[2:4, 2:4] = True
    np.testing.assert_array_equal(dilate_disk(img, 1.5), even)


def test_dilate_disk_matches_brute_force():
    rng = np.random.default_rng(0)
    for radius in (1, 2, 3, 2.5, 1.5):
        img = rng.random((17, 23)) < 0.04
        kernel = disk(radius)
        anchor = kernel.shape[0] // 2
        expected = np.zeros_like(img)
        for y, x in zip(*np.nonzero(img)):
            for ky, kx in zip(*np.nonzero(kernel)):
                # cv2: dst(y', x') |= src(y' + ky - a, x' + kx - a)  =>  y' = y - ky + a
                yy, xx = y - ky + anchor, x - kx + anchor
                if 0 <= yy < img.shape[0] and 0 <= xx < img.shape[1]:
                    expected[yy, xx] = True
        np.testing.assert_array_equal(dilate_disk(img, radius), expected, err_msg=f"radius {radius}")


# ---------------------------------------------------------------- F


def test_f_inner_square_non_square_image():
    # 8 x 12 image: radius ceil(0.008 * 14.4) = 1 (a plus-shaped disk).
    gt = box((8, 12), (2, 5), (2, 5))  # boundary: ring rows 1..5, cols 1..5 (16 px)
    pred = box((8, 12), (3, 4), (3, 4))  # boundary: ring rows 2..4, cols 2..4 (8 px)
    # every predicted boundary pixel touches the GT ring; the 4 GT ring corners are 2 steps away
    precision, recall, f = boundary_precision_recall(pred, gt)
    assert precision == 1.0
    assert recall == 12 / 16
    assert f == pytest.approx(2 * 1.0 * 0.75 / 1.75)  # 6/7
    assert jaccard(pred, gt) == 4 / 16


def test_f_shifted_square():
    gt = box((10, 10), (2, 5), (2, 5))  # ring rows 1..5, cols 1..5
    pred = box((10, 10), (2, 5), (4, 7))  # ring rows 1..5, cols 3..7
    # predicted ring: top/bottom rows match 4 of 5 each, left column 2 of 3, right column 0 of 3
    precision, recall, f = boundary_precision_recall(pred, gt)
    assert precision == 10 / 16
    assert recall == 10 / 16
    assert f == pytest.approx(10 / 16)
    assert jaccard(pred, gt) == 8 / 24


def test_f_one_pixel_objects():
    gt = np.zeros((8, 8), dtype=bool)
    gt[3, 3] = True
    assert jaccard(gt, gt) == 1.0 and boundary_f(gt, gt) == 1.0
    pred = np.zeros_like(gt)
    pred[3, 4] = True
    # no overlap, but the 2 x 2 boundaries {(2..3, 2..3)} and {(2..3, 3..4)} are within 1 px
    assert jaccard(pred, gt) == 0.0
    assert boundary_f(pred, gt) == 1.0


def test_f_full_image_object_has_no_boundary():
    full = np.ones((6, 9), dtype=bool)
    empty = np.zeros_like(full)
    assert jaccard(full, full) == 1.0 and boundary_f(full, full) == 1.0
    # toolkit quirk: both boundaries are empty, so F = 1 although J = 0
    assert jaccard(full, empty) == 0.0
    assert boundary_f(full, empty) == 1.0


def test_f_exact_radius_at_480x854():
    gt = np.zeros((480, 854), dtype=bool)
    gt[:, :100] = True  # touches top, bottom and left borders: boundary = column 99
    shifted8 = np.zeros_like(gt)
    shifted8[:, :108] = True  # boundary column 107, 8 px away: inside the radius-8 disk
    shifted9 = np.zeros_like(gt)
    shifted9[:, :109] = True  # boundary column 108, 9 px away: outside
    assert boundary_precision_recall(shifted8, gt) == (1.0, 1.0, 1.0)
    assert boundary_precision_recall(shifted9, gt) == (0.0, 0.0, 0.0)
    assert jaccard(shifted8, gt) == pytest.approx(100 / 108)
    assert jaccard(shifted9, gt) == pytest.approx(100 / 109)

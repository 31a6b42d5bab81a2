"""DAVIS statistics, the online VOSMeter and the YouTube-VOS overall score, against hand computations."""

import math

import numpy as np
import pytest

from unifusion_sam.metrics import (
    ObjectScores,
    VOSMeter,
    count_objects,
    davis_summary,
    db_statistics,
    frame_scores,
    youtube_vos_overall,
)

# ---------------------------------------------------------------- db_statistics


def test_db_statistics_seven_frames():
    values = [1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4]
    mean, recall, decay = db_statistics(values)
    assert mean == pytest.approx(4.9 / 7)
    assert recall == pytest.approx(5 / 7)  # 0.5 itself is not > 0.5
    # ids = round(linspace(1, 7, 5) + 1e-10) - 1 = [0, 2, 3, 5, 6]
    # first bin v[0:3] -> 0.9, last bin v[5:7] -> 0.45
    assert decay == pytest.approx(0.9 - 0.45)


def test_db_statistics_four_frames_and_one_frame():
    # ids = [0, 1, 2, 2, 3]: first bin v[0:2] = [1, 1], last bin v[2:4] = [0, 1]
    assert db_statistics([1.0, 1.0, 0.0, 1.0]) == pytest.approx((0.75, 0.75, 0.5))
    assert db_statistics([0.3]) == pytest.approx((0.3, 0.0, 0.0))


def test_db_statistics_nan_handling():
    # mean ignores the nan; recall counts it as "not > 0.5"; bins: [nan, 1] and [1, 0.5]
    mean, recall, decay = db_statistics([np.nan, 1.0, 0.0, 1.0, 0.5])
    assert mean == pytest.approx(2.5 / 4)
    assert recall == pytest.approx(2 / 5)
    assert decay == pytest.approx(1.0 - 0.75)


def test_db_statistics_rejects_empty():
    with pytest.raises(ValueError):
        db_statistics([])


def test_davis_summary_means_over_objects():
    objs = [
        ObjectScores("a", 1, np.array([1.0, 1.0, 0.0, 1.0]), np.array([1.0, 0.5, 0.5, 1.0])),
        ObjectScores("b", 1, np.array([0.0, 0.0, 0.0, 0.0]), np.array([0.0, 0.0, 0.0, 0.0])),
    ]
    s = davis_summary(objs)
    assert s["J-Mean"] == pytest.approx(0.375)
    assert s["F-Mean"] == pytest.approx(0.375)
    assert s["J&F-Mean"] == pytest.approx(0.375)
    assert s["J-Recall"] == pytest.approx(0.375)
    assert s["F-Recall"] == pytest.approx(0.25)  # 2/4 frames of "a" are > 0.5
    assert s["J-Decay"] == pytest.approx(0.25)  # (0.5 + 0) / 2
    assert s["F-Decay"] == pytest.approx(0.0)  # mean(1, .5) - mean(.5, 1) = 0
    assert s["per_object"]["a_1"] == pytest.approx({"J&F-Mean": 0.75, "J-Mean": 0.75, "F-Mean": 0.75})
    assert s["num_objects"] == 2
    with pytest.raises(ValueError, match="no objects"):
        davis_summary([])


# ---------------------------------------------------------------- frame scores and object ids


def test_count_objects_ignores_void():
    gt = np.array([[0, 1, 255], [0, 2, 255]], dtype=np.uint8)
    assert count_objects(gt) == 2


def test_frame_scores_missing_object_and_void():
    gt = np.zeros((6, 6), dtype=np.uint8)
    gt[1:3, 1:3] = 1
    gt[4, 4] = 2
    gt[0, 5] = 255  # void: background in the ground truth
    pred = np.zeros_like(gt)
    pred[1:3, 1:3] = 1
    j, f = frame_scores(pred, gt, 2)
    np.testing.assert_array_equal(j, [1.0, 0.0])
    np.testing.assert_array_equal(f, [1.0, 0.0])
    with pytest.raises(ValueError, match=r"\(6, 6\).*\(6, 5\)"):
        frame_scores(pred, gt[:, :5], 2)


# ---------------------------------------------------------------- VOSMeter


def _square(shape, top, left, size, label):
    m = np.zeros(shape, dtype=np.uint8)
    m[top : top + size, left : left + size] = label
    return m


def _two_object_gt(shape=(8, 8)):
    return _square(shape, 1, 1, 3, 1) + _square(shape, 5, 5, 2, 2)


def test_vos_meter_hand_sequence_first_last_dropped():
    gt = _two_object_gt()
    obj1 = _square(gt.shape, 1, 1, 3, 1)
    garbage = np.full_like(gt, 9)  # an extra id: only allowed in the dropped first / last frames
    preds = [garbage, obj1, obj1, np.zeros_like(gt), obj1, garbage]  # object 2 is never predicted
    meter = VOSMeter()
    for t, pred in enumerate(preds):
        meter.update("v", pred, gt, frame=f"{t:05d}")
    s = meter.compute()
    # object 1: J = F = [1, 1, 0, 1]; object 2: zeros
    assert s["per_object"]["v_1"] == pytest.approx({"J&F-Mean": 0.75, "J-Mean": 0.75, "F-Mean": 0.75})
    assert s["per_object"]["v_2"] == pytest.approx({"J&F-Mean": 0.0, "J-Mean": 0.0, "F-Mean": 0.0})
    assert s["J-Mean"] == pytest.approx(0.375)
    assert s["F-Mean"] == pytest.approx(0.375)
    assert s["J&F-Mean"] == pytest.approx(0.375)
    assert s["J-Recall"] == pytest.approx(0.375)
    assert s["J-Decay"] == pytest.approx(0.25)
    assert s["num_videos"] == 1 and s["num_objects"] == 2
    seqs = {o.name: o for o in meter.object_scores()}
    np.testing.assert_array_equal(seqs["v_1"].j, [1.0, 1.0, 0.0, 1.0])


def test_vos_meter_objects_come_from_first_gt_frame():
    first = _square((8, 8), 1, 1, 3, 1)
    later = _two_object_gt()  # object 2 appears after the first frame: the toolkit ignores it
    meter = VOSMeter()
    for gt in (first, later, later):
        meter.update("v", first, gt)
    assert list(meter.compute()["per_object"]) == ["v_1"]


def test_vos_meter_extra_object_in_scored_frame():
    gt = _two_object_gt()
    bad = gt.copy()
    bad[0, 0] = 3
    meter = VOSMeter()
    meter.update("cows", gt, gt, frame="00000")
    meter.update("cows", bad, gt, frame="00001")
    with pytest.raises(ValueError, match=r"object id 3.*'cows', frame 00001"):
        meter.update("cows", gt, gt, frame="00002")
    strict = VOSMeter(drop_first_last=False)
    strict.start_video("cows", n_objects=2)
    with pytest.raises(ValueError, match="object id 3"):
        strict.update("cows", bad, gt)


def test_vos_meter_errors():
    gt = _two_object_gt()
    meter = VOSMeter()
    with pytest.raises(ValueError, match=r"\(8, 8\).*\(8, 7\)"):
        meter.update("v", gt, gt[:, :7])
    short = VOSMeter()
    short.update("tiny", gt, gt)
    short.update("tiny", gt, gt)
    with pytest.raises(ValueError, match="'tiny' has 2 frame"):
        short.compute()
    with pytest.raises(ValueError, match="integer label map"):
        VOSMeter().update("f", gt.astype(np.float32), gt)


def test_vos_meter_without_dropping():
    gt = _two_object_gt()
    meter = VOSMeter(drop_first_last=False)
    meter.update("v", gt, gt)
    meter.update("v", np.zeros_like(gt), gt)
    s = meter.compute()
    assert s["J-Mean"] == pytest.approx(0.5)  # both objects: J = [1, 0]
    assert s["J-Decay"] == pytest.approx(1.0)  # ids = [0, 0, 1, 1, 1]: bins [1, 0] -> 0.5 ... [0] -> 0


# ---------------------------------------------------------------- YouTube-VOS / LVOS


def test_youtube_vos_overall_hand_case():
    j = [0.8, 0.6, 0.5]
    f = [0.9, 0.7, 0.3]
    seen = [True, True, False]
    out = youtube_vos_overall(j, f, seen)
    assert out["J_seen"] == pytest.approx(0.7)
    assert out["F_seen"] == pytest.approx(0.8)
    assert out["J_unseen"] == pytest.approx(0.5)
    assert out["F_unseen"] == pytest.approx(0.3)
    assert out["Overall"] == pytest.approx((0.7 + 0.8 + 0.5 + 0.3) / 4)


def test_youtube_vos_overall_per_frame_values_and_missing_group():
    out = youtube_vos_overall([[1.0, 0.6]], [[0.5, 0.5]], [True])
    assert out["J_seen"] == pytest.approx(0.8)
    assert out["F_seen"] == pytest.approx(0.5)
    assert math.isnan(out["J_unseen"]) and math.isnan(out["Overall"])
    with pytest.raises(ValueError, match="same length"):
        youtube_vos_overall([0.1], [0.1, 0.2], [True])

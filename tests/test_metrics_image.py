"""RIS (oIoU / mIoU / Prec@X) and FSS (per-class mIoU / FB-IoU) meters against hand computations."""

import numpy as np
import pytest

from unifusion_sam.metrics import FSSMeter, RISMeter

# ---------------------------------------------------------------- RIS


def _ris_two_sentences():
    meter = RISMeter()
    gt1 = np.array([[1, 0], [0, 0]], dtype=bool)
    assert meter.update(gt1, gt1) == 1.0  # I = 1, U = 1
    gt2 = np.ones((4, 4), dtype=bool)
    pred2 = np.zeros((4, 4), dtype=bool)
    pred2[:2] = True
    assert meter.update(pred2, gt2) == 0.5  # I = 8, U = 16
    return meter


def test_ris_oiou_differs_from_miou():
    out = _ris_two_sentences().compute()
    assert out["oIoU"] == pytest.approx(9 / 17)  # (1 + 8) / (1 + 16)
    assert out["mIoU"] == pytest.approx(0.75)  # (1 + 0.5) / 2
    assert out["num_sentences"] == 2


def test_ris_precision_uses_greater_or_equal():
    out = _ris_two_sentences().compute()
    assert out["Prec@0.5"] == 1.0  # the IoU of exactly 0.5 counts (LAVT: iou >= threshold)
    for t in ("0.6", "0.7", "0.8", "0.9"):
        assert out[f"Prec@{t}"] == 0.5


def test_ris_empty_union_scores_zero_and_merge():
    meter = RISMeter()
    z = np.zeros((3, 3), dtype=bool)
    assert meter.update(z, z) == 0.0  # LAVT: U == 0 -> IoU 0
    other = _ris_two_sentences()
    meter.merge(other)
    out = meter.compute()
    assert out["num_sentences"] == 3
    assert out["mIoU"] == pytest.approx(1.5 / 3)
    assert out["oIoU"] == pytest.approx(9 / 17)


def test_ris_errors():
    with pytest.raises(ValueError, match="before any update"):
        RISMeter().compute()
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(3, 2\)"):
        RISMeter().update(np.zeros((2, 3)), np.zeros((3, 2)))


# ---------------------------------------------------------------- FSS


def _row(bits):
    return np.array([bits], dtype=bool)  # a 1 x 8 mask


def _fss_episodes(meter):
    # class A, episode 1: fg I = 2, U = 4; bg I = 4, U = 6
    meter.update(_row([0, 1, 1, 1, 0, 0, 0, 0]), _row([1, 1, 1, 0, 0, 0, 0, 0]), "A")
    # class A, episode 2: fg I = 3, U = 4; bg I = 4, U = 5
    meter.update(_row([1, 1, 1, 0, 0, 0, 0, 0]), _row([1, 1, 1, 1, 0, 0, 0, 0]), "A")
    # class B: fg I = 1, U = 4; bg I = 4, U = 7
    meter.update(_row([0, 1, 0, 0, 0, 0, 1, 1]), _row([1, 1, 0, 0, 0, 0, 0, 0]), "B")


def test_fss_per_class_miou_vs_fb_iou():
    meter = FSSMeter()
    _fss_episodes(meter)
    out = meter.compute()
    assert out["per_class_iou"] == pytest.approx({"A": 5 / 8, "B": 1 / 4})
    assert out["mIoU"] == pytest.approx((5 / 8 + 1 / 4) / 2)  # 0.4375
    # HSNet pools over classes first: fg 6/12, bg 12/18
    assert out["FB-IoU"] == pytest.approx((6 / 12 + 12 / 18) / 2)  # 7/12
    # ... which is not the per-class mean of (fg + bg) / 2
    per_class_fb = ((5 / 8 + 8 / 11) / 2 + (1 / 4 + 4 / 7) / 2) / 2
    assert out["FB-IoU"] != pytest.approx(per_class_fb)
    assert out["num_episodes"] == 3 and out["num_classes"] == 2


def test_fss_listed_classes_never_seen_count_as_zero():
    meter = FSSMeter(class_ids=["A", "B", "C"])
    _fss_episodes(meter)
    out = meter.compute()
    assert out["mIoU"] == pytest.approx((5 / 8 + 1 / 4 + 0) / 3)
    assert out["FB-IoU"] == pytest.approx(7 / 12)
    with pytest.raises(ValueError, match="'D'"):
        meter.update(_row([1] * 8), _row([1] * 8), "D")


def test_fss_errors():
    with pytest.raises(ValueError, match="before any update"):
        FSSMeter().compute()
    with pytest.raises(ValueError, match=r"\(1, 8\).*\(8, 1\)"):
        FSSMeter().update(np.zeros((1, 8)), np.zeros((8, 1)), "A")

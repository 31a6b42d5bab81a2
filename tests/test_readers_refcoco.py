import os
import pickle

import numpy as np
import pytest
from fixtures_layouts import corrupt, write_refcoco

from unifusion_sam.data.io import DataError, DataWarning
from unifusion_sam.data.readers import RefCOCO, materialize
from unifusion_sam.data.types import ReferringExpression


@pytest.fixture
def refcoco(tmp_path):
    return write_refcoco(tmp_path, "refcoco", "unc")


def test_splits_and_one_record_per_sentence(tmp_path, refcoco):
    train = RefCOCO(tmp_path, "refcoco", "train")
    assert len(train) == 2  # ref 0 has two sentences
    assert [r.sentence for r in train] == ["object 101 sentence 0", "object 101 sentence 1"]
    assert all(isinstance(r, ReferringExpression) for r in train)
    assert {r.meta["sent_id"] for r in train} == {0, 1}
    assert train[0].ref_id == "0" and train[0].meta["ann_id"] == 101 and train[0].meta["category"] == "person"
    for split, ann in (("val", 102), ("testA", 103), ("testB", 101)):
        records = list(RefCOCO(tmp_path, "refcoco", split))
        assert len(records) == 1 and records[0].meta["ann_id"] == ann and records[0].meta["split"] == split
    raw = RefCOCO(tmp_path, "refcoco", "val", sentence_key="raw")
    assert raw[0].sentence == "Object 102, #0!"


def test_masks_decoded_at_image_size(tmp_path, refcoco):
    # two overlapping polygons of one object are unioned: the overlap (rows 6-8, cols 5-7) is set
    rec = RefCOCO(tmp_path, "refcoco", "train")[0]
    assert rec.mask.dtype == bool and rec.mask.shape == (12, 16)
    np.testing.assert_array_equal(rec.mask, refcoco["masks"][101])
    assert rec.mask[7, 6] and rec.mask[3, 2] and rec.mask[10, 11] and not rec.mask[3, 10]
    # compressed RLE string
    np.testing.assert_array_equal(RefCOCO(tmp_path, "refcoco", "val")[0].mask, refcoco["masks"][102])
    # uncompressed RLE counts list, second image (10 x 14)
    rec = RefCOCO(tmp_path, "refcoco", "testA")[0]
    assert rec.mask.shape == (10, 14)
    np.testing.assert_array_equal(rec.mask, refcoco["masks"][103])


def test_lazy_image_and_materialize(tmp_path, refcoco):
    rec = RefCOCO(tmp_path, "refcoco", "val")[0]
    assert rec.image == refcoco["image_dir"] / "COCO_train2014_000000000001.jpg"
    loaded = materialize(rec)
    assert loaded.image.shape == (12, 16, 3) and loaded.image.dtype == np.uint8
    assert isinstance(rec.image, os.PathLike)  # the original record is untouched


def test_split_by_and_validation(tmp_path):
    write_refcoco(tmp_path, "refcocog", "umd")
    assert len(RefCOCO(tmp_path, "refcocog", "test")) == 1  # umd default for refcocog
    with pytest.raises(ValueError, match="split"):
        RefCOCO(tmp_path, "refcocog", "testA")
    with pytest.raises(ValueError, match="dataset"):
        RefCOCO(tmp_path, "refclef", "val")
    with pytest.raises(DataError, match=r"refs\(unc\)\.p"):
        RefCOCO(tmp_path, "refcocog", "val", split_by="unc")


def test_missing_root_and_image_dir(tmp_path, refcoco):
    with pytest.raises(DataError, match="nowhere"):
        RefCOCO(tmp_path / "nowhere", "refcoco", "val")
    with pytest.raises(DataError, match="train2014"):
        RefCOCO(tmp_path, "refcoco", "val", image_dir=tmp_path / "train2014")


# a refs pickle carrying a payload: tests/test_hostile_files.py


def test_inconsistent_ref_raises_or_skips(tmp_path, refcoco):
    refs = list(refcoco["refs"])
    refs[1] = {**refs[1], "ann_id": 999}  # the val ref points to an annotation that does not exist
    with open(refcoco["refs_path"], "wb") as f:
        pickle.dump(refs, f, protocol=2)
    with pytest.raises(DataError, match="999"):
        RefCOCO(tmp_path, "refcoco", "val")
    with pytest.warns(DataWarning, match="999"):
        assert len(RefCOCO(tmp_path, "refcoco", "val", on_error="skip")) == 0
    refs[1] = {**refs[1], "ann_id": 103}  # annotation of another image: would be mislabelled
    with open(refcoco["refs_path"], "wb") as f:
        pickle.dump(refs, f, protocol=2)
    with pytest.raises(DataError, match="belongs to image"):
        RefCOCO(tmp_path, "refcoco", "val")


def test_corrupt_image(tmp_path, refcoco):
    bad = corrupt(refcoco["image_dir"] / "COCO_train2014_000000000001.jpg")
    reader = RefCOCO(tmp_path, "refcoco", "train")
    with pytest.raises(DataError, match="COCO_train2014_000000000001.jpg"):
        reader.load(0)
    skipping = RefCOCO(tmp_path, "refcoco", "train", on_error="skip")
    with pytest.warns(DataWarning, match=str(bad.name)):
        assert list(skipping.materialized()) == []
    with pytest.warns(DataWarning):
        assert len(RefCOCO(tmp_path, "refcoco", "train", on_error="skip", verify=True)) == 0
    assert len(RefCOCO(tmp_path, "refcoco", "testA", verify=True)) == 1  # image 2 is fine

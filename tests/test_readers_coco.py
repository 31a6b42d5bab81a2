import json

import numpy as np
import pytest
from fixtures_layouts import corrupt, rect_mask, rect_polygon, write_coco

from unifusion_sam.data.io import DataError, DataWarning
from unifusion_sam.data.readers import COCOInstances, InstanceRecord, decode_coco_segmentation


@pytest.fixture
def coco(tmp_path):
    return write_coco(tmp_path, "val2017")


def _rewrite(coco, edit):
    data = json.loads(coco["annotation_file"].read_text())
    edit(data)
    coco["annotation_file"].write_text(json.dumps(data))


def test_per_instance_records_and_masks(tmp_path, coco):
    reader = COCOInstances(tmp_path, "val2017")
    assert [r.ann_id for r in reader] == [101, 102, 104]  # 103 is a crowd region: skipped by default
    for rec in reader:
        assert isinstance(rec, InstanceRecord)
        np.testing.assert_array_equal(rec.mask, coco["masks"][rec.ann_id])
    assert reader[0].mask[7, 6]  # overlapping polygons are unioned
    assert reader[0].category == "person" and reader[1].category == "dog"
    assert reader[0].image == tmp_path / "val2017" / "000000000001.jpg"
    assert reader.load(2).image.shape == (10, 14, 3)


def test_crowd_tiny_and_category_filters(tmp_path, coco):
    with_crowd = COCOInstances(tmp_path, "val2017", crowd="include")
    assert [r.ann_id for r in with_crowd] == [101, 102, 103, 104]
    crowd = with_crowd[2]
    assert crowd.meta["iscrowd"] and crowd.mask.shape == (10, 14)
    np.testing.assert_array_equal(crowd.mask, coco["masks"][103])  # uncompressed RLE counts
    assert [r.ann_id for r in COCOInstances(tmp_path, "val2017", min_area=5)] == [101, 102]
    assert [r.ann_id for r in COCOInstances(tmp_path, "val2017", category_ids=[2])] == [102, 104]
    with pytest.raises(ValueError, match="crowd"):
        COCOInstances(tmp_path, "val2017", crowd="ignore")
    with pytest.raises(ValueError, match="split"):
        COCOInstances(tmp_path, "test2017")
    with pytest.raises(DataError, match="nowhere"):
        COCOInstances(tmp_path / "nowhere", "val2017")
    explicit = COCOInstances(annotation_file=coco["annotation_file"], image_dir=coco["image_dir"], split=None)
    assert len(explicit) == 3


def test_bad_segmentations_raise_or_skip(tmp_path, coco):
    def edit(data):
        data["annotations"][1]["segmentation"]["size"] = [5, 5]  # RLE of another size
        data["annotations"][3]["segmentation"] = {"size": [10, 14], "counts": "0000"}  # runs do not sum to H*W

    _rewrite(coco, edit)
    with pytest.raises(DataError, match="ann 102"):
        COCOInstances(tmp_path, "val2017")
    with pytest.warns(DataWarning) as caught:
        reader = COCOInstances(tmp_path, "val2017", on_error="skip")
    assert [r.ann_id for r in reader] == [101]
    assert any("ann 104" in str(w.message) for w in caught)


def test_degenerate_polygons_are_dropped_not_read_as_boxes():
    size = (6, 8)
    # a 4-number "polygon" first would make pycocotools read the whole list as boxes
    mask = decode_coco_segmentation([[1, 1, 3, 3], rect_polygon(1, 4, 2, 6)], *size, source="test")
    np.testing.assert_array_equal(mask, rect_mask(size, 1, 4, 2, 6))
    with pytest.raises(DataError, match="no polygon"):
        decode_coco_segmentation([[1, 1, 3, 3]], *size, source="test")
    with pytest.raises(DataError, match="truncated"):
        decode_coco_segmentation({"size": list(size), "counts": "a"}, *size, source="test")


def test_corrupt_image(tmp_path, coco):
    corrupt(coco["image_dir"] / "000000000002.jpg")
    reader = COCOInstances(tmp_path, "val2017", on_error="skip")
    with pytest.raises(DataError, match="000000000002.jpg"):
        reader.load(2)
    with pytest.warns(DataWarning, match="000000000002.jpg"):
        assert [r.ann_id for r in reader.materialized()] == [101, 102]

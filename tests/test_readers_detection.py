"""Objects365, COCO detection and OVIS readers on tiny datasets in their official layouts, and the
training sources built on them."""

import json
import pickle
import shutil

import numpy as np
import pytest
from fixtures_detection import O365_LAYOUTS, write_objects365, write_ovis
from fixtures_layouts import corrupt, write_coco

from unifusion_sam.data.io import DataError, DataWarning
from unifusion_sam.data.readers import (
    OVIS,
    COCODetection,
    Objects365,
    RLELabelMap,
    load_video_annotation,
    load_video_frame,
    materialize,
)
from unifusion_sam.data.types import DetectionRecord
from unifusion_sam.training import build_source
from unifusion_sam.training.config import DataSource
from unifusion_sam.training.sources import COCOSource, DetectionSource, VideoSource


def _rewrite(path, edit):
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def _expected_rows(rec, expected):
    """The expected boxes / labels in the record's annotation order (the json's order)."""
    order = [expected["ann_ids"].index(a) for a in rec.meta["ann_ids"]]
    return expected["boxes"][order], expected["labels"][order]


# ------------------------------------------------------------------------------------- Objects365
@pytest.mark.parametrize("layout", O365_LAYOUTS)
def test_objects365_finds_the_images_of_each_layout(tmp_path, layout):
    out = write_objects365(tmp_path, layout=layout, json_dir="annotations" if layout == "patch" else "")
    reader = Objects365(tmp_path)
    assert [r.image_id for r in reader] == [10, 20]  # image 30 has only a crowd and a degenerate box
    assert reader.image_layout == ("file_name" if layout == "root" else layout)
    for rec in reader:
        assert rec.image == out["expected"][rec.image_id]["path"]
    assert reader.load(1).image.shape == (48, 64, 3)


def test_objects365_boxes_labels_and_filters(tmp_path):
    out = write_objects365(tmp_path)
    reader = Objects365(tmp_path, "train")
    assert reader.category_ids == [3, 5, 7, 12] and reader.num_classes == 4
    assert reader.categories == ["Chair", "Hat", "Car", "Street Lights"]  # sorted by id, not as listed
    for rec in reader:
        assert isinstance(rec, DetectionRecord) and rec.masks is None
        assert rec.boxes.dtype == np.float32 and rec.labels.dtype == np.int64
        boxes, labels = _expected_rows(rec, out["expected"][rec.image_id])
        np.testing.assert_array_equal(rec.boxes, boxes)
        np.testing.assert_array_equal(rec.labels, labels)
        assert ((rec.boxes[:, 2:] - rec.boxes[:, :2]) > 1).all()
    rows = {tuple(b): int(lab) for b, lab in zip(reader[0].boxes.tolist(), reader[0].labels)}
    assert rows[(10.5, 4.25, 30.5, 14.75)] == 2  # xywh [10.5, 4.25, 20, 10.5], category 7 -> label 2
    assert rows[(0.0, 40.0, 27.0, 48.0)] == 3  # xywh [-3, 40, 30, 20] clipped to the 48 x 64 image
    assert (2.0, 2.0, 22.0, 22.0) not in rows  # the crowd box
    assert all(b[2] - b[0] > 1 for b in rows)  # the w = 0.5 box is gone


def test_objects365_missing_files_and_arguments(tmp_path):
    write_objects365(tmp_path)
    with pytest.raises(DataError, match="zhiyuan_objv2_val.json"):
        Objects365(tmp_path, "val")
    with pytest.raises(DataError, match=str(tmp_path / "nowhere")):
        Objects365(tmp_path, image_dir=tmp_path / "nowhere")
    with pytest.raises(DataError, match="nowhere"):
        Objects365(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="split"):
        Objects365(tmp_path, "test")
    with pytest.raises(ValueError, match="image_layout"):
        Objects365(tmp_path, image_layout="zip")
    with pytest.raises(ValueError, match="annotation_file"):
        Objects365(None, annotation_file=tmp_path / "zhiyuan_objv2_train.json")
    with pytest.raises(DataError, match="looked for"):  # the images are not where image_layout says
        Objects365(tmp_path, image_layout="flat")
    shutil.rmtree(tmp_path / "images")
    with pytest.raises(DataError, match=f"image folder not found.*{tmp_path / 'images' / 'train'}"):
        Objects365(tmp_path)


def test_objects365_bad_annotations_raise_or_skip(tmp_path):
    out = write_objects365(tmp_path)
    ann_file = out["annotation_file"]
    bad = out["expected"][20]["ann_ids"][0]
    _rewrite(ann_file, lambda d: next(a for a in d["annotations"] if a["id"] == bad).update(bbox=[1, 2, 3]))
    with pytest.raises(DataError, match=f"zhiyuan_objv2_train.json ann {bad}: bbox"):
        Objects365(tmp_path)
    with pytest.warns(DataWarning, match=f"ann {bad}"):
        assert [r.image_id for r in Objects365(tmp_path, on_error="skip")] == [10]
    _rewrite(ann_file, lambda d: next(a for a in d["annotations"] if a["id"] == bad).update(
        bbox=[1, 2, 3, 4], category_id=99))
    with pytest.raises(DataError, match=f"ann {bad}: category_id 99"):
        Objects365(tmp_path)
    _rewrite(ann_file, lambda d: d.update(annotations=None))
    with pytest.raises(DataError, match="not a COCO-format file"):
        Objects365(tmp_path)


def test_objects365_image_problems_surface_when_loaded(tmp_path):
    out = write_objects365(tmp_path)
    _rewrite(out["annotation_file"], lambda d: d["images"][1].update(height=50))  # image 20
    reader = Objects365(tmp_path)
    with pytest.raises(DataError, match="objects365_v2_00000020.jpg.*annotations are for"):
        reader.load(1)
    out["expected"][10]["path"].unlink()
    with pytest.raises(DataError, match="objects365_v1_00000010.jpg"):
        reader.load(0)
    with pytest.warns(DataWarning):
        assert len(Objects365(tmp_path, on_error="skip", verify=True)) == 0


# -------------------------------------------------------------------------------- COCO detection
def test_coco_detection_records(tmp_path):
    coco = write_coco(tmp_path, "val2017")
    reader = COCODetection(tmp_path, "val2017")
    assert reader.categories == ["person", "dog"] and reader.num_classes == 2
    assert [r.image_id for r in reader] == [1, 2]
    first, second = reader[0], reader[1]
    assert first.meta["ann_ids"] == [101, 102] and second.meta["ann_ids"] == [104]  # 103 is a crowd
    np.testing.assert_array_equal(first.boxes, [[2, 3, 12, 11], [10, 1, 15, 4]])  # from xywh
    np.testing.assert_array_equal(first.labels, [0, 1])
    assert first.masks.shape == (2, 12, 16) and first.masks.dtype == bool
    for mask, ann_id in zip(first.masks, [101, 102]):
        np.testing.assert_array_equal(mask, coco["masks"][ann_id])
    np.testing.assert_array_equal(second.masks[0], coco["masks"][104])
    assert first.image == tmp_path / "val2017" / "000000000001.jpg"
    assert reader.load(1).image.shape == (10, 14, 3)
    explicit = COCODetection(annotation_file=coco["annotation_file"], image_dir=coco["image_dir"], split=None)
    assert len(explicit) == 2


def test_coco_detection_errors(tmp_path):
    coco = write_coco(tmp_path, "val2017")
    with pytest.raises(DataError, match="instances_train2017.json"):
        COCODetection(tmp_path, "train2017", image_dir=tmp_path / "val2017")
    _rewrite(coco["annotation_file"], lambda d: d["annotations"][1]["segmentation"].update(size=[5, 5]))
    with pytest.raises(DataError, match="ann 102"):
        COCODetection(tmp_path, "val2017")
    with pytest.warns(DataWarning, match="ann 102"):
        assert [r.image_id for r in COCODetection(tmp_path, "val2017", on_error="skip")] == [2]
    corrupt(coco["image_dir"] / "000000000002.jpg")
    with pytest.warns(DataWarning, match="ann 102"):
        reader = COCODetection(tmp_path, "val2017", on_error="skip")
    with pytest.raises(DataError, match="000000000002.jpg"):
        reader.load(0)


# -------------------------------------------------------------------------------------------- OVIS
def test_ovis_records_and_label_maps(tmp_path):
    out = write_ovis(tmp_path)
    reader = OVIS(tmp_path)
    assert [r.name for r in reader] == ["0b2f5c1e", "9a7d33f0"]
    late = 0
    for v, rec in enumerate(reader, start=1):
        video = out["videos"][rec.name]
        spec = video["spec"]
        assert rec.frames == video["frames"] and rec.frame_names[0] == "img_0000001"
        assert rec.object_ids == spec.object_ids  # the empty and the crowd annotation are no objects
        assert rec.first_frame == {k: spec.birth[k - 1] for k in spec.object_ids}
        assert [rec.meta["objects"][k]["ann_id"] for k in rec.object_ids] == [100 * v + 2 * k for k in rec.object_ids]
        assert sorted(rec.annotations) == list(range(len(rec)))
        assert isinstance(rec.annotations[0], RLELabelMap) and "annotations_train.json" in str(rec.annotations[0])
        for t in range(len(rec)):  # later annotation ids painted last where the amodal masks overlap
            np.testing.assert_array_equal(load_video_annotation(rec, t), video["labels"][t])
        for k, f in rec.first_frame.items():
            if f > 0:
                late += 1
                assert not (load_video_annotation(rec, f - 1) == k).any() and (load_video_annotation(rec, f) == k).any()
        assert any(video["overlap"])
    assert late >= 1
    rec = pickle.loads(pickle.dumps(reader[1]))  # crosses DataLoader workers
    done = materialize(rec)
    assert done.frames[0].shape == (48, 64, 3) and done.annotations[3].shape == (48, 64)
    assert load_video_frame(rec, 2).shape == (48, 64, 3)


def test_ovis_other_splits_and_errors(tmp_path):
    write_ovis(tmp_path / "a", json_dir="annotations")
    assert len(OVIS(tmp_path / "a")) == 2  # annotations/annotations_train.json
    with pytest.raises(DataError, match="annotations_valid.json"):
        OVIS(tmp_path / "a", "valid")
    write_ovis(tmp_path / "v", split="valid")
    valid = OVIS(tmp_path / "v", "valid")
    assert len(valid) == 2 and valid[0].annotations == {} and valid[0].object_ids == []

    out = write_ovis(tmp_path / "b")
    shutil.rmtree(tmp_path / "b" / "train" / "9a7d33f0")
    with pytest.raises(DataError, match=f"frame folder not found: {tmp_path / 'b' / 'train' / '9a7d33f0'}"):
        OVIS(tmp_path / "b")
    with pytest.warns(DataWarning, match="9a7d33f0"):
        assert [r.name for r in OVIS(tmp_path / "b", on_error="skip")] == ["0b2f5c1e"]
    shutil.rmtree(tmp_path / "b" / "train")
    with pytest.raises(DataError, match=str(tmp_path / "b" / "train")):
        OVIS(tmp_path / "b")
    with pytest.raises(ValueError, match="split"):
        OVIS(tmp_path / "b", "val")

    out = write_ovis(tmp_path / "c")
    ann_file = out["annotation_file"]
    def ann(data, ann_id):
        return next(a for a in data["annotations"] if a["id"] == ann_id)

    _rewrite(ann_file, lambda d: ann(d, 102)["segmentations"].pop())
    with pytest.raises(DataError, match="ann 102 .*segmentations must be a list of 6"):
        OVIS(tmp_path / "c")
    write_ovis(tmp_path / "c")
    _rewrite(ann_file, lambda d: ann(d, 102)["segmentations"][0].update(counts="52203"))  # runs of a 4 x 4 mask
    reader = OVIS(tmp_path / "c")  # RLE contents are checked when decoded
    with pytest.raises(DataError, match="video 1 frame img_0000001.jpg object 1"):
        load_video_annotation(reader[0], 0)


# ------------------------------------------------------------------------------- training sources
def test_detection_sources(tmp_path):
    write_objects365(tmp_path / "o365")
    write_coco(tmp_path / "coco", "val2017")
    o365 = build_source(DataSource(kind="objects365", task="det", root=str(tmp_path / "o365")), 64, 0)
    coco = build_source(DataSource(kind="coco", task="det", root=str(tmp_path / "coco"), split="val2017"), 64, 0)
    assert isinstance(o365, DetectionSource) and isinstance(coco, DetectionSource)
    for source in (o365, coco):
        for seed in range(4):
            s = source.sample(np.random.default_rng(seed))
            h, w = s.image.shape[:2]
            n = len(s.boxes)
            assert s.task == "det" and s.mask.shape == (h, w) and s.mask.dtype == bool and n > 0
            assert s.boxes.shape == (n, 4) and s.boxes.dtype == np.float32
            assert s.labels.shape == (n,) and s.labels.dtype == np.int64
            assert (s.boxes[:, :2] >= 0).all() and (s.boxes[:, 2] <= w).all() and (s.boxes[:, 3] <= h).all()
            assert (s.boxes[:, 2:] > s.boxes[:, :2]).all()
            assert s.meta["key"].startswith("img:")
            if source is o365:
                assert s.instance_masks is None and not s.mask.any()
            else:
                assert s.instance_masks.shape == (n, h, w)
                np.testing.assert_array_equal(s.mask, np.logical_or.reduce(s.instance_masks))
    pseudo = build_source(DataSource(kind="coco", task="pseudo_vos", root=str(tmp_path / "coco"), split="val2017"),
                          64, 0)
    assert isinstance(pseudo, COCOSource)
    with pytest.raises(ValueError, match="task must be 'det'"):
        DataSource(kind="objects365", task="ris", root=str(tmp_path / "o365"))


def test_ovis_source(tmp_path):
    write_ovis(tmp_path)
    source = build_source(DataSource(kind="ovis", task="vos", root=str(tmp_path), options={"first_ref": True}), 64, 0)
    assert isinstance(source, VideoSource) and source.task == "vos" and source.first_ref
    for seed in range(6):
        s = source.sample(np.random.default_rng(seed))
        assert s.task == "vos" and s.mask.shape == s.image.shape[:2] == (48, 64)
        assert 1 <= len(s.ref_images) <= 2 and len(s.ref_masks) == len(s.meta["ref_keys"]) == len(s.ref_images)
        assert all(m.any() for m in s.ref_masks)

import json

import numpy as np
import pytest
from fixtures_layouts import corrupt, write_lvos, write_mose, write_palette_png, write_youtube_vos

from unifusion_sam.data.io import DataError, DataWarning
from unifusion_sam.data.readers import LVOS, MOSE, VOSFolder, YouTubeVOS, load_video_annotation, materialize


@pytest.fixture
def ytvos(tmp_path):
    return write_youtube_vos(tmp_path, "valid")


def test_train_every_frame_annotated(tmp_path, ytvos):
    reader = YouTubeVOS(tmp_path, "train")
    assert [r.name for r in reader] == ["t1", "t2"]
    rec = reader[0]
    assert rec.frame_names == ["00000", "00005", "00010"]  # every 5th frame of the video
    assert sorted(rec.annotations) == [0, 1, 2]
    assert rec.object_ids == [1, 2] and rec.first_frame == {1: 0, 2: 0}
    assert rec.meta["objects"][2] == {"category": "dog", "seen": True}
    for t, name in enumerate(rec.frame_names):
        np.testing.assert_array_equal(load_video_annotation(rec, t), ytvos["videos"][("train", "t1")]["labels"][name])


def test_valid_late_object_and_seen_flags(tmp_path, ytvos):
    reader = YouTubeVOS(tmp_path, "valid", year=2018)
    a, b = reader[0], reader[1]
    assert a.meta["objects"] == {1: {"category": "dog", "seen": True}}
    assert b.frame_names == ["00000", "00005", "00010", "00015"]
    assert sorted(b.annotations) == [0, 2]  # a label map only where an object first appears
    assert b.object_ids == [1, 2] and b.first_frame == {1: 0, 2: 2}
    assert b.meta["objects"][2] == {"category": "zebra", "seen": False}  # not a train category
    assert b.meta["eval_frame_names"] == ["00000", "00005", "00010", "00015"]
    assert b.meta["dataset"] == "youtube-vos-2018"
    late = load_video_annotation(b, 2)
    assert set(np.unique(late)) == {0, 2}
    np.testing.assert_array_equal(late, ytvos["videos"][("valid", "b")]["labels"]["00010"])
    assert materialize(b).frames[3].shape == (8, 12, 3)


def test_valid_all_frames(tmp_path, ytvos):
    b = YouTubeVOS(tmp_path, "valid", all_frames=True)[1]
    assert len(b) == 16 and b.frame_names[:3] == ["00000", "00001", "00002"]
    assert sorted(b.annotations) == [0, 10] and b.first_frame == {1: 0, 2: 10}  # matched by frame name
    assert b.meta["eval_frame_names"] == ["00000", "00005", "00010", "00015"]  # what the benchmark scores
    # the all-frames folder may also sit under <root>/all_frames/
    (tmp_path / "all_frames").mkdir()
    (tmp_path / "valid_all_frames").rename(tmp_path / "all_frames" / "valid_all_frames")
    assert len(YouTubeVOS(tmp_path, "valid", all_frames=True)[1]) == 16


def test_validation(tmp_path, ytvos):
    with pytest.raises(ValueError, match="split"):
        YouTubeVOS(tmp_path, "val")
    with pytest.raises(ValueError, match="year"):
        YouTubeVOS(tmp_path, "valid", year=2021)
    with pytest.raises(DataError, match="nope"):
        YouTubeVOS(tmp_path / "nope", "valid")
    with pytest.raises(DataError, match="test"):
        YouTubeVOS(tmp_path, "test")


def test_label_map_that_disagrees_with_meta(tmp_path, ytvos):
    png = tmp_path / "valid" / "Annotations" / "b" / "00010.png"
    label = ytvos["videos"][("valid", "b")]["labels"]["00010"].copy()
    label[0, 0] = 3  # object 3 is not in valid/meta.json
    write_palette_png(png, label)
    reader = YouTubeVOS(tmp_path, "valid")
    with pytest.raises(DataError, match=r"ids \[3\]"):
        reader[1]
    with pytest.warns(DataWarning, match=r"ids \[3\]"):
        assert [r.name for r in YouTubeVOS(tmp_path, "valid", on_error="skip")] == ["a"]
    # meta lists object 2 from 00005 but its mask is given at 00010
    meta_path = tmp_path / "valid" / "meta.json"
    meta = json.loads(meta_path.read_text())
    label[0, 0] = 0
    write_palette_png(png, label)
    meta["videos"]["b"]["objects"]["2"]["frames"] = ["00005", "00010", "00015"]
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(DataError, match="first appears in frame 00010"):
        YouTubeVOS(tmp_path, "valid")[1]


def test_train_label_ids_checked_on_load(tmp_path, ytvos):
    label = ytvos["videos"][("train", "t2")]["labels"]["00005"].copy()
    label[0, 0] = 9
    write_palette_png(tmp_path / "train" / "Annotations" / "t2" / "00005.png", label)
    rec = YouTubeVOS(tmp_path, "train")[1]
    with pytest.raises(DataError, match=r"00005\.png.*\[9\]"):
        materialize(rec)


def test_missing_and_corrupt_files(tmp_path, ytvos):
    (tmp_path / "train" / "JPEGImages" / "t2").rename(tmp_path / "t2_moved")
    with pytest.raises(DataError, match="t2"):
        YouTubeVOS(tmp_path, "train")
    with pytest.warns(DataWarning, match="t2"):
        assert [r.name for r in YouTubeVOS(tmp_path, "train", on_error="skip")] == ["t1"]
    (tmp_path / "t2_moved").rename(tmp_path / "train" / "JPEGImages" / "t2")
    bad = corrupt(tmp_path / "train" / "JPEGImages" / "t1" / "00005.jpg")
    reader = YouTubeVOS(tmp_path, "train", on_error="skip")
    with pytest.raises(DataError, match="00005.jpg"):
        reader.load(0)
    with pytest.warns(DataWarning, match=str(bad)):
        assert [r.name for r in reader.materialized()] == ["t2"]


def test_mose(tmp_path):
    data = write_mose(tmp_path, "valid")
    reader = MOSE(tmp_path, "valid")
    m1 = reader[0]
    assert m1.name == "m1" and sorted(m1.annotations) == [0] and len(m1) == 3
    assert m1.object_ids == [1, 2] and m1.first_frame == {1: 0, 2: 0}
    np.testing.assert_array_equal(load_video_annotation(m1, 0), data["labels"][("m1", "00000")])
    write_mose(tmp_path, "train")
    train = MOSE(tmp_path, "train")[1]
    assert sorted(train.annotations) == [0, 1]
    with pytest.raises(ValueError, match="split"):
        MOSE(tmp_path, "val")


def test_lvos(tmp_path):
    write_lvos(tmp_path, "valid")
    rec = LVOS(tmp_path, "valid")[0]
    assert rec.frame_names == ["00000001", "00000006", "00000011", "00000016"]
    assert rec.object_ids == [1, 2] and rec.first_frame == {1: 0, 2: 2}  # object 2 appears late
    meta_path = tmp_path / "valid_meta.json"
    meta = json.loads(meta_path.read_text())
    del meta["videos"]["l1"]["objects"]["2"]
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(DataError, match=r"ids \[2\].*valid_meta.json"):
        LVOS(tmp_path, "valid")[0]


def test_generic_folder(tmp_path):
    write_mose(tmp_path, "valid")
    reader = VOSFolder(tmp_path / "valid" / "JPEGImages", tmp_path / "valid" / "Annotations", split="valid")
    assert [r.name for r in reader] == ["m1", "m2"]
    with pytest.raises(ValueError, match="meta_path"):
        VOSFolder(tmp_path / "valid" / "JPEGImages", None, objects_from="meta")

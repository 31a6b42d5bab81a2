import numpy as np
import pytest
from fixtures_layouts import corrupt, write_davis, write_palette_png, write_ref_davis
from PIL import Image

from unifusion_sam.data.io import DataError, DataWarning
from unifusion_sam.data.readers import DAVIS2017, RefDAVIS17, load_video_annotation, materialize, read_ref_davis_file
from unifusion_sam.data.types import VideoRecord


@pytest.fixture
def davis(tmp_path):
    return write_davis(tmp_path / "DAVIS")


def test_val_semi_supervised(tmp_path, davis):
    reader = DAVIS2017(tmp_path / "DAVIS", "val")
    assert len(reader) == 1
    rec = reader[0]
    assert isinstance(rec, VideoRecord) and rec.name == "dogs-jump"
    assert rec.frame_names == ["00000", "00001", "00002", "00003"] and len(rec) == 4
    assert sorted(rec.annotations) == [0, 1, 2, 3]  # every frame annotated
    assert rec.object_ids == [1, 2] and rec.first_frame == {1: 0, 2: 0}
    for t in range(4):
        label = load_video_annotation(rec, t)
        assert label.dtype == np.uint8
        np.testing.assert_array_equal(label, davis["labels"][("Annotations", "dogs-jump", t)])
    loaded = materialize(rec)
    assert loaded.frames[0].shape == (8, 12, 3) and loaded.annotations[3].shape == (8, 12)


def test_splits_tasks_and_validation(tmp_path, davis):
    assert [r.name for r in DAVIS2017(tmp_path / "DAVIS", "train")] == ["bear"]
    test = DAVIS2017(tmp_path / "DAVIS", "test-dev")[0]
    assert sorted(test.annotations) == [0] and test.object_ids == [1, 2] and len(test) == 3
    unsup = DAVIS2017(tmp_path / "DAVIS", "val", task="unsupervised")[0]
    assert unsup.object_ids == [1, 2, 3] and unsup.first_frame == {1: 0, 2: 0, 3: 2}  # object 3 appears late
    with pytest.raises(ValueError, match="split"):
        DAVIS2017(tmp_path / "DAVIS", "test")
    with pytest.raises(ValueError, match="task"):
        DAVIS2017(tmp_path / "DAVIS", "val", task="interactive")
    with pytest.raises(DataError, match="missing"):
        DAVIS2017(tmp_path / "missing", "val")
    with pytest.raises(DataError, match="test-challenge.txt"):
        DAVIS2017(tmp_path / "DAVIS", "test-challenge")


def test_label_ids_must_match_objects(tmp_path, davis):
    label = davis["labels"][("Annotations", "dogs-jump", 2)].copy()
    label[0, 0] = 7  # an id the first frame does not define
    png = write_palette_png(tmp_path / "DAVIS" / "Annotations" / "480p" / "dogs-jump" / "00002.png", label)
    rec = DAVIS2017(tmp_path / "DAVIS", "val")[0]
    with pytest.raises(DataError, match=r"00002\.png.*\[7\]"):
        load_video_annotation(rec, 2)
    with pytest.raises(DataError, match="00002.png"):
        materialize(rec)
    reader = DAVIS2017(tmp_path / "DAVIS", "val", on_error="skip")
    with pytest.warns(DataWarning, match=str(png)):
        assert list(reader.materialized()) == []
    # void (255) is not an object
    label[0, 0] = 255
    write_palette_png(png, label)
    assert 255 not in materialize(DAVIS2017(tmp_path / "DAVIS", "val")[0]).object_ids


def test_non_palette_annotation_is_refused(tmp_path, davis):
    png = tmp_path / "DAVIS" / "Annotations" / "480p" / "dogs-jump" / "00001.png"
    Image.fromarray(davis["labels"][("Annotations", "dogs-jump", 1)] * 100, mode="L").save(png)
    with pytest.raises(DataError, match="00001.png"):
        materialize(DAVIS2017(tmp_path / "DAVIS", "val")[0])


def test_structural_problems_raise_or_skip(tmp_path, davis):
    stray = write_palette_png(tmp_path / "DAVIS" / "Annotations" / "480p" / "bear" / "00009.png", np.zeros((8, 12)))
    with pytest.raises(DataError, match="00009.png"):
        DAVIS2017(tmp_path / "DAVIS", "train")
    with pytest.warns(DataWarning, match=str(stray)):
        assert len(DAVIS2017(tmp_path / "DAVIS", "train", on_error="skip")) == 0
    stray.unlink()
    (tmp_path / "DAVIS" / "Annotations" / "480p" / "bear" / "00000.png").unlink()
    with pytest.raises(DataError, match="first frame"):
        DAVIS2017(tmp_path / "DAVIS", "train")


def test_corrupt_frame(tmp_path, davis):
    bad = corrupt(tmp_path / "DAVIS" / "JPEGImages" / "480p" / "dogs-jump" / "00001.jpg")
    reader = DAVIS2017(tmp_path / "DAVIS", "val", on_error="skip")
    with pytest.raises(DataError, match="00001.jpg"):
        reader.load(0)
    with pytest.warns(DataWarning, match=str(bad)):
        assert list(reader.materialized()) == []
    with pytest.warns(DataWarning, match=str(bad)):
        assert len(DAVIS2017(tmp_path / "DAVIS", "val", on_error="skip", verify=True)) == 0


def test_ref_davis17(tmp_path):
    data = write_ref_davis(tmp_path)
    reader = RefDAVIS17(tmp_path, "val")
    assert len(reader) == 1
    rec = reader[0]
    assert rec.name == "classic-car"  # "clasic-car" in the text files
    assert rec.object_ids == [1, 2, 3] and rec.first_frame[3] == 1  # unsupervised annotations
    assert rec.expressions == {
        "0": (1, "a silver car"),
        "1": (1, "the car driving away"),
        "2": (1, "voiture argentée café"),  # annotator 2 file is Latin-1
        "7": (2, "a woman"),
        "8": (3, "a man walking in"),
    }
    assert rec.meta["expression_info"]["7"] == {"annotator": 2, "kind": "full", "obj_id": 2}
    only_first = RefDAVIS17(tmp_path, "val", annotators=(1,), kinds=("first",))[0]
    assert only_first.expressions == {"0": (1, "a silver car"), "8": (3, "a man walking in")}
    train = RefDAVIS17(tmp_path, "train")[0]
    assert train.name == "bear" and len(train.expressions) == 4
    rows = read_ref_davis_file(data["text_root"] / "Davis17_annot1.txt", "utf-8")
    assert rows[0] == ("classic-car", 1, "a silver car", 1)


def test_ref_davis17_errors(tmp_path):
    data = write_ref_davis(tmp_path)
    path = data["text_root"] / "Davis17_annot1.txt"
    path.write_text(path.read_text() + 'clasic-car 9 "nobody"\n')
    with pytest.raises(DataError, match=r"Davis17_annot1\.txt line 4.*object 9"):
        RefDAVIS17(tmp_path, "val")[0]
    reader = RefDAVIS17(tmp_path, "val", on_error="skip")
    with pytest.warns(DataWarning, match="object 9"):
        assert list(reader) == []
    path.write_text("clasic-car one 'bad'\n")
    with pytest.raises(DataError, match="line 1"):
        RefDAVIS17(tmp_path, "val")
    path.write_text('clasic-car 1 "a silver car"\n')
    (data["text_root"] / "Davis17_annot2.txt").unlink()
    assert RefDAVIS17(tmp_path, "val", annotators=(1,))[0].expressions["0"] == (1, "a silver car")
    with pytest.raises(DataError, match="Davis17_annot2.txt"):
        RefDAVIS17(tmp_path, "val", annotators=(2,))
    with pytest.raises(ValueError, match="split"):
        RefDAVIS17(tmp_path, "test-dev")

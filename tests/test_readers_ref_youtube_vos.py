import json

import numpy as np
import pytest
from fixtures_layouts import corrupt, write_palette_png, write_ref_youtube_vos

from unifusion_sam.data.io import DataError, DataWarning
from unifusion_sam.data.readers import RefYouTubeVOS, load_video_annotation, materialize


@pytest.fixture
def rytvos(tmp_path):
    return write_ref_youtube_vos(tmp_path)


def test_train_records(tmp_path, rytvos):
    reader = RefYouTubeVOS(tmp_path, "train")
    assert [r.name for r in reader] == ["v1", "v2"]
    v1 = reader[0]
    assert v1.frame_names == ["00000", "00005", "00010"] and sorted(v1.annotations) == [0, 1, 2]
    assert v1.expressions == {"0": (1, "the person number 0"), "1": (2, "the skateboard number 1")}
    assert v1.object_ids == [1, 2] and v1.first_frame == {1: 0, 2: 1}  # object 2 appears in frame 00005
    assert v1.meta["objects"][2] == {"category": "skateboard"}
    for t, name in enumerate(v1.frame_names):
        np.testing.assert_array_equal(load_video_annotation(v1, t), rytvos["labels"]["v1"][name])
    assert materialize(v1).frames[0].shape == (8, 12, 3)


def test_first_frames_from_label_maps_without_meta(tmp_path, rytvos):
    (tmp_path / "train" / "meta.json").unlink()
    v1 = RefYouTubeVOS(tmp_path, "train")[0]
    assert v1.object_ids == [1, 2] and v1.first_frame == {1: 0, 2: 1}


def test_valid_excludes_test_videos(tmp_path, rytvos):
    valid = RefYouTubeVOS(tmp_path, "valid")
    assert [r.name for r in valid] == ["va"]
    va = valid[0]
    assert va.annotations == {} and va.object_ids == []
    assert va.expressions == {"0": (-1, "a thing in va"), "1": (-1, "another thing in va")}
    assert [r.name for r in RefYouTubeVOS(tmp_path, "valid", exclude_test=False)] == ["va", "vt"]
    assert [r.name for r in RefYouTubeVOS(tmp_path, "test")] == ["vt"]
    with pytest.raises(ValueError, match="split"):
        RefYouTubeVOS(tmp_path, "val")
    with pytest.raises(DataError, match="nope"):
        RefYouTubeVOS(tmp_path / "nope")


def test_expression_of_unknown_object(tmp_path, rytvos):
    path = tmp_path / "meta_expressions" / "train" / "meta_expressions.json"
    data = json.loads(path.read_text())
    data["videos"]["v2"]["expressions"]["0"]["obj_id"] = "4"
    path.write_text(json.dumps(data))
    with pytest.raises(DataError, match="object 4"):
        RefYouTubeVOS(tmp_path, "train")
    with pytest.warns(DataWarning, match="object 4"):
        assert [r.name for r in RefYouTubeVOS(tmp_path, "train", on_error="skip")] == ["v1"]


def test_missing_files(tmp_path, rytvos):
    (tmp_path / "train" / "Annotations" / "v2" / "00005.png").unlink()
    with pytest.raises(DataError, match="00005.png"):
        RefYouTubeVOS(tmp_path, "train")
    (tmp_path / "valid" / "JPEGImages" / "va" / "00010.jpg").unlink()
    with pytest.warns(DataWarning, match="00010"):
        assert len(RefYouTubeVOS(tmp_path, "valid", on_error="skip")) == 0


def test_label_ids_and_corrupt_frames(tmp_path, rytvos):
    label = rytvos["labels"]["v2"]["00000"].copy()
    label[0, 0] = 5
    write_palette_png(tmp_path / "train" / "Annotations" / "v2" / "00000.png", label)
    with pytest.raises(DataError, match=r"\[5\]"):
        RefYouTubeVOS(tmp_path, "train").load(1)
    bad = corrupt(tmp_path / "train" / "JPEGImages" / "v1" / "00010.jpg")
    reader = RefYouTubeVOS(tmp_path, "train", on_error="skip")
    with pytest.warns(DataWarning) as caught:
        assert list(reader.materialized()) == []
    assert any(str(bad) in str(w.message) for w in caught)

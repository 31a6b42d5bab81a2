import numpy as np
import pytest
from fixtures_layouts import corrupt, write_fss1000

from unifusion_sam.data.io import DataError, DataWarning
from unifusion_sam.data.readers import FSS1000, fss1000_split_classes, materialize
from unifusion_sam.data.types import FewShotEpisode


@pytest.fixture
def fss(tmp_path):
    return write_fss1000(tmp_path, classes=("bus", "swan", "ab_wheel"))


def _split_file(tmp_path, *classes):
    path = tmp_path / f"classes_{'_'.join(classes)}.txt"
    path.write_text("\n".join(classes) + "\n")
    return path


def _signature(reader):
    return [(e.episode_id, e.meta["query_name"], tuple(e.meta["support_names"])) for e in reader]


def test_packaged_test_split():
    test = fss1000_split_classes("test")
    assert len(test) == 240 and len(set(test)) == 240
    assert "abe's_flyingfish" in test and "tower_pisa" in test and "ab_wheel" not in test


def test_test_split_on_partial_root(tmp_path, fss):
    with pytest.raises(DataError, match="class folder not found"):
        FSS1000(tmp_path, "test")
    with pytest.warns(DataWarning, match="class folder not found") as caught:
        reader = FSS1000(tmp_path, "test", on_error="skip")
    assert len(caught) == 238
    assert sorted({e.class_name for e in reader}) == ["bus", "swan"]
    assert len(reader) == 20  # HSNet schedule: every image of the class is the query once
    assert [c for c in FSS1000(tmp_path, "trainval").classes] == ["ab_wheel"]
    assert FSS1000(tmp_path, "all").classes == ["ab_wheel", "bus", "swan"]
    with pytest.raises(ValueError, match="split"):
        FSS1000(tmp_path, "trn")


def test_train_split_needs_a_list(tmp_path, fss):
    try:
        fss1000_split_classes("train")
    except DataError as err:
        assert "split_file" in str(err)
        reader = FSS1000(tmp_path, "train", split_file=_split_file(tmp_path, "ab_wheel"))
        assert reader.classes == ["ab_wheel"]
    else:  # pragma: no cover - when the list is shipped
        pytest.skip("the train list is packaged")


def test_episodes_are_seeded_and_valid(tmp_path, fss):
    split_file = _split_file(tmp_path, "bus", "swan")
    one = FSS1000(tmp_path, "test", shot=5, seed=3, split_file=split_file)
    assert _signature(one) == _signature(FSS1000(tmp_path, "test", shot=5, seed=3, split_file=split_file))
    assert _signature(one) != _signature(FSS1000(tmp_path, "test", shot=5, seed=4, split_file=split_file))
    for ep in one:
        assert isinstance(ep, FewShotEpisode)
        names = ep.meta["support_names"]
        assert len(names) == 5 and len(set(names)) == 5 and ep.meta["query_name"] not in names
        assert all(p.parent.name == ep.class_name for p in ep.support_images)
    # a class's episodes do not depend on which other classes are read
    alone = FSS1000(tmp_path, "test", shot=5, seed=3, split_file=_split_file(tmp_path, "swan"))
    assert _signature(alone) == [s for s in _signature(one) if s[0].startswith("swan/")]
    many = FSS1000(tmp_path, "test", shot=1, episodes_per_class=25, split_file=split_file)
    assert len(many) == 50
    queries = [e.meta["query_name"] for e in many if e.class_name == "bus"]
    assert sorted(set(queries), key=int) == [str(n) for n in range(1, 11)]  # every image queried 2-3 times


def test_masks_threshold_and_materialize(tmp_path, fss):
    reader = FSS1000(tmp_path, "all", shot=1)
    ep = reader[0]
    expected = fss["masks"][(ep.class_name, ep.meta["query_name"])]
    np.testing.assert_array_equal(ep.query_mask, expected)
    assert not ep.query_mask[0, 0] and ep.query_mask[0, 1]  # 127 -> background, 128 -> foreground
    loaded = materialize(ep)
    assert loaded.query_image.shape == (8, 10, 3) and loaded.support_images[0].shape == (8, 10, 3)


def test_missing_mask_and_corrupt_image(tmp_path, fss):
    (tmp_path / "bus" / "3.png").unlink()
    with pytest.raises(DataError, match="3.png"):
        FSS1000(tmp_path, "all")
    with pytest.warns(DataWarning, match="3.png"):
        reader = FSS1000(tmp_path, "all", on_error="skip")
    assert len([e for e in reader if e.class_name == "bus"]) == 9
    for n in range(1, 11):
        (tmp_path / "swan" / f"{n}.png").unlink(missing_ok=n > 1)
    with pytest.warns(DataWarning) as caught:
        assert "swan" not in {e.class_name for e in FSS1000(tmp_path, "all", on_error="skip")}
    assert any("need >= 2" in str(w.message) for w in caught)

    bad = corrupt(tmp_path / "ab_wheel" / "1.jpg")
    reader = FSS1000(tmp_path, "all", on_error="skip", split_file=_split_file(tmp_path, "ab_wheel"))
    with pytest.raises(DataError, match="1.jpg"):
        reader.load(0)  # episode 0 has image 1 as its query
    with pytest.warns(DataWarning, match=str(bad)):
        episodes = list(reader.materialized())
    assert len(episodes) < len(reader)

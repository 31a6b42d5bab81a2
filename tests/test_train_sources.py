"""Training sources: the ``first_ref`` option gives VOS / RVOS samples the object's first frame too; ``ref_noise``
deforms their previous-frame reference mask."""

import numpy as np
import pytest
from fixtures_layouts import write_davis

from unifusion_sam.data.synthetic import SyntheticConfig
from unifusion_sam.data.synthetic.videos import sample_video
from unifusion_sam.training import build_source
from unifusion_sam.training.config import DataSource


@pytest.mark.parametrize("task", ["vos", "rvos"])
def test_synthetic_first_ref_prepends_the_objects_first_frame(task):
    plain = build_source(DataSource(kind="synthetic", task=task, ratio=1), 64, 0)
    first = build_source(DataSource(kind="synthetic", task=task, ratio=1, options={"first_ref": True}), 64, 0)
    config = SyntheticConfig(seed=0, image_size=(64, 64))
    seen_two = 0
    for seed in range(12):
        a, b = plain.sample(np.random.default_rng(seed)), first.sample(np.random.default_rng(seed))
        assert np.array_equal(a.image, b.image) and np.array_equal(a.mask, b.mask) and a.text == b.text
        if not a.ref_images:  # an RVOS sample with the language only stays so
            assert not b.ref_images
            continue
        # the sampled reference stays, last
        assert np.array_equal(a.ref_images[-1], b.ref_images[-1]) and np.array_equal(a.ref_masks[-1], b.ref_masks[-1])
        index = int(b.meta["key"].rsplit(":", 1)[1])
        spec = sample_video(config, "train", index)
        obj, r = b.meta["object_id"], b.meta["ref_frame"]
        birth = spec.birth[obj - 1]
        assert len(b.ref_images) == (2 if birth < r else 1)
        assert len(b.meta["ref_keys"]) == len(b.ref_images)
        if birth < r:
            seen_two += 1
            image, labels = spec.render(birth)
            assert np.array_equal(b.ref_images[0], image) and np.array_equal(b.ref_masks[0], labels == obj)
            assert b.ref_masks[0].any()
    assert seen_two >= 3


def test_video_reader_first_ref_prepends_the_first_annotated_frame(tmp_path):
    write_davis(tmp_path / "davis", videos={"v": {"split": "train", "frames": 8, "objects": {1: 0, 2: 0}}})
    plain = build_source(DataSource(kind="davis2017", task="vos", ratio=1, root=str(tmp_path / "davis"),
                                    split="train"), 64, 0)
    first = build_source(DataSource(kind="davis2017", task="vos", ratio=1, root=str(tmp_path / "davis"),
                                    split="train", options={"first_ref": True}), 64, 0)
    seen_two = 0
    for seed in range(20):
        a, b = plain.sample(np.random.default_rng(seed)), first.sample(np.random.default_rng(seed))
        assert np.array_equal(a.mask, b.mask)
        assert np.array_equal(a.ref_masks[-1], b.ref_masks[-1])
        assert len(b.ref_images) == len(b.meta["ref_keys"])
        if len(b.ref_images) == 2:
            seen_two += 1
            assert b.meta["ref_keys"][0].endswith("00000.jpg")  # every object is annotated from frame 0
            assert b.ref_masks[0].any()
        else:
            assert a.meta["ref_keys"] == b.meta["ref_keys"] and a.meta["ref_keys"][0].endswith("00000.jpg")
    assert seen_two >= 5


def test_first_ref_is_checked_before_training():
    with pytest.raises(ValueError, match="vos or rvos"):
        build_source(DataSource(kind="synthetic", task="ris", ratio=1), 64, 0).dataset.video_sample(0)
    with pytest.raises(TypeError, match="first_ref must be true or false"):
        DataSource(kind="synthetic", task="vos", options={"first_ref": "yes"})
    with pytest.raises(ValueError, match="for video sources"):
        DataSource(kind="synthetic", task="ris", options={"first_ref": True})
    assert DataSource(kind="synthetic", task="rvos", options={"first_ref": False}).options == {"first_ref": False}


def test_perturb_mask_dilates_erodes_or_shifts_by_a_few_pixels():
    from scipy import ndimage

    from unifusion_sam.training.sources import perturb_mask

    mask = np.zeros((40, 40), bool)
    mask[10:30, 12:28] = True  # 320 px: k = 1 at the default scale (0.05 * sqrt(320) = 0.9)
    seen = set()
    for seed in range(30):
        out = perturb_mask(mask, np.random.default_rng(seed))
        if np.array_equal(out, ndimage.binary_dilation(mask)):
            seen.add("dilate")
        elif np.array_equal(out, ndimage.binary_erosion(mask)):
            seen.add("erode")
        else:
            ys, xs = np.nonzero(out)
            shift = (ys.min() - 10, xs.min() - 12)
            assert out.sum() == mask.sum() and max(abs(shift[0]), abs(shift[1])) <= 1, shift
            seen.add("shift")
    assert seen == {"dilate", "erode", "shift"}
    empty = np.zeros((8, 8), bool)
    assert not perturb_mask(empty, np.random.default_rng(0)).any()
    dot = np.zeros((8, 8), bool)
    dot[4, 4] = True
    for seed in range(10):  # erosion or a shift never empties a mask
        assert perturb_mask(dot, np.random.default_rng(seed)).any()


@pytest.mark.parametrize("task", ["vos", "rvos"])
def test_ref_noise_deforms_only_the_previous_reference(task):
    opts = {"first_ref": True, "pool": 20}
    plain = build_source(DataSource(kind="synthetic", task=task, options=opts), 64, 0)
    noisy = build_source(DataSource(kind="synthetic", task=task, options={**opts, "ref_noise": 1.0}), 64, 0)
    changed = 0
    for seed in range(12):
        a, b = plain.sample(np.random.default_rng(seed)), noisy.sample(np.random.default_rng(seed))
        np.testing.assert_array_equal(a.mask, b.mask)  # the same sample ...
        assert len(a.ref_masks) == len(b.ref_masks) and a.meta["key"] == b.meta["key"]
        for x, y in zip(a.ref_images, b.ref_images):
            np.testing.assert_array_equal(x, y)
        if len(a.ref_masks) == 2:  # ... whose first-frame reference stays the ground truth
            np.testing.assert_array_equal(a.ref_masks[0], b.ref_masks[0])
        if a.ref_masks:
            changed += not np.array_equal(a.ref_masks[-1], b.ref_masks[-1])
    assert changed >= 6
    never = build_source(DataSource(kind="synthetic", task=task, options={**opts, "ref_noise": 0.0}), 64, 0)
    s = never.sample(np.random.default_rng(3))
    t = plain.sample(np.random.default_rng(3))
    assert all(np.array_equal(x, y) for x, y in zip(s.ref_masks, t.ref_masks))


def test_ref_noise_is_checked_before_training():
    with pytest.raises(ValueError, match=r"ref_noise must be in \[0, 1\], got 1.5"):
        DataSource(kind="synthetic", task="vos", options={"ref_noise": 1.5})
    with pytest.raises(ValueError, match="ref_noise is for video sources"):
        DataSource(kind="synthetic", task="fss", options={"ref_noise": 0.5})

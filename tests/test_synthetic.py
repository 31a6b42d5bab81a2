"""The synthetic data generator: determinism, unique sentences, masks, episodes, videos, config."""

from __future__ import annotations

import json
import re
import time

import numpy as np
import pytest

from unifusion_sam.data.synthetic import (
    SHAPE_CLASSES,
    SyntheticConfig,
    SyntheticDataset,
    flip_sentence,
)
from unifusion_sam.data.types import FewShotEpisode, ReferringExpression, RefSample, VideoRecord

CFG = SyntheticConfig()
N_CHECK = 120


def _arrays(sample: RefSample) -> list[np.ndarray]:
    return [sample.image, sample.mask, *sample.ref_images, *sample.ref_masks]


def _same(a: RefSample, b: RefSample) -> bool:
    xa, xb = _arrays(a), _arrays(b)
    return a.text == b.text and len(xa) == len(xb) and all(
        x.dtype == y.dtype and x.shape == y.shape and x.tobytes() == y.tobytes() for x, y in zip(xa, xb))


# ----------------------------------------------------------------------------- determinism
@pytest.mark.parametrize("task", ["ris", "fss", "vos", "rvos"])
def test_same_seed_same_bytes_and_order_independent(task):
    a = SyntheticDataset("train", task, 50, SyntheticConfig(seed=3))
    b = SyntheticDataset("train", task, 50, SyntheticConfig(seed=3))
    forward = [a[i] for i in (0, 7, 13)]
    backward = [b[i] for i in (13, 7, 0)][::-1]
    for x, y in zip(forward, backward):
        assert _same(x, y)
    assert _same(a[7], forward[1])  # generating again gives the same thing


@pytest.mark.parametrize("task", ["ris", "fss", "vos", "rvos"])
def test_different_seed_split_index_differ(task):
    base = SyntheticDataset("train", task, 10, SyntheticConfig(seed=0))[4]
    other_seed = SyntheticDataset("train", task, 10, SyntheticConfig(seed=1))[4]
    heldout = SyntheticDataset("heldout", task, 10, SyntheticConfig(seed=0))[4]
    other_index = SyntheticDataset("train", task, 10, SyntheticConfig(seed=0))[5]
    for other in (other_seed, heldout, other_index):
        assert not np.array_equal(base.image, other.image)


def test_raw_records_are_deterministic():
    a, b = SyntheticDataset("train", "vos", 5), SyntheticDataset("train", "rvos", 5)
    va, vb = a.video(2), b.video(2)  # VOS and RVOS share videos
    assert all(np.array_equal(x, y) for x, y in zip(va.frames, vb.frames))
    assert va.expressions == vb.expressions
    ea, eb = a.episode(3), SyntheticDataset("train", "fss", 5).episode(3)
    assert np.array_equal(ea.query_image, eb.query_image) and ea.class_name == eb.class_name


# ----------------------------------------------------------------------------- scenes and masks
@pytest.mark.parametrize("size", [(128, 128), (96, 160)])
@pytest.mark.parametrize("task", ["ris", "fss", "vos", "rvos"])
def test_sample_types_and_shapes(task, size):
    cfg = SyntheticConfig(image_size=size, num_shots=2)
    ds = SyntheticDataset("heldout", task, 6, cfg)
    assert len(ds) == 6
    for i in range(len(ds)):
        s = ds[i]
        assert isinstance(s, RefSample) and s.task == task
        assert s.image.dtype == np.uint8 and s.image.shape == (*size, 3)
        assert s.mask.dtype == bool and s.mask.shape == size
        for img, m in zip(s.ref_images, s.ref_masks):
            assert img.dtype == np.uint8 and img.shape == (*size, 3)
            assert m.dtype == bool and m.shape == size and m.any()
        if task in ("ris", "fss"):
            assert s.mask.any()
        assert len(s.ref_images) == len(s.ref_masks) == {"ris": 0, "fss": 2, "vos": 1, "rvos": 1}[task]
        assert (s.text is not None) == (task in ("ris", "rvos"))


def test_backgrounds_and_shapes_are_textured_and_sizes_differ():
    ds = SyntheticDataset("train", "ris", N_CHECK)
    for i in range(30):
        rec = ds.scene(i)
        labels = rec.meta["label_map"]
        img = rec.image.astype(np.float64)
        assert img[labels == 0].std(axis=0).max() > 2.0  # background is not flat
        areas = {"small": [], "large": []}
        for o in rec.meta["objects"]:
            m = labels == o["id"]
            assert m.any()
            assert img[m].std(axis=0).max() > 2.0  # shapes are textured
            areas[o["size"]].append(int(m.sum()))
        if areas["small"] and areas["large"]:
            assert min(areas["large"]) > 1.5 * max(areas["small"])


# ----------------------------------------------------------------------------- RIS sentences
SIZE = {"small": "small", "little": "small", "large": "large", "big": "large"}
COLOUR = {c: c for c in ("red", "green", "blue", "yellow", "purple", "orange", "white")}
NOUN = {"circle": "circle", "disc": "circle", "square": "square", "box": "square", "triangle": "triangle",
        "star": "star", "ring": "ring", "donut": "ring", "cross": "cross", "plus sign": "cross",
        "shape": None, "object": None, "thing": None}
PREFIX = {"leftmost": "left", "rightmost": "right", "topmost": "top", "highest": "top", "bottommost": "bottom",
          "lowest": "bottom"}
SUFFIX = {"on the left": "left", "on the right": "right", "at the top": "top", "on top": "top",
          "at the bottom": "bottom"}
RELATION = {"to the left of": "left", "on the left of": "left", "left of": "left", "to the right of": "right",
            "on the right of": "right", "right of": "right", "above": "top", "over": "top", "below": "bottom",
            "under": "bottom", "beneath": "bottom"}
MOTION = {"moving to the left": "left", "moving left": "left", "going left": "left", "moving to the right": "right",
          "moving right": "right", "going right": "right", "moving upwards": "top", "moving up": "top",
          "going up": "top", "moving downwards": "bottom", "moving down": "bottom", "going down": "bottom"}


def _alt(words) -> str:
    return "|".join(sorted((re.escape(w) for w in words), key=len, reverse=True))


def _noun_phrase(text: str) -> dict:
    m = re.fullmatch(rf"(?:({_alt(SIZE)}) )?(?:({_alt(COLOUR)}) )?({_alt(NOUN)})", text)
    assert m, f"cannot parse noun phrase {text!r}"
    attrs = {"size": SIZE.get(m.group(1)), "colour": m.group(2), "shape": NOUN[m.group(3)]}
    attrs = {k: v for k, v in attrs.items() if v is not None}
    assert "shape" in attrs or "colour" in attrs, text
    return attrs


def _match(objects, attrs):
    return [o for o in objects if all(o[k] == v for k, v in attrs.items())]


def _toward(o, d):
    x, y = o["c"]
    return {"left": -x, "right": x, "top": -y, "bottom": y}[d]


def _referents(sentence: str, objects: list[dict], h: int, w: int) -> list[int]:
    """Ids of the objects a sentence can mean (an independent reading of the grammar)."""
    text = re.sub(r"^(the|an|a) ", "", sentence)
    rel = re.fullmatch(rf"(.+?) ({_alt(RELATION)}) the (.+)", text)
    if rel:
        d = RELATION[rel.group(2)]
        anchors = _match(objects, _noun_phrase(rel.group(3)))
        assert len(anchors) == 1, f"anchor of {sentence!r} is ambiguous"
        side = h if d in ("top", "bottom") else w
        group = [o for o in _match(objects, _noun_phrase(rel.group(1))) if o is not anchors[0]]
        return [o["id"] for o in group if _toward(o, d) - _toward(anchors[0], d) > 0.06 * side]
    pre = re.fullmatch(rf"({_alt(PREFIX)}) (.+)", text)
    suf = re.fullmatch(rf"(.+) ({_alt(SUFFIX)})", text)
    if pre or suf:
        d, np_text = (PREFIX[pre.group(1)], pre.group(2)) if pre else (SUFFIX[suf.group(2)], suf.group(1))
        group = sorted(_match(objects, _noun_phrase(np_text)), key=lambda o: -_toward(o, d))
        side = h if d in ("top", "bottom") else w
        assert len(group) >= 2 and _toward(group[0], d) - _toward(group[1], d) > 0.04 * side, sentence
        return [group[0]["id"]]
    return [o["id"] for o in _match(objects, _noun_phrase(text))]


def test_every_ris_sentence_is_unique():
    ds = SyntheticDataset("train", "ris", N_CHECK, SyntheticConfig(image_size=(112, 144)))
    kinds, words = set(), set()
    for i in range(N_CHECK):
        rec = ds.scene(i)
        assert isinstance(rec, ReferringExpression)
        labels = rec.meta["label_map"]
        h, w = labels.shape
        objects = []
        for o in rec.meta["objects"]:
            ys, xs = np.nonzero(labels == o["id"])
            objects.append({"id": o["id"], "shape": o["shape"], "colour": o["colour"], "size": o["size"],
                            "c": (xs.mean() + 0.5, ys.mean() + 0.5)})
        target = rec.meta["target_id"]
        assert np.array_equal(rec.mask, labels == target) and rec.mask.any()
        assert _referents(rec.sentence, objects, h, w) == [target], (i, rec.sentence, rec.meta["objects"])
        kinds.add(rec.meta["kind"])
        words.update(rec.sentence.split())
    assert kinds == {"attribute", "extreme", "relation"}
    assert words & set(SIZE) and words & set(COLOUR) and words & {"left", "leftmost", "right", "rightmost"}


def test_every_shape_of_a_scene_is_mostly_visible():
    from unifusion_sam.data.synthetic import item_rng, sample_scene
    from unifusion_sam.data.synthetic.shapes import shape_box, shape_mask

    for i in range(40):
        scene = sample_scene(item_rng(0, "train", "ris", i), CFG)
        assert 2 <= len(scene.shapes) <= 5
        for k, spec in zip(scene.object_ids, scene.shapes):
            full = shape_mask(spec, shape_box(spec, *CFG.image_size)).sum()
            assert scene.mask(k).sum() >= 0.7 * full > 0


# ----------------------------------------------------------------------------- FSS
def test_fss_episodes_share_class_and_differ():
    cfg = SyntheticConfig(num_shots=3)
    ds = SyntheticDataset("train", "fss", 12, cfg)
    seen = set()
    for i in range(12):
        ep = ds.episode(i)
        assert isinstance(ep, FewShotEpisode) and len(ep.support_images) == len(ep.support_masks) == 3
        seen.add(ep.class_name)
        images = [ep.query_image, *ep.support_images]
        for a in range(len(images)):
            for b in range(a + 1, len(images)):
                assert not np.array_equal(images[a], images[b])
        for objs, mask in zip([ep.meta["query_objects"], *ep.meta["support_objects"]],
                              [ep.query_mask, *ep.support_masks]):
            assert mask.dtype == bool and mask.any()
            assert any(kind == ep.class_name for kind, _, _ in objs)
        s = ds[i]
        assert s.meta["class_name"] == ep.class_name and np.array_equal(s.mask, ep.query_mask)
    assert seen == set(SHAPE_CLASSES)
    assert len(ds.episode(0, num_shots=5).support_images) == 5


def test_fss_mask_is_union_of_class_instances():
    from unifusion_sam.data.synthetic import item_rng, sample_scene

    for i in range(10):
        scene = sample_scene(item_rng(0, "train", "fss", i), CFG, forced_kind="ring")
        expected = np.zeros(CFG.image_size, bool)
        for k, s in zip(scene.object_ids, scene.shapes):
            if s.kind == "ring":
                expected |= scene.label_map == k
        assert np.array_equal(scene.class_mask("ring"), expected) and expected.any()


# ----------------------------------------------------------------------------- videos
def _video_objects(rec: VideoRecord):
    return {k: dict(rec.meta["objects"][k], id=k) for k in rec.object_ids}


def test_videos_move_occlude_and_objects_enter_late():
    cfg = SyntheticConfig(late_entry_prob=0.5)
    ds = SyntheticDataset("train", "vos", 40, cfg)
    late_videos = 0
    for i in range(40):
        rec = ds.video(i)
        assert len(rec) == cfg.num_frames == len(rec.annotations) == len(rec.frame_names)
        assert 2 <= len(rec.object_ids) <= 4
        for k in rec.object_ids:
            ff = rec.first_frame[k]
            present = [t for t in range(len(rec)) if (rec.annotations[t] == k).any()]
            assert present[0] == ff
            assert all(not (rec.annotations[t] == k).any() for t in range(ff))
            c = np.array(rec.meta["objects"][k]["centres"])
            assert np.linalg.norm(c[-1] - c[ff]) > 1.0 or np.abs(np.diff(c[ff:], axis=0)).sum() > 5.0
        if max(rec.first_frame.values()) > 0:
            late_videos += 1
        for t in range(len(rec)):
            assert rec.annotations[t].dtype == np.uint8 and rec.frames[t].dtype == np.uint8
    assert 8 <= late_videos <= 32


def _moving(obj, d):
    c = np.array(obj["centres"])[obj["first"]:]
    steps = np.diff(c, axis=0)
    dx, dy = steps[:, 0], steps[:, 1]
    ok = {"left": (np.abs(dx) > np.abs(dy)) & (dx < 0), "right": (np.abs(dx) > np.abs(dy)) & (dx > 0),
          "top": (np.abs(dy) > np.abs(dx)) & (dy < 0), "bottom": (np.abs(dy) > np.abs(dx)) & (dy > 0)}[d]
    return len(steps) > 0 and ok.mean() > 0.5


def test_rvos_expressions_are_unique():
    ds = SyntheticDataset("heldout", "rvos", 40)
    n_motion = 0
    for i in range(40):
        rec = ds.video(i)
        assert rec.expressions
        objects = _video_objects(rec)
        for o in objects.values():
            o["first"] = rec.first_frame[o["id"]]
        for _exp_id, (obj, sentence) in rec.expressions.items():
            text = re.sub(r"^(the|an|a) ", "", sentence)
            m = re.fullmatch(rf"(.+) ({_alt(MOTION)})", text)
            if m:
                n_motion += 1
                d = MOTION[m.group(2)]
                hits = [o["id"] for o in _match(objects.values(), _noun_phrase(m.group(1))) if _moving(o, d)]
            else:
                hits = [o["id"] for o in _match(objects.values(), _noun_phrase(text))]
            assert hits == [obj], (i, sentence, objects)
    assert n_motion > 40


@pytest.mark.parametrize("task", ["vos", "rvos"])
def test_video_samples_match_records(task):
    cfg = SyntheticConfig(max_ref_gap=4)
    ds = SyntheticDataset("train", task, 15, cfg)
    for i in range(15):
        s, rec = ds[i], ds.video(i)
        t, r, obj = s.meta["frame"], s.meta["ref_frame"], s.meta["object_id"]
        assert 1 <= t - r <= 4 and r >= rec.first_frame[obj]
        assert np.array_equal(s.image, rec.frames[t]) and np.array_equal(s.ref_images[0], rec.frames[r])
        assert np.array_equal(s.mask, rec.annotations[t] == obj)
        assert np.array_equal(s.ref_masks[0], rec.annotations[r] == obj) and s.ref_masks[0].any()
        if task == "rvos":
            assert rec.expressions[s.meta["exp_id"]] == (obj, s.text)


# ----------------------------------------------------------------------------- flip_sentence
@pytest.mark.parametrize("text, flipped", [
    ("the red circle on the left", "the red circle on the right"),
    ("the leftmost star", "the rightmost star"),
    ("the star to the right of the green square", "the star to the left of the green square"),
    ("Left man, RIGHT of the leftover rightmost dog", "Right man, LEFT of the leftover leftmost dog"),
    ("the yellow shape at the top", "the yellow shape at the top"),
])
def test_flip_sentence(text, flipped):
    assert flip_sentence(text) == flipped
    assert flip_sentence(flipped) == text


def test_flip_sentence_is_an_involution_on_generated_sentences():
    ds = SyntheticDataset("train", "ris", 60)
    for i in range(60):
        s = ds[i].text
        assert flip_sentence(flip_sentence(s)) == s


# ----------------------------------------------------------------------------- config and dataset
def test_config_json_round_trip(tmp_path):
    cfg = SyntheticConfig(seed=5, image_size=(96, 160), shape_classes=("circle", "star", "ring"), num_shots=2)
    again = SyntheticConfig.from_json(cfg.to_json())
    assert again == cfg and isinstance(again.image_size, tuple)
    assert json.loads(cfg.to_json())["image_size"] == [96, 160]
    cfg.save(tmp_path / "synthetic.json")
    assert SyntheticConfig.load(tmp_path / "synthetic.json") == cfg
    assert SyntheticConfig(image_size=64).image_size == (64, 64)


@pytest.mark.parametrize("kwargs, exc", [
    ({"seed": -1}, ValueError), ({"seed": 1.5}, TypeError), ({"image_size": (32, 128)}, ValueError),
    ({"image_size": (128,)}, TypeError), ({"image_size": "128"}, TypeError), ({"min_shapes": 1}, ValueError),
    ({"min_shapes": 4, "max_shapes": 3}, ValueError), ({"max_shapes": 2.0}, TypeError),
    ({"shape_classes": ("circle", "hexagon")}, ValueError), ({"colours": ("red",)}, ValueError),
    ({"colours": "red"}, TypeError), ({"large_radius": 0.08}, ValueError), ({"min_visible": 1.5}, ValueError),
    ({"late_entry_prob": -0.1}, ValueError), ({"num_frames": 1}, ValueError), ({"max_ref_gap": 0}, ValueError),
    ({"max_video_objects": 9}, ValueError), ({"twin_prob": "0.3"}, TypeError),
])
def test_invalid_config_raises(kwargs, exc):
    with pytest.raises(exc) as info:
        SyntheticConfig(**kwargs)
    assert any(repr(v) in str(info.value) or str(v) in str(info.value) for v in kwargs.values())


def test_dataset_arguments_and_indexing():
    ds = SyntheticDataset("train", "ris", 3)
    assert _same(ds[-1], ds[2])
    with pytest.raises(IndexError):
        ds[3]
    with pytest.raises(ValueError, match="'val'"):
        SyntheticDataset("val", "ris", 3)
    with pytest.raises(ValueError, match="'seg'"):
        SyntheticDataset("train", "seg", 3)
    with pytest.raises(TypeError):
        SyntheticDataset("train", "ris", 3, config={"seed": 0})
    assert len(list(SyntheticDataset("train", "fss", 2).records())) == 2


def test_generation_is_cheap():
    for task in ("ris", "fss", "vos", "rvos"):
        ds = SyntheticDataset("train", task, 1000)
        ds[0]
        start = time.perf_counter()
        for i in range(1, 41):
            ds[i]
        assert (time.perf_counter() - start) / 40 < 0.025, task  # ~2 ms on the dev machine; loose for CI

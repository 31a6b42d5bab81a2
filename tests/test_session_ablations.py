"""The paper's reference ablations as switches (issue #15, item 4): ``VideoSession(mask_refs=...,
rvos_refs=...)``, ``track(...)`` on both families, ``score_videos`` and ``benchmarks/paper_ablations.py``.

Which references a decode receives is read from :class:`OracleNet` (``tests/test_video_session.py``):
each mask reference it is given carries the frame it was encoded on and the object its mask shows.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from test_video_session import OracleNet, make_video

from unifusion_sam.data.synthetic import SyntheticConfig
from unifusion_sam.evaluation.synthetic import score_videos
from unifusion_sam.inference.session import MASK_REFS, RVOS_REFS, VideoSession

ROOT = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def late_video():
    return make_video(birth=(0, 5), leave=9)  # object 2 given on frame 5, gone from frame 9


def _vos(labels, frames, **switches):
    net = OracleNet(lambda t: labels[t])
    results = list(VideoSession(net, sigma=0.4, **switches).run(frames, new_objects={0: {1: labels[0] == 1},
                                                                                     5: {2: labels[5] == 2}}))
    by_frame = {t: {row["obj"]: row["mask_refs"] for row in rows} for t, (rows,) in
                ((t, net.rows[t]) for t in range(1, len(frames)))}
    return net, results, by_frame


# ------------------------------------------------------------------ what the network receives (VOS)
def test_first_only_never_passes_the_previous_mask(late_video):
    frames, labels = late_video
    net, results, refs = _vos(labels, frames, mask_refs="first")
    for t in range(1, 12):
        assert refs[t][1] == [(0, 1)], t  # the given mask on frame 0, every frame
        if t > 5:
            assert refs[t][2] == [(5, 2)], t
    # nothing but the two given masks was ever encoded: no previous-frame reference at all
    assert {t: [(f, k) for f, k, _ in v] for t, v in net.mask_refs.items() if v} == {0: [(0, 1)], 5: [(5, 2)]}
    for t, r in enumerate(results):  # the oracle follows its references: still the ground truth
        np.testing.assert_array_equal(r.label_map, labels[t])


def test_previous_only_never_passes_the_first_reference():
    frames, labels = make_video(birth=(0, 5))  # (the stub cannot follow an object from an empty mask alone)
    net, results, refs = _vos(labels, frames, mask_refs="previous")
    for t in range(1, 12):
        assert refs[t][1] == [(t - 1, 1)], t  # frame 1: the given mask is the previous reference
        if t > 5:
            assert refs[t][2] == [(t - 1, 2)], t  # frame 6: the mask given on frame 5
    # the given masks were never encoded on their own frames (no first reference): only previous ones
    assert net.mask_refs[0] == [] and [(f, k) for f, k, _ in net.mask_refs[5]] == [(4, 1)]
    for t, r in enumerate(results):
        np.testing.assert_array_equal(r.label_map, labels[t])


def test_default_is_first_and_previous_bit_for_bit(late_video):
    frames, labels = late_video
    runs = [_vos(labels, frames), _vos(labels, frames, mask_refs="first+previous", rvos_refs="language+mask")]
    (net_a, res_a, refs_a), (net_b, res_b, refs_b) = runs
    assert refs_a == refs_b and net_a.mask_refs == net_b.mask_refs
    assert refs_a[7] == {1: [(0, 1), (6, 1)], 2: [(5, 2), (6, 2)]}
    for a, b in zip(res_a, res_b):
        np.testing.assert_array_equal(a.label_map, b.label_map)
        assert a.scores == b.scores


# ------------------------------------------------------------------ RVOS
FOUND = 3  # language-only scores pass sigma from this frame on


def _rvos(**switches):
    frames, labels = make_video(n_frames=7, birth=(0, 0))
    net = OracleNet(lambda t: labels[t], score=lambda k, t: 0.9 if k == 2 or t >= FOUND else 0.1)
    session = VideoSession(net, sigma="rvos", **switches)
    session.add_text_object(1, "object 1")  # with a VOS object in the same batch
    results = list(session.run(frames, new_objects={0: {2: labels[0] == 2}}))
    rows = {t: {row["obj"]: row for row in net.rows[t][0]} for t in range(1, 7)}
    rows[0] = {row["obj"]: row for row in net.rows[0][0]}
    return net, labels, results, rows


def test_language_only_passes_no_mask_reference_ever():
    net, labels, results, rows = _rvos(rvos_refs="language")
    for t in range(7):
        assert rows[t][1]["mask_refs"] == [] and rows[t][1]["text"] == 1, t
        if t:
            assert rows[t][2]["mask_refs"] == [(0, 2), (t - 1, 2)]  # a mask-given object is unaffected
        if t >= FOUND:
            np.testing.assert_array_equal(results[t].masks[1], labels[t] == 1)
    assert not any(k == 1 for v in net.mask_refs.values() for _, k, _ in v)  # never encoded


def test_language_only_ignores_a_given_mask_as_reference():
    frames, labels = make_video(n_frames=4, birth=(0, 0))
    net = OracleNet(lambda t: labels[t])
    session = VideoSession(net, rvos_refs="language")
    session.add_text_object(1, "object 1")
    session.add_object(1, labels[0] == 1)  # a correction: output on its frame, never a reference
    results = list(session.run(frames))
    np.testing.assert_array_equal(results[0].masks[1], labels[0] == 1)
    assert all(net.rows[t][0][0]["mask_refs"] == [] for t in range(1, 4)) and not any(net.mask_refs.values())


@pytest.mark.parametrize("mask_refs, expected", [
    ("first+previous", lambda t: [(FOUND, 1), (t - 1, 1)]),
    ("first", lambda t: [(FOUND, 1)]),
    ("previous", lambda t: [(t - 1, 1)]),
])
def test_rvos_mask_references_follow_mask_refs(mask_refs, expected):
    net, labels, results, rows = _rvos(mask_refs=mask_refs)
    for t in range(7):
        refs = rows[t][1]["mask_refs"]
        assert refs == ([] if t <= FOUND else expected(t)), (t, refs)
        assert rows[t][1]["text"] == 1
    encoded_on_found = [(f, k) for f, k, _ in net.mask_refs[FOUND] if k == 1]
    assert encoded_on_found == ([] if mask_refs == "previous" else [(FOUND, 1)])


# ------------------------------------------------------------------ bad values
@pytest.mark.parametrize("kwargs, match", [
    ({"mask_refs": "both"}, r"mask_refs must be one of .*'first\+previous'.*got 'both'"),
    ({"mask_refs": "First"}, r"got 'First'"),
    ({"mask_refs": None}, r"mask_refs .* got None"),
    ({"rvos_refs": "mask"}, r"rvos_refs must be one of .*'language'.*got 'mask'"),
    ({"rvos_refs": ("language",)}, r"rvos_refs .* got \('language',\)"),
])
def test_bad_switch_values_raise_value_error_naming_them(kwargs, match):
    with pytest.raises(ValueError, match=match):
        VideoSession(OracleNet(lambda t: None), **kwargs)
    with pytest.raises(ValueError, match=match):
        score_videos(None, SyntheticConfig(), n_videos=1, progress=False, **kwargs)


def test_bad_score_videos_arguments():
    with pytest.raises(ValueError, match=r"tasks .* got \('ris',\)"):
        score_videos(None, SyntheticConfig(), tasks=("ris",))
    with pytest.raises(ValueError, match="n_videos .* got 0"):
        score_videos(None, SyntheticConfig(), n_videos=0)
    assert MASK_REFS[0] == "first+previous" and RVOS_REFS[0] == "language+mask"  # the defaults


# ------------------------------------------------------------------ both real families through track
@pytest.fixture(scope="module", params=["sam", "uniref"])
def real_model(request, tiny_sam_factory, text_encoder_parts):
    if request.param == "sam":
        return tiny_sam_factory("meta")
    from unifusion_sam.encoders.text import TextReferenceEncoder
    from unifusion_sam.uniref import build_uniref
    from unifusion_sam.uniref.modeling.config import load_uniref_preset

    config = load_uniref_preset("uniref-small")
    tokenizer, backbone = text_encoder_parts
    torch.manual_seed(0)
    text = TextReferenceEncoder(config.text, backbone=copy.deepcopy(backbone), tokenizer=tokenizer)
    model = build_uniref(config, text_encoder=text, video_sizes={"min_size": 64, "max_size": 128})
    with torch.no_grad():  # references change the output (UniFusion's conditioning starts at zero)
        model.fusion.modulation[1].weight.normal_(0, 0.5)
        model.fusion.modulation[1].bias.normal_(0, 0.5)
    return model


class RefSpy:
    """Wraps a real model's ``encode_masks`` / ``decode_objects``: per decode, per object, the frames
    (indices in the video) its mask references were encoded on, and whether it had a sentence.
    ``shift`` is added to the decoded logits (a random tiny SAM predicts no foreground at all)."""

    def __init__(self, model, monkeypatch) -> None:
        self.on_frame: dict[int, int] = {}  # storage of a reference's mask features -> id of its frame encoding
        self.decodes: list[tuple[int, list]] = []  # (id of the decoded frame's encoding, per object)
        self.shift = 0.0
        encode_masks, decode_objects = model.encode_masks, model.decode_objects

        def encode(frames, prepared, masks):
            out = encode_masks(frames, prepared, masks)
            self.on_frame[out.levels[0].values.untyped_storage().data_ptr()] = id(frames[0])
            return out

        def decode(frame, prepared, objects, **kwargs):
            rows = [([self.on_frame[r.levels[0].values.untyped_storage().data_ptr()] for r in o.masks],
                     o.text is not None) for o in objects]
            self.decodes.append((id(frame), rows))
            decoded = decode_objects(frame, prepared, objects, **kwargs)
            return dataclasses.replace(decoded, logits=decoded.logits + self.shift) if self.shift else decoded

        monkeypatch.setattr(model, "encode_masks", encode)
        monkeypatch.setattr(model, "decode_objects", decode)

    def rows(self, first_decoded: int) -> list[list[tuple[list[int], bool]]]:
        """The decodes since the last call, references as frame indices (decodes run on consecutive
        frames from ``first_decoded``; a frame never decoded is frame 0)."""
        index = {fid: first_decoded + t for t, (fid, _) in enumerate(self.decodes)}
        out = [[([index.get(f, 0) for f in refs], text) for refs, text in rows] for _, rows in self.decodes]
        self.decodes.clear()
        return out


def _previous(results, t, keep_last_seen):
    """The frame of object 1's previous reference on frame t: t - 1, or with ``keep_last_seen`` the last
    frame before t where its mask was not empty."""
    return max(s for s in range(t) if not keep_last_seen or results[s].masks[1].any())


def test_track_switches_on_both_families(real_model, monkeypatch):
    frames, labels = make_video(n_frames=4, birth=(0, 0), index=1)
    given = {1: labels[0] == 1}
    spy = RefSpy(real_model, monkeypatch)
    keep = bool(getattr(real_model, "keep_last_seen", False))
    runs = {}
    for mask_refs in (None, *MASK_REFS):
        kwargs = {} if mask_refs is None else {"mask_refs": mask_refs}
        results = runs[mask_refs] = list(real_model.track(frames, masks=given, **kwargs))
        first, previous = mask_refs != "previous", mask_refs != "first"
        expected = [[([0] * first + [_previous(results, t, keep)] * previous, False)] for t in (1, 2, 3)]
        assert spy.rows(first_decoded=1) == expected, mask_refs
    for a, b in zip(runs[None], runs["first+previous"]):  # the default, bit for bit
        np.testing.assert_array_equal(a.label_map, b.label_map)
        assert a.scores == b.scores
    # on frame 1 the previous reference is the given mask on frame 0, i.e. the first reference
    assert runs["first"][1].scores[1] == pytest.approx(runs["previous"][1].scores[1], abs=1e-5)

    spy.shift = 3.0  # masks (RVOS needs a non-empty confident one) whatever the random weights
    language = list(real_model.track(frames, text="the red circle", sigma=-1.0, rvos_refs="language"))
    assert spy.rows(first_decoded=0) == [[([], True)]] * 4  # the sentence alone, on every frame
    both = list(real_model.track(frames, text="the red circle", sigma=-1.0))
    found = next((t for t, r in enumerate(both) if r.masks[1].any()), None)  # every score passes sigma
    assert found is not None and found < 3, "no confident frame: the test shows nothing"
    assert spy.rows(first_decoded=0) == [[([], True)]] * (found + 1) + [
        [([found, _previous(both, t, keep)], True)] for t in range(found + 1, 4)]
    assert language[found].scores == both[found].scores
    with pytest.raises(ValueError, match="got 'last'"):
        next(real_model.track(frames, masks=given, mask_refs="last"))


# ------------------------------------------------------------------ the benchmark
def _benchmark():
    spec = importlib.util.spec_from_file_location("paper_ablations", ROOT / "benchmarks" / "paper_ablations.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_benchmark_writes_both_tables_json_for_a_saved_run(tmp_path, monkeypatch, capsys):
    from unifusion_sam.checkpoint.io import portable_tensors, write_safetensors
    from unifusion_sam.loading import load_model

    run = tmp_path / "run"
    model = load_model("none", sam="tiny", seed=0)
    model.save_pretrained(run / "adapter")
    write_safetensors(portable_tensors(model.sam.state_dict()), run / "sam_tiny.safetensors", {"format": "pt"})
    bench = _benchmark()
    config, n_videos, raw = bench.heldout_split(ROOT / "recipes" / "configs" / "default.yaml")
    assert (config.seed, config.image_size, n_videos, raw["output_dir"]) == (1000, (128, 128), 48, "outputs/default")
    # short videos keep this fast; everything else is the recipe's held-out split
    monkeypatch.setattr(bench, "heldout_split", lambda path: (SyntheticConfig(seed=1000, image_size=(64, 64),
                                                                              num_frames=3), 10, raw))
    out = tmp_path / "out" / "ablations.json"
    results = bench.main(["--run", str(run), "--json", str(out), "--videos", "1", "--no-progress", "--device", "cpu"])
    written = json.loads(out.read_text())
    assert written == results
    assert list(written) == ["vos", "rvos"]
    assert list(written["vos"]) == ["first+previous", "first", "previous"]
    assert list(written["rvos"]) == ["language", "language+mask"]
    assert all(0.0 <= v <= 1.0 for table in written.values() for v in table.values())
    printed = capsys.readouterr().out
    assert "Table 9" in printed and "Table 7" in printed and "language + mask" in printed

    with pytest.raises(SystemExit, match="does not exist.*make demo"):
        bench.main(["--run", str(tmp_path / "missing"), "--no-progress"])

"""The full UniRef++ family on its small preset (issue #13): every task through the shared ``predict`` /
``track``, batching, checkpoints in a fresh process, bad input; and the shared parts holding the
authors' layout (deformable attention backends, UniFusion's modulation order, the mask encoder)."""

from __future__ import annotations

import copy
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from unifusion_sam.data.synthetic import SyntheticConfig, SyntheticDataset, sample_video
from unifusion_sam.encoders.mask import MaskEncoderConfig, MaskReferenceEncoder
from unifusion_sam.encoders.text import TextReferenceEncoder
from unifusion_sam.fusion.unifusion import ReferenceTokens, UniFusion, UniFusionConfig
from unifusion_sam.interface import ObjectQuery
from unifusion_sam.uniref import UniRefSegmenter, build_uniref, load_uniref_preset
from unifusion_sam.uniref.modeling.deformable import MSDeformAttn


@pytest.fixture(scope="module")
def clip():
    config = SyntheticConfig(image_size=(72, 96), num_frames=5, late_entry_prob=0.0)
    spec = sample_video(config, "heldout", 3)
    frames, labels = zip(*[spec.render(t) for t in range(5)])
    return list(frames), list(labels)


def _small(text_encoder_parts, seed=0, live=True) -> UniRefSegmenter:
    """The small preset (random weights); ``live``: UniFusion's zero-initialised conditioning layer gets
    random weights, so that references change the output (as after training)."""
    config = load_uniref_preset("uniref-small")
    tokenizer, backbone = text_encoder_parts
    torch.manual_seed(seed)
    text = TextReferenceEncoder(config.text, backbone=copy.deepcopy(backbone), tokenizer=tokenizer)
    model = build_uniref(config, text_encoder=text)
    if live:
        with torch.no_grad():
            model.fusion.modulation[1].weight.normal_(0, 0.5)
            model.fusion.modulation[1].bias.normal_(0, 0.5)
    return model


@pytest.fixture(scope="module")
def small(text_encoder_parts):
    return _small(text_encoder_parts)


def test_fusion_is_the_identity_at_initialisation(text_encoder_parts, clip):
    model = _small(text_encoder_parts, live=False)
    frames, labels = clip
    prepared = model.prepare_image(frames[0], "video")
    with torch.no_grad():
        frame = model.encode_frame(prepared)
        ref = model.encode_masks([frame], [prepared], model.prepare_mask(labels[0] == 1, prepared)[None])
        text = model.encode_text(["the blue square"])
        lang, mask = model.references([ObjectQuery(text=text, masks=[ref])])
        fused = model.fuse(frame, lang, mask)
    assert all(torch.equal(a, b) for a, b in zip(fused, frame.srcs))


def test_every_task_through_predict_and_track(small, clip):
    frames, labels = clip
    h, w = frames[0].shape[:2]
    ris = small.predict(frames[0], text="the red circle")
    assert ris.mask.shape == (h, w) and ris.mask.dtype == bool and 0 < ris.score < 1
    assert ris.logits.shape == (h, w) and np.isfinite(ris.logits).all()
    assert ris.box.shape == (4,) and 0 <= ris.box[0] <= ris.box[2] <= w and 0 <= ris.box[1] <= ris.box[3] <= h
    one = small.predict(frames[1], ref_images=[frames[0]], ref_masks=[labels[0] == 1])
    five = small.predict(frames[1], ref_images=frames[:5], ref_masks=[lab == 1 for lab in labels])
    assert one.mask.shape == five.mask.shape == (h, w)
    assert one.score != five.score  # the shots are used
    assert not np.array_equal(one.logits, ris.logits)

    ids = sorted(int(k) for k in np.unique(labels[0]) if k)[:2]
    late = sorted(int(k) for k in np.unique(labels[2]) if k and k not in ids)[:1] or [ids[0] + 10]
    late_mask = labels[2] == late[0] if late[0] in labels[2] else labels[2] == ids[0]
    results = list(small.track(frames, masks={ids[0]: labels[0] == ids[0], ids[1]: labels[0] == ids[1]},
                               new_objects={2: {late[0]: late_mask}}))
    assert [r.index for r in results] == [0, 1, 2, 3, 4]
    for t, r in enumerate(results):
        expected = set(ids) | ({late[0]} if t >= 2 else set())
        assert set(r.masks) == expected and set(r.scores) == expected
        assert r.label_map.shape == (h, w) and r.label_map.dtype == np.uint8
    np.testing.assert_array_equal(results[0].masks[ids[0]], labels[0] == ids[0])  # given masks are the output
    np.testing.assert_array_equal(results[2].masks[late[0]], late_mask)
    assert results[0].scores == {ids[0]: 1.0, ids[1]: 1.0} and all(0 < s < 1 for s in results[3].scores.values())

    rvos = list(small.track(frames, text="the red circle", sigma=0.0))  # sigma 0: the first frame is confident
    assert [set(r.masks) for r in rvos] == [{1}] * 5 and all(0 < r.scores[1] < 1 for r in rvos)


def test_all_objects_of_a_frame_in_one_forward_equal_one_at_a_time(small, clip):
    frames, labels = clip
    prepared = small.prepare_image(frames[1], "video")
    first = small.prepare_image(frames[0], "video")
    with torch.no_grad():
        frame, frame0 = small.encode_frame(prepared), small.encode_frame(first)
        masks = torch.stack([small.prepare_mask(labels[0] == k, first) for k in (1, 2)])
        refs = small.encode_masks([frame0], [first], masks)
        text = small.encode_text(["the green triangle on the left"])
        objects = [ObjectQuery(text=text), ObjectQuery(masks=[refs[0]]), ObjectQuery(text=text, masks=[refs[1], refs[0]])]
        together = small.decode_objects(frame, prepared, objects, task="video", tracking=True)
        alone = [small.decode_objects(frame, prepared, [o], task="video", tracking=True) for o in objects]
    for i, single in enumerate(alone):
        assert float(together.scores[i]) == pytest.approx(float(single.scores[0]), abs=1e-5)
        assert torch.allclose(together.logits[i], single.logits[0], atol=1e-4)
    assert not torch.allclose(together.logits[0], together.logits[1])


def test_save_and_load_in_a_fresh_process_gives_identical_outputs(small, clip, tmp_path):
    frames, labels = clip
    small.record_metrics({"ris_miou": 0.5})
    small.save_pretrained(tmp_path / "model")
    np.save(tmp_path / "frame.npy", frames[0])
    np.save(tmp_path / "ref.npy", frames[1])
    np.save(tmp_path / "mask.npy", labels[1] == 1)
    torch.set_num_threads(1)
    expected_ris = small.predict(frames[0], text="the red circle")
    expected_fss = small.predict(frames[0], ref_images=[frames[1]], ref_masks=[labels[1] == 1])
    script = textwrap.dedent(f"""
        import numpy as np, torch
        torch.set_num_threads(1)
        import unifusion_sam
        model = unifusion_sam.from_pretrained({str(tmp_path / "model")!r})
        assert type(model).__name__ == "UniRefSegmenter" and model.recorded_metrics == {{"ris_miou": 0.5}}
        img, ref, mask = (np.load({str(tmp_path)!r} + f"/{{n}}.npy") for n in ("frame", "ref", "mask"))
        ris = model.predict(img, text="the red circle")
        fss = model.predict(img, ref_images=[ref], ref_masks=[mask])
        np.savez({str(tmp_path / "out.npz")!r}, ris=ris.logits, ris_score=ris.score, fss=fss.logits,
                 fss_score=fss.score, box=ris.box)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = np.load(tmp_path / "out.npz")
    np.testing.assert_array_equal(got["ris"], expected_ris.logits)
    np.testing.assert_array_equal(got["fss"], expected_fss.logits)
    assert float(got["ris_score"]) == expected_ris.score and float(got["fss_score"]) == expected_fss.score
    np.testing.assert_array_equal(got["box"], expected_ris.box)
    card = (tmp_path / "model" / "README.md").read_text()
    assert "library_name: unifusion-sam" in card and "ris_miou" in card


def test_bad_input_is_a_clear_error(small, clip):
    frames, labels = clip
    with pytest.raises(ValueError, match="prompts are a feature of the SAM family"):
        small.predict(frames[0], point_coords=[[3, 4]], point_labels=[1])
    with pytest.raises(ValueError, match="prompts are a feature of the SAM family"):
        small.predict(frames[0], text="a cat", box=[1, 2, 30, 40])
    with pytest.raises(ValueError, match="empty"):
        small.predict(frames[0], text="  ")
    with pytest.raises(ValueError, match=r"\(10, 10\).*\(72, 96\)"):
        small.predict(frames[0], ref_images=[frames[1]], ref_masks=[np.zeros((10, 10), bool)])
    with pytest.raises(ValueError, match="binary"):
        small.predict(frames[0], ref_images=[frames[1]], ref_masks=[labels[1] * 3])
    with pytest.raises(ValueError, match="nothing to segment"):
        small.predict(frames[0])
    with pytest.raises(TypeError, match="uint8"):
        small.predict(frames[0].astype(np.float32), text="a cat")
    with pytest.raises(ValueError, match="task must be one of"):
        small.prepare_image(frames[0], "detection")
    with pytest.raises(ValueError, match=r"\(40, 50\).*\(72, 96\)"):
        list(small.track([frames[0], frames[1][:40, :50]], masks={1: labels[0] == 1}))


def test_deformable_attention_backends_agree():
    torch.manual_seed(0)
    shapes = [(11, 13), (6, 7), (3, 4), (2, 2)]
    s = sum(h * w for h, w in shapes)
    attn = MSDeformAttn(32, 4, 4, 3)
    with torch.no_grad():
        attn.sampling_offsets.weight.normal_(0, 0.5)
        attn.attention_weights.weight.normal_(0, 0.5)
    source = torch.randn(2, s, 32)
    query = torch.randn(2, 9, 32, requires_grad=True)
    padding = torch.zeros(2, s, dtype=torch.bool)
    padding[1, 100:] = True
    for reference in (torch.rand(2, 9, 4, 2), torch.rand(2, 9, 4, 4)):
        outs, grads = [], []
        for backend in ("pytorch", "transformers"):
            attn.backend = backend
            out = attn(query, reference, source, shapes, padding)
            (grad,) = torch.autograd.grad(out.square().sum(), query)
            outs.append(out)
            grads.append(grad)
        assert float((outs[0] - outs[1]).detach().abs().max()) < 1e-5
        assert float((grads[0] - grads[1]).abs().max()) < 1e-4


def test_unifusion_holds_the_authors_modulation_order():
    torch.manual_seed(0)
    ours = UniFusion(UniFusionConfig(dim=32, num_heads=2, head_dim=8, match_logit=0.0))
    theirs = UniFusion(UniFusionConfig(dim=32, num_heads=2, head_dim=8, match_logit=0.0,
                                       modulation_order="shift_scale_gate"))
    with torch.no_grad():
        ours.modulation[1].weight.normal_()
        ours.modulation[1].bias.normal_()
        state = ours.state_dict()
        for name in ("modulation.1.weight", "modulation.1.bias"):  # ours: scale, shift, gate; theirs: shift, scale, gate
            scale, shift, gate = state[name].chunk(3)
            state[name] = torch.cat([shift, scale, gate])
        theirs.load_state_dict(state)
    feature = torch.randn(2, 32, 5, 6)
    words = torch.randn(2, 7, 32)
    lang = ReferenceTokens(words, words, torch.tensor([[False] * 7, [False] * 4 + [True] * 3]))
    assert torch.allclose(ours(feature, lang=lang), theirs(feature, lang=lang), atol=1e-6)
    pooled = ReferenceTokens(words, words, None, pooled=torch.zeros(2, 32))  # an explicit pooled condition is used
    assert not torch.allclose(theirs(feature, lang=pooled), theirs(feature, lang=ReferenceTokens(words, words)))


def test_mask_encoder_holds_the_authors_layout():
    config = MaskEncoderConfig(dim=32, visual_dim=32, strides=(8, 16, 32, 64), mask_channel=False, conv_bias=True,
                               shortcut_kernel=3, stride64_norm=True)
    torch.manual_seed(0)
    encoder = MaskReferenceEncoder(config).eval()
    convs = [m for name, m in encoder.named_modules() if isinstance(m, torch.nn.Conv2d) and not name.startswith("fusers")]
    assert convs and all(c.bias is not None for c in convs)
    assert encoder.fusers[0].block1.shortcut.kernel_size == (3, 3)
    assert isinstance(encoder.extra_norm, torch.nn.GroupNorm)
    image = torch.rand(1, 3, 64, 96)
    mask = (torch.rand(1, 64, 96) > 0.5).float()
    visual = [torch.randn(1, 32, 64 // s, 96 // s) for s in (8, 16, 32)] + [torch.randn(1, 32, 1, 2)]
    with torch.no_grad():
        plain = encoder(image, mask, visual)
        normalized = encoder((image - encoder.pixel_mean) / encoder.pixel_std, mask, visual, normalized=True)
    assert [tuple(v.shape) for v in plain] == [(1, 32, 8, 12), (1, 32, 4, 6), (1, 32, 2, 3), (1, 32, 1, 2)]
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(plain, normalized))


def test_from_pretrained_builds_the_right_family(small, tmp_path, tiny_sam_factory):
    import unifusion_sam
    from unifusion_sam.interface import ReferenceSegmenter

    small.save_pretrained(tmp_path / "uniref")
    with pytest.raises(ValueError, match="full UniRef\\+\\+ model.*do not pass sam"):
        unifusion_sam.from_pretrained(tmp_path / "uniref", sam=object())
    adapter = tiny_sam_factory("meta")
    adapter.save_pretrained(tmp_path / "adapter")
    with pytest.raises(TypeError, match="UniFusion-SAM adapter: give the SAM it was trained on"):
        unifusion_sam.from_pretrained(tmp_path / "adapter")
    loaded = unifusion_sam.from_pretrained(tmp_path / "adapter", sam=copy.deepcopy(adapter.sam))
    assert type(loaded).__name__ == "UniFusionSam"
    assert isinstance(loaded, ReferenceSegmenter) and isinstance(small, ReferenceSegmenter)  # one contract
    assert not isinstance(object(), ReferenceSegmenter)
    with pytest.raises(ValueError, match="not exactly one sam_<size>.safetensors"):
        unifusion_sam.from_pretrained(tmp_path)  # adapter/ inside: a run folder, but without its SAM
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="not a checkpoint folder.*adapter_config.json.*config.json"):
        unifusion_sam.from_pretrained(tmp_path / "empty")


def test_hub_id_loads_offline_from_the_hf_cache_and_push_uploads_every_file(small, clip, tmp_path):
    from unittest import mock

    from huggingface_hub import HfApi

    frames, _ = clip
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hf-cache" / "models--me--uniref-small"
    small.save_pretrained(repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    np.save(tmp_path / "frame.npy", frames[2])
    expected = small.predict(frames[2], text="the blue square")
    script = textwrap.dedent(f"""
        import numpy as np, torch
        torch.set_num_threads(1)
        import unifusion_sam
        model = unifusion_sam.from_pretrained("me/uniref-small")
        pred = model.predict(np.load({str(tmp_path / "frame.npy")!r}), text="the blue square")
        np.save({str(tmp_path / "got.npy")!r}, pred.logits)
    """)
    env = {**__import__("os").environ, "HF_HUB_CACHE": str(tmp_path / "hf-cache"), "HF_HOME": str(tmp_path / "home"),
           "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    np.testing.assert_array_equal(np.load(tmp_path / "got.npy"), expected.logits)

    seen = {}

    def upload_folder(self, *, repo_id, folder_path, commit_message=None, repo_type=None, **kwargs):
        seen.update(repo_id=repo_id, files={p.name for p in Path(folder_path).iterdir()}, repo_type=repo_type)
        return "commit-info"

    with mock.patch.object(HfApi, "create_repo") as create_repo, \
            mock.patch.object(HfApi, "upload_folder", autospec=True, side_effect=upload_folder):
        assert small.push_to_hub("me/uniref-small", private=True) == "commit-info"
    create_repo.assert_called_once()
    assert seen["repo_id"] == "me/uniref-small" and seen["repo_type"] == "model"
    assert {"config.json", "model.safetensors", "README.md", "text_encoder_config.json", "tokenizer_config.json"} <= \
        seen["files"]


def test_cli_segments_with_an_untrained_full_model_and_rejects_points(tmp_path, clip):
    from PIL import Image

    from unifusion_sam.cli import main

    frames, _ = clip
    Image.fromarray(frames[0]).save(tmp_path / "img.png")
    args = ["segment", str(tmp_path / "img.png"), "--checkpoint", "none", "--adapter", "uniref-small",
            "--out-dir", str(tmp_path / "out"), "--device", "cpu"]
    assert main(args + ["--text", "the red circle"]) == 0
    assert (tmp_path / "out" / "img_mask.png").is_file() and (tmp_path / "out" / "img_overlay.png").is_file()
    assert main(args + ["--point", "3,4"]) == 2
    assert main(args + ["--text", "a dog", "--sam", "tiny"]) == 2  # a full model takes no SAM


def test_supports_of_different_sizes_are_batched_at_one_padded_size(small, clip):
    """The authors batch K shots into one padded tensor: a smaller support is padded to the largest."""
    frames, labels = clip
    big = np.concatenate([frames[1], frames[2]], axis=0)  # 144 x 96: its own padded size is larger
    big_mask = np.concatenate([labels[1] == 1, labels[2] == 1], axis=0)
    seen = []
    real = small.encode_masks

    def spy(frames_, prepared, masks):
        seen.append([p.padded_size for p in prepared])
        return real(frames_, prepared, masks)

    small.encode_masks = spy
    try:
        pred = small.predict(frames[0], ref_images=[frames[1], big], ref_masks=[labels[1] == 1, big_mask])
    finally:
        del small.encode_masks
    assert len(seen) == 1 and len(set(seen[0])) == 1  # one padded size for both shots
    assert pred.mask.shape == frames[0].shape[:2]


def test_a_clip_tracked_again_reuses_every_encoded_frame_while_it_is_held(small, clip, monkeypatch):
    """``predictor.cache.holding(n)`` keeps a clip's frames (what the held-out evaluation does around each
    video): the second track of the same clip, e.g. the next RVOS expression, encodes no frame again;
    outside the block the full model keeps its 4 frames, so a 5-frame clip is encoded again."""
    frames, labels = clip
    cache = small.predictor.cache
    cache.clear()
    encoded = []
    original = small.encode_images
    monkeypatch.setattr(small, "encode_images", lambda *a, **k: encoded.append(1) or original(*a, **k))
    with cache.holding(len(frames)):
        first = [r.masks[1] for r in small.track(frames, text="the red shape", sigma=0.0)]
        assert len(encoded) == len(frames)  # each frame once (its mask references reuse it)
        again = [r.masks[1] for r in small.track(frames, text="the red shape", sigma=0.0)]
        assert all(np.array_equal(a, b) for a, b in zip(first, again))
        assert len(encoded) == len(frames) and 0 < cache.bytes <= small.frame_cache_bytes
    assert cache.capacity == small.frame_cache_size == 4 and len(cache) == 4
    list(small.track(frames, text="the red shape", sigma=0.0))
    assert len(encoded) == 2 * len(frames)


def test_query_diagnosis_benchmark_scores_the_chosen_and_the_best_query(small):
    """benchmarks/uniref_queries.py: the chosen query's IoU never exceeds the best query's, ranks count
    queries scored above the best one, and a random mask encoder tells two objects' references apart."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "uniref_queries.py"
    spec = importlib.util.spec_from_file_location("uniref_queries", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = SyntheticConfig(image_size=(64, 64), num_frames=7, late_entry_prob=0.0, min_video_objects=2)
    result = module.diagnose(small, SyntheticDataset("heldout", "vos", 2, config), 2)
    assert result["segmentations"] >= 4
    assert 0.0 <= result["chosen_iou"] <= result["oracle_iou"] <= 1.0
    assert 0 <= result["median_rank_of_best"] < small.config.num_queries
    assert len(result["reference_difference_per_level"]) == 4
    assert all(d > 0.01 for d in result["reference_difference_per_level"])

"""Converting the authors' UniRef++ checkpoints (issue #13): strict key mapping, safe reading, clear errors.

The authors' layout is the fixture's ``manifest.json`` (their UniRef++-R50 ``state_dict``, 983 entries);
tensors are cheap constants here, the numbers themselves are checked by ``test_uniref_reference``.
"""

from __future__ import annotations

import collections
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from unifusion_sam.uniref.convert import (
    ConversionError,
    convert_authors_state_dict,
    infer_config,
    model_from_authors_state,
    read_authors_checkpoint,
)

MANIFEST = Path(__file__).resolve().parents[2] / "shared" / "reference" / "uniref_r50" / "manifest.json"
MINILM = "sentence-transformers/all-MiniLM-L6-v2"
pytestmark = pytest.mark.skipif(not MANIFEST.is_file(), reason="no ../shared/reference/uniref_r50/manifest.json")
DTYPES = {"float32": torch.float32, "int64": torch.int64}


@pytest.fixture(scope="module")
def manifest():
    return json.loads(MANIFEST.read_text())


@pytest.fixture(scope="module")
def authors_state(manifest):
    """Every float tensor of the authors' layout filled with its own entry number (tied keys share the
    number of the key they are tied to), so where each one lands can be read back."""
    state, number = {}, {}
    for i, e in enumerate(manifest["entries"]):
        src = e.get("tied_to") or e["key"]
        number.setdefault(src, float(i))
        dtype = DTYPES[e["dtype"]]
        state[e["key"]] = torch.full(e["shape"], number[src] if dtype.is_floating_point else 0, dtype=dtype)
    return state


@pytest.fixture(scope="module")
def converted(authors_state):
    return model_from_authors_state(authors_state, MINILM)


def test_strict_conversion_maps_every_key_once(authors_state, converted, manifest):
    ours = converted.state_dict()
    entries = manifest["entries"]
    tied = [e for e in entries if e.get("tied_to")]
    assert len(entries) == 983 and len(tied) == 56
    # each authors' tensor (less the tied copies and the BoxInst counter) fills exactly one of ours
    sources = collections.Counter(float(v.flatten()[0]) for k, v in ours.items()
                                  if v.is_floating_point() and v.numel() and not k.endswith("num_batches_tracked"))
    expected = {float(i) for i, e in enumerate(entries) if not e.get("tied_to") and e["key"] != "criterion._iter"
                and e["dtype"] == "float32"}
    assert set(sources) == expected and set(sources.values()) == {1}
    # a few mappings spelled out: their names -> ours
    index = {e["key"]: float(i) for i, e in enumerate(entries)}
    for theirs, mine in [
        ("detr.mask_head.jia_dcn.weight", "mask_features.conv8.weight"),
        ("detr.mask_head.lay3.weight", "mask_features.conv32.weight"),
        ("detr.fusion_module.norm_v.weight", "fusion.norm_q.weight"),
        ("detr.fusion_module.adaLN_modulation.1.weight", "fusion.modulation.1.weight"),
        ("detr.detr.transformer.decoder.bbox_embed.6.layers.2.weight", "bbox_embed.6.layers.2.weight"),
        ("detr.detr.backbone.0.backbone.res3.0.shortcut.norm.running_var", "backbone.body.layer2.0.downsample.1.running_var"),
        ("detr.detr.backbone.0.backbone.stem.conv1.norm.weight", "backbone.body.bn1.weight"),
        ("value_encoder.fuser5.attention.SpatialGate.spatial.conv.weight", "mask_encoder.fusers.3.attention.spatial.weight"),
        ("value_encoder.fuser2.block1.downsample.weight", "mask_encoder.fusers.0.block1.shortcut.weight"),
        ("value_encoder.final_layer.1.bias", "mask_encoder.extra_norm.bias"),
        ("resizer.layer_norm.weight", "text_encoder.proj.1.weight"),
        ("text_encoder.encoder.layer.5.output.dense.weight", "text_encoder.backbone.encoder.layer.5.output.dense.weight"),
    ]:
        assert float(ours[mine].flatten()[0]) == index[theirs], (theirs, mine)


def test_architecture_is_read_from_the_shapes(authors_state):
    config = infer_config(authors_state, MINILM)
    assert (config.backbone, config.hidden_dim, config.enc_layers, config.dec_layers, config.num_queries) == \
        ("resnet50", 256, 6, 6, 300)
    assert (config.fusion.num_heads, config.fusion.head_dim, config.fusion.modulation_order) == (8, 256, "shift_scale_gate")
    assert config.mask.conv_bias and config.mask.shortcut_kernel == 3 and config.mask.stride64_norm
    assert config.text.model_name_or_path == MINILM and config.text.layer_norm_eps == 1e-12
    assert not config.iou_branch and config.num_dynamic_params == 169


def test_a_missing_key_is_named(authors_state):
    state = dict(authors_state)
    del state["detr.controller.layers.0.bias"]
    with pytest.raises(ConversionError, match=r"missing keys \(1\): controller\.layers\.0\.bias"):
        model_from_authors_state(state, MINILM)


def test_an_extra_key_is_named(authors_state):
    state = dict(authors_state, **{"detr.extra_head.weight": torch.zeros(2)})
    with pytest.raises(ConversionError, match=r"unexpected keys \(1\): detr\.extra_head\.weight"):
        convert_authors_state_dict(state, infer_config(state, MINILM))


def test_a_wrong_shape_is_named(authors_state):
    state = dict(authors_state, **{"detr.mask_head.lay1.weight": torch.zeros(64, 256, 1, 1)})
    with pytest.raises(ConversionError, match=r"shape mismatches \(1\): mask_features\.reduce1\.weight: "
                                              r"checkpoint \(64, 256, 1, 1\) vs model \(64, 256, 3, 3\)"):
        model_from_authors_state(state, MINILM)


def test_tied_heads_must_be_the_same_tensor(authors_state):
    state = dict(authors_state, **{"detr.detr.class_embed.3.bias": torch.full((1,), -7.0)})
    with pytest.raises(ConversionError, match=r"tied heads that differ.*detr\.detr\.class_embed\.3\.bias"):
        convert_authors_state_dict(state, infer_config(state, MINILM))


def test_a_text_encoder_that_does_not_fit_the_shapes(authors_state, tmp_path):
    folder = tmp_path / "big-bert"
    folder.mkdir()
    from transformers import BertConfig

    BertConfig(hidden_size=768, num_hidden_layers=12).save_pretrained(folder)
    with pytest.raises(ConversionError, match=r"cannot load .*tokenizer|hidden size 384 and 6 layers.*768 and 12"):
        model_from_authors_state(authors_state, str(folder))


class NotATensor:  # pickled by value into the checkpoint below: must never be unpickled
    pass


def test_a_pickle_with_a_non_tensor_object_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"model": {"w": torch.zeros(2)}, "extra": NotATensor()}, path)
    with pytest.raises(ValueError, match=r"non-tensor object.*NotATensor"):
        read_authors_checkpoint(path)
    path = tmp_path / "numpy.pth"
    torch.save({"model": {"w": np.zeros(3)}}, path)
    with pytest.raises(ValueError, match=r"non-tensor object \(numpy"):
        read_authors_checkpoint(path)
    path = tmp_path / "values.pth"
    torch.save({"model": {"w": [1.0, 2.0]}}, path)
    with pytest.raises(ValueError, match=r"not tensors: w"):
        read_authors_checkpoint(path)
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        read_authors_checkpoint(tmp_path / "nope.pth")


def test_detectron2_checkpoint_file_converts_through_the_cli(authors_state, tmp_path):
    """``unifusion-sam convert-uniref`` on a detectron2-style file, then the one loading entry point."""
    small = {k: v.half() if v.is_floating_point() else v for k, v in authors_state.items()}  # a smaller file
    ckpt = tmp_path / "uniref_r50.pth"
    torch.save({"model": small, "iteration": 90000, "trainer": {"lr": [0.1]}}, ckpt)
    out = tmp_path / "converted"
    proc = subprocess.run([sys.executable, "-m", "unifusion_sam", "convert-uniref", str(ckpt), str(out),
                           "--text-encoder", MINILM], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "converted" in proc.stdout and "resnet50" in proc.stdout
    assert {"config.json", "model.safetensors", "README.md", "text_encoder_config.json", "tokenizer_config.json"} <= \
        {p.name for p in out.iterdir()}
    import unifusion_sam
    from unifusion_sam.uniref import UniRefSegmenter

    model = unifusion_sam.from_pretrained(out)
    assert isinstance(model, UniRefSegmenter) and not model.training
    assert float(model.state_dict()["mask_features.conv8.weight"].flatten()[0]) == \
        float(authors_state["detr.mask_head.jia_dcn.weight"].flatten()[0])
    proc = subprocess.run([sys.executable, "-m", "unifusion_sam", "convert-uniref", str(tmp_path / "missing.pth"),
                           str(out)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "checkpoint not found" in proc.stderr


SWIN_MANIFEST = MANIFEST.parents[1] / "uniref_swinl_backbone" / "manifest.json"


@pytest.mark.skipif(not SWIN_MANIFEST.is_file(), reason="no ../shared/reference/uniref_swinl_backbone")
def test_a_swin_l_checkpoint_converts(manifest):
    """The authors' UniRef++-Swin-L layout: the R50 model's keys less its backbone, plus the Swin-L backbone
    under the same prefix, with Swin channel counts where backbone features are consumed."""
    swin = json.loads(SWIN_MANIFEST.read_text())
    prefix = swin["full_model_key_prefix"]
    channels = {"detr.detr.input_proj.0.0.weight": 384, "detr.detr.input_proj.1.0.weight": 768,
                "detr.detr.input_proj.2.0.weight": 1536, "detr.detr.input_proj.3.0.weight": 1536,
                "detr.lateral_conv.weight": 192}
    state = {}
    for e in manifest["entries"]:
        if e["key"].startswith(prefix):
            continue
        shape = list(e["shape"])
        if e["key"] in channels:
            shape[1] = channels[e["key"]]
        state[e["key"]] = torch.zeros(shape, dtype=DTYPES[e["dtype"]])
    for e in swin["entries"]:
        state[prefix + e["key"]] = torch.zeros(e["shape"], dtype=DTYPES[e["dtype"]])  # relative_position_index: zeros
    assert len(state) == 1075
    model = model_from_authors_state(state, MINILM)
    assert model.config.backbone == "swin_l" and model.backbone.channels == [192, 384, 768, 1536]
    index = model.state_dict()["backbone.features.1.0.attn.relative_position_index"]
    assert int(index.max()) == 528  # recomputed, not the checkpoint's zeros

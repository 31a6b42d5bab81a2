"""Adapter-only checkpoints: save_pretrained / from_pretrained / push_to_hub on tiny Meta and HF SAMs."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch
import yaml

from unifusion_sam.sam import UniFusionSam, build_hf_sam, build_sam, wrap_sam


def build_hf_tiny(name: str = "tiny"):
    """``build_hf_sam("tiny")`` with a usable image encoder: transformers initialises SAM's vision weights with
    std 1e-10 (``SamVisionConfig.initializer_range``), so its embeddings are ~1e-20 whatever the image and
    LoRA would have no visible effect. Re-drawn here with std 0.02."""
    sam = build_hf_sam(name)
    with torch.no_grad():
        for p in sam.vision_encoder.parameters():
            if p.dim() > 1:
                p.normal_(0.0, 0.02)
    return sam


BUILDERS = {"meta": build_sam, "hf": build_hf_tiny}
FILES = {"adapter_config.json", "adapter_model.safetensors", "README.md"}
REPO_ROOT = Path(__file__).resolve().parents[1]
ALLOWED_PREFIXES = ("fusion.", "mask_encoder.", "mask_token.", "text_token.", "text_encoder.proj.",
                    "text_encoder.backbone.", "mask_decoder.", "lora.")


# ---------------------------------------------------------------------------------------------- helpers
def make_inputs() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    ref_mask = np.zeros((40, 56), dtype=bool)
    ref_mask[8:30, 10:40] = True
    return {
        "image": rng.integers(0, 256, (48, 64, 3), dtype=np.uint8),
        "ref_image": rng.integers(0, 256, (40, 56, 3), dtype=np.uint8),
        "ref_mask": ref_mask,
    }


def run_predictions(model, inputs: dict[str, np.ndarray], with_text: bool) -> dict[str, np.ndarray]:
    """Logits and scores for point, mask-reference (and text) prompts; also used by the fresh process."""
    model.eval()
    calls = {
        "points": {"point_coords": [[20, 30]], "point_labels": [1]},
        "mask": {"ref_images": [inputs["ref_image"]], "ref_masks": [inputs["ref_mask"]]},
    }
    if with_text:
        calls["text"] = {"text": "the bright square on the left"}
        calls["text_mask"] = {"text": "the object", **calls["mask"]}
    out = {}
    for name, kwargs in calls.items():
        pred = model.predict(inputs["image"], **kwargs)
        out[name] = pred.logits
        out[name + "_score"] = np.array(pred.score)
    return out


def perturb(model) -> None:
    """Move every adapter tensor away from its initialisation (LoRA B and the zero-init gates included)."""
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=gen) * 0.02)
        for name, b in model.mask_encoder.named_buffers():
            if name.endswith("running_mean"):
                b.add_(torch.randn(b.shape, generator=gen) * 0.1)
            elif name.endswith("running_var"):
                b.mul_(1.0 + 0.5 * torch.rand(b.shape, generator=gen))


def save_sam(sam, path: Path) -> None:
    from safetensors.torch import save_file

    # clone: transformers.SamModel ties two embeddings, which safetensors refuses to store twice
    save_file({k: v.detach().clone().contiguous() for k, v in sam.state_dict().items()}, str(path))


def load_sam(family: str, path: Path):
    if family == "meta":
        return build_sam("tiny", checkpoint=path)
    from safetensors.torch import load_file

    sam = build_hf_sam("tiny")
    sam.load_state_dict(load_file(str(path)))
    return sam


FRESH_PROCESS = """
import sys
import numpy as np
import torch
sys.path.insert(0, {tests!r})
from test_checkpoint import load_sam, run_predictions
from unifusion_sam.sam import UniFusionSam

family, sam_path, source, inputs_path, out_path, threads, with_text = sys.argv[1:]
torch.set_num_threads(int(threads))
model = UniFusionSam.from_pretrained(source, sam=load_sam(family, sam_path))
inputs = dict(np.load(inputs_path))
np.savez(out_path, **run_predictions(model, inputs, with_text == "1"))
"""


def predict_in_fresh_process(tmp_path: Path, family: str, sam_path: Path, source: str, inputs, with_text: bool,
                             env: dict[str, str] | None = None) -> dict[str, np.ndarray]:
    script = tmp_path / "fresh.py"
    script.write_text(FRESH_PROCESS.format(tests=str(Path(__file__).parent)))
    np.savez(tmp_path / "inputs.npz", **inputs)
    out = tmp_path / "out.npz"
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]), **(env or {})}
    args = [sys.executable, str(script), family, str(sam_path), source, str(tmp_path / "inputs.npz"), str(out),
            str(torch.get_num_threads()), "1" if with_text else "0"]
    proc = subprocess.run(args, env=full_env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return dict(np.load(out))


def assert_same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert set(a) == set(b)
    for k in a:
        assert np.array_equal(a[k], b[k]), f"{k} differs after reloading"


def tiny_model(family: str = "meta", **overrides):
    return wrap_sam(BUILDERS[family]("tiny"), **overrides)


def saved_tensors(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(folder / "adapter_model.safetensors"))


def write_weights(folder: Path, tensors: dict[str, torch.Tensor]) -> None:
    from safetensors.torch import save_file

    save_file(tensors, str(folder / "adapter_model.safetensors"))


# ---------------------------------------------------------------------------------------------- round trips
@pytest.mark.parametrize("family", ["meta", "hf"])
def test_round_trip_in_fresh_process_reproduces_predictions(tmp_path, family):
    sam = BUILDERS[family]("tiny")
    save_sam(sam, tmp_path / "sam.safetensors")
    model = wrap_sam(sam, lora={"enabled": True})  # text encoder trainable: its backbone is in the adapter
    inputs = make_inputs()
    before = run_predictions(model, inputs, with_text=True)
    perturb(model)
    model.predictor.cache.clear()  # LoRA changed the image encoder
    expected = run_predictions(model, inputs, with_text=True)
    assert not np.array_equal(before["points"], expected["points"])  # points see LoRA and the decoder
    model.save_pretrained(tmp_path / "ckpt")
    assert {p.name for p in (tmp_path / "ckpt").iterdir()} == FILES

    got = predict_in_fresh_process(tmp_path, family, tmp_path / "sam.safetensors", str(tmp_path / "ckpt"),
                                   inputs, with_text=True)
    assert_same(expected, got)


def test_from_hub_id_offline_from_hf_cache(tmp_path):
    family = "hf"
    sam = build_hf_tiny()
    save_sam(sam, tmp_path / "sam.safetensors")
    model = wrap_sam(sam, text={"trainable": False})  # frozen text encoder: re-loaded from its id
    perturb(model)
    inputs = make_inputs()
    expected = run_predictions(model, inputs, with_text=True)
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hf-cache" / "models--me--unifusion-sam-tiny"
    model.save_pretrained(repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    assert not any(k.startswith("text_encoder.backbone.") for k in saved_tensors(repo / "snapshots" / commit))

    env = {"HF_HUB_CACHE": str(tmp_path / "hf-cache"), "HF_HOME": str(tmp_path / "hf-home")}
    got = predict_in_fresh_process(tmp_path, family, tmp_path / "sam.safetensors", "me/unifusion-sam-tiny",
                                   inputs, with_text=True, env=env)
    assert_same(expected, got)


@pytest.mark.parametrize("family", ["meta", "hf"])
def test_in_process_round_trip_with_lora_and_no_text(tmp_path, family):
    sam = BUILDERS[family]("tiny")
    sam_state = {k: v.clone() for k, v in sam.state_dict().items()}  # before LoRA renames the wrapped layers
    model = wrap_sam(sam, text=None, lora={"enabled": True, "targets": ["qkv", "proj"]}, train_mask_decoder=False)
    perturb(model)
    inputs = make_inputs()
    expected = run_predictions(model, inputs, with_text=False)
    model.save_pretrained(tmp_path / "ckpt")
    fresh = BUILDERS[family]("tiny")
    fresh.load_state_dict(sam_state)
    reloaded = UniFusionSam.from_pretrained(tmp_path / "ckpt", sam=fresh)
    assert not reloaded.training
    assert_same(expected, run_predictions(reloaded, inputs, with_text=False))
    # new LoRA weights (B = 0) must not be hidden by cached image embeddings of the old ones
    reloaded.load_adapter_state_dict({k: torch.zeros_like(v) if "lora_B" in k else v
                                      for k, v in reloaded.adapter_state_dict().items()})
    assert len(reloaded.predictor.cache) == 0
    assert not np.array_equal(run_predictions(reloaded, inputs, with_text=False)["points"], expected["points"])


# ---------------------------------------------------------------------------------------------- contents
@pytest.mark.parametrize("family", ["meta", "hf"])
def test_saved_weights_hold_only_the_adapter(tmp_path, family):
    model = tiny_model(family, lora={"enabled": True})
    model.save_pretrained(tmp_path / "ckpt")
    saved = saved_tensors(tmp_path / "ckpt")
    assert set(saved) == set(model.adapter_state_dict())
    assert all(k.startswith(ALLOWED_PREFIXES) for k in saved)
    lora = {k for k in saved if k.startswith("lora.")}
    encoder_lora = [n for n in model.backend.image_encoder.state_dict() if "lora_" in n]
    assert lora == {"lora." + n for n in encoder_lora} and lora
    assert all("lora_" in k for k in lora)  # no frozen image-encoder weight slips in
    assert len([k for k in saved if k.startswith("mask_decoder.")]) == len(model.backend.mask_decoder.state_dict())
    assert any(k.endswith("running_mean") for k in saved if k.startswith("mask_encoder."))  # buffers are state
    assert any(k.startswith("text_encoder.backbone.") for k in saved)  # config.text.trainable
    no_extras = tiny_model(family, text={"trainable": False}, train_mask_decoder=False).adapter_state_dict()
    assert not any(k.startswith(("text_encoder.backbone.", "mask_decoder.", "lora.")) for k in no_extras)
    assert any(k.startswith("text_encoder.proj.") for k in no_extras)


def test_adapter_is_much_smaller_than_sam(tmp_path):
    sam = build_sam("vit_b", image_size=256)
    sam_bytes = sum(v.numel() * v.element_size() for v in sam.state_dict().values())
    model = wrap_sam(sam, text=None, lora={"enabled": True})
    model.save_pretrained(tmp_path / "ckpt")
    size = (tmp_path / "ckpt" / "adapter_model.safetensors").stat().st_size
    assert size < 0.2 * sam_bytes
    image_encoder = [k for k in saved_tensors(tmp_path / "ckpt") if k.startswith("lora.")]
    assert image_encoder and all("lora_" in k for k in image_encoder)


def test_model_card_and_metrics(tmp_path):
    model = tiny_model("meta", text=None)
    model.record_metrics({"refcoco": {"val/oIoU": 0.625}})
    model.save_pretrained(tmp_path / "ckpt", metrics={"fss1000/mIoU": 0.8, "episodes": 240})
    card = (tmp_path / "ckpt" / "README.md").read_text()
    assert card.startswith("---\n")
    front = yaml.safe_load(card.split("---\n")[1])
    assert front["library_name"] == "unifusion-sam" and "segment-anything" in front["tags"]
    assert "| refcoco/val/oIoU | 0.6250 |" in card and "| fss1000/mIoU | 0.8000 |" in card
    assert "| episodes | 240 |" in card
    assert "UniFusionSam.from_pretrained(" in card and '"sam_size": "tiny"' in card
    assert json.loads((tmp_path / "ckpt" / "adapter_config.json").read_text()) == model.config.to_dict()
    reloaded = UniFusionSam.from_pretrained(tmp_path / "ckpt", sam=build_sam("tiny"))
    assert reloaded.recorded_metrics == {"refcoco/val/oIoU": 0.625, "fss1000/mIoU": 0.8, "episodes": 240}
    with pytest.raises(TypeError, match="metric"):
        model.record_metrics({"bad": [1, 2]})


def test_vit_b_card_names_the_hub_base_model(tmp_path):
    from unifusion_sam.sam.adapter.config import load_preset
    from unifusion_sam.sam.adapter.model_card import render_model_card

    card = render_model_card(load_preset("sam-vit-b"), {}, repo_id="me/x", parts=["fusion"], num_parameters=1,
                             num_bytes=4, library_version="0")
    front = yaml.safe_load(card.split("---\n")[1])
    assert front["base_model"] == "facebook/sam-vit-base"
    assert 'build_sam("vit_b", checkpoint="sam_vit_b_01ec64.pth")' in card and "No metrics recorded." in card


def test_shared_and_non_contiguous_tensors_are_saved(tmp_path):
    from unifusion_sam.checkpoint.io import portable_tensors, write_safetensors

    base = torch.arange(12.0).reshape(3, 4)
    tensors = {"a": base, "b": base, "t": base.t(), "row": base[1]}
    write_safetensors(portable_tensors(tensors), tmp_path / "x.safetensors", {})
    from safetensors.torch import load_file

    loaded = load_file(str(tmp_path / "x.safetensors"))
    assert all(torch.equal(loaded[k], v) for k, v in tensors.items())

    model = tiny_model("meta")
    model.text_token.weight = model.mask_token.weight  # a tied parameter inside the adapter
    model.save_pretrained(tmp_path / "ckpt")
    saved = saved_tensors(tmp_path / "ckpt")
    assert torch.equal(saved["text_token.weight"], saved["mask_token.weight"])


# ---------------------------------------------------------------------------------------------- errors
def test_corrupted_safetensors_names_the_file(tmp_path):
    tiny_model("meta", text=None).save_pretrained(tmp_path / "ckpt")
    path = tmp_path / "ckpt" / "adapter_model.safetensors"
    data = path.read_bytes()
    for broken in (data[: len(data) // 2], data[:5], b"not safetensors at all" * 10):
        path.write_bytes(broken)
        with pytest.raises(ValueError, match="adapter_model.safetensors") as info:
            UniFusionSam.from_pretrained(tmp_path / "ckpt", sam=build_sam("tiny"))
        assert str(path) in str(info.value)


def test_checkpoint_from_another_config_lists_shape_mismatches(tmp_path):
    tiny_model("meta", text=None, fusion={"head_dim": 32}).save_pretrained(tmp_path / "other")
    tiny_model("meta", text=None).save_pretrained(tmp_path / "ckpt")
    shutil.copy(tmp_path / "other" / "adapter_model.safetensors", tmp_path / "ckpt" / "adapter_model.safetensors")
    with pytest.raises(ValueError, match="shape mismatches") as info:
        UniFusionSam.from_pretrained(tmp_path / "ckpt", sam=build_sam("tiny"))
    msg = str(info.value)
    assert "fusion.out_proj.weight: checkpoint (256, 256) vs model (256, 128)" in msg  # 8 x 32 heads vs 8 x 16
    model = tiny_model("meta", text=None)
    with pytest.raises(ValueError, match="shape mismatches"):  # even when not strict
        model.load_adapter_state_dict(saved_tensors(tmp_path / "other"), strict=False)


def test_extra_and_missing_keys_are_listed(tmp_path):
    model = tiny_model("meta", text=None)
    model.save_pretrained(tmp_path / "ckpt")
    state = saved_tensors(tmp_path / "ckpt")
    sam = build_sam("tiny")

    write_weights(tmp_path / "ckpt", {**state, "fusion.surprise": torch.zeros(3)})
    with pytest.raises(ValueError, match=r"unexpected keys \(1\): fusion.surprise"):
        UniFusionSam.from_pretrained(tmp_path / "ckpt", sam=sam)

    dropped = "mask_token.bias"
    write_weights(tmp_path / "ckpt", {k: v for k, v in state.items() if k != dropped})
    with pytest.raises(ValueError, match=r"missing keys \(1\): mask_token.bias"):
        UniFusionSam.from_pretrained(tmp_path / "ckpt", sam=build_sam("tiny"))

    result = model.load_adapter_state_dict({**state, "extra": torch.zeros(1)}, strict=False)
    assert result.unexpected_keys == ["extra"] and result.missing_keys == []
    result = model.load_adapter_state_dict({k: v for k, v in state.items() if k != dropped}, strict=False)
    assert result.missing_keys == [dropped]


def test_pickle_only_folder_is_refused_without_unpickling(tmp_path, monkeypatch):
    model = tiny_model("meta", text=None)
    model.save_pretrained(tmp_path / "ckpt")
    folder = tmp_path / "ckpt"
    torch.save(model.adapter_state_dict(), folder / "adapter_model.bin")
    (folder / "adapter_model.safetensors").unlink()

    def forbidden(*args, **kwargs):
        raise AssertionError("pickle must never be read")

    monkeypatch.setattr(torch, "load", forbidden)
    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "loads", forbidden)
    with pytest.raises(ValueError, match=r"adapter_model\.bin.*safetensors only"):
        UniFusionSam.from_pretrained(folder, sam=build_sam("tiny"))


def test_sam_that_does_not_match_the_config_is_refused(tmp_path):
    tiny_model("meta", text=None).save_pretrained(tmp_path / "ckpt")
    with pytest.raises(ValueError, match=r"sam_family='meta'.*sam_family='hf'"):
        UniFusionSam.from_pretrained(tmp_path / "ckpt", sam=build_hf_sam("tiny"))
    with pytest.raises(ValueError, match=r"image_size=256.*image_size=128"):
        UniFusionSam.from_pretrained(tmp_path / "ckpt", sam=build_sam("tiny", image_size=128))
    with pytest.raises(TypeError, match="sam="):
        UniFusionSam.from_pretrained(tmp_path / "ckpt")
    with pytest.raises(FileNotFoundError, match="Hub"):
        UniFusionSam.from_pretrained(tmp_path / "nowhere", sam=build_sam("tiny"))


def test_adapter_of_the_other_family_names_sam_family():
    meta_state = tiny_model("meta", text=None).adapter_state_dict()
    hf_model = tiny_model("hf", text=None)
    with pytest.raises(ValueError, match="sam_family") as info:
        hf_model.load_adapter_state_dict(meta_state)
    assert "mask_decoder." in str(info.value)


def test_sam_already_carrying_lora_is_refused(tmp_path):
    tiny_model("meta", text=None).save_pretrained(tmp_path / "ckpt")
    sam = build_sam("tiny")
    wrap_sam(sam, text=None, lora={"enabled": True})
    with pytest.raises(ValueError, match="LoRA"):
        UniFusionSam.from_pretrained(tmp_path / "ckpt", sam=sam)


# ---------------------------------------------------------------------------------------------- atomic writes
@pytest.mark.parametrize("existing", [True, False])
def test_crash_while_saving_keeps_the_previous_checkpoint(tmp_path, monkeypatch, existing):
    import safetensors.torch

    model = tiny_model("meta", text=None)
    folder = tmp_path / "ckpt"
    if existing:
        model.save_pretrained(folder)
    before = {p.name: p.read_bytes() for p in folder.iterdir()} if existing else None
    perturb(model)

    def crash(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"\x00" * 1000)  # a partial file, then the process "dies"
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", crash)
    with pytest.raises(OSError, match="disk full"):
        model.save_pretrained(folder, metrics={"x": 1.0})
    if existing:
        assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
        monkeypatch.undo()
        UniFusionSam.from_pretrained(folder, sam=build_sam("tiny"))  # still loads
    else:
        assert not folder.exists()
    assert [p.name for p in tmp_path.iterdir()] == (["ckpt"] if existing else [])  # no temporary leftovers


def test_save_over_existing_checkpoint_replaces_it(tmp_path):
    model = tiny_model("meta", text=None)
    model.save_pretrained(tmp_path / "ckpt")
    (tmp_path / "ckpt" / "notes.txt").write_text("kept")
    perturb(model)
    model.save_pretrained(tmp_path / "ckpt")
    assert {p.name for p in (tmp_path / "ckpt").iterdir()} == FILES | {"notes.txt"}
    saved = saved_tensors(tmp_path / "ckpt")
    assert all(torch.equal(saved[k], v) for k, v in model.adapter_state_dict().items())


# ---------------------------------------------------------------------------------------------- hub upload
def test_push_to_hub_uploads_the_checkpoint_files():
    from huggingface_hub import HfApi

    model = tiny_model("hf", text=None, lora={"enabled": True})
    model.record_metrics({"davis17/J&F": 0.5})
    seen = {}

    def upload_folder(self, *, repo_id, folder_path, commit_message=None, repo_type=None, **kwargs):
        folder = Path(folder_path)
        seen.update(repo_id=repo_id, files={p.name for p in folder.iterdir()}, message=commit_message,
                    keys=set(saved_tensors(folder)), card=(folder / "README.md").read_text(), repo_type=repo_type)
        return "commit-info"

    with mock.patch.object(HfApi, "create_repo") as create_repo, \
            mock.patch.object(HfApi, "upload_folder", autospec=True, side_effect=upload_folder):
        result = model.push_to_hub("me/unifusion-sam-tiny", private=True, commit_message="first")
    assert result == "commit-info"
    create_repo.assert_called_once()
    args, kwargs = create_repo.call_args
    assert (args[0] if args else kwargs["repo_id"]) == "me/unifusion-sam-tiny"
    assert kwargs["exist_ok"] is True and kwargs["private"] is True
    assert seen["repo_id"] == "me/unifusion-sam-tiny" and seen["files"] == FILES and seen["message"] == "first"
    assert seen["keys"] == set(model.adapter_state_dict()) and seen["repo_type"] == "model"
    assert 'from_pretrained("me/unifusion-sam-tiny"' in seen["card"] and "davis17/J&F" in seen["card"]

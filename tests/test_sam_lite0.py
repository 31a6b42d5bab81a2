"""The EfficientNet-Lite0 stand-in SAM: the pretrained network, its SAM, wrapping, stand-in training."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from unifusion_sam.data.synthetic import SyntheticConfig
from unifusion_sam.encoders.efficientnet_lite import (
    TAP_CHANNELS,
    EfficientNetLite0,
    FoldedLite0,
    SameConv2d,
    pretrained_lite0,
)
from unifusion_sam.sam import build_sam, wrap_sam
from unifusion_sam.sam.builders.stand_in import StandInConfig, pretrain_image_encoder

skimage_data = pytest.importorskip("skimage.data")

# ImageNet classes: 281-285 are the domestic cats, 967 espresso / 968 cup
PHOTOS = {"chelsea": set(range(281, 286)), "coffee": {967, 968}}


@pytest.fixture(scope="module")
def lite0():
    return pretrained_lite0()


def _imagenet_input(image: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(np.ascontiguousarray(image[..., :3])).permute(2, 0, 1).float()[None]
    x = F.interpolate(x, size=(224, 224), mode="bilinear", antialias=True, align_corners=False)
    return (x - 127.5) / 127.5


@pytest.mark.parametrize("photo", sorted(PHOTOS))
def test_pretrained_lite0_classifies_real_photos(lite0, photo):
    with torch.no_grad():
        probs = lite0.classify(_imagenet_input(getattr(skimage_data, photo)())).softmax(-1)[0]
    top = int(probs.argmax())
    assert top in PHOTOS[photo], (photo, top)
    assert float(probs[sorted(PHOTOS[photo])].sum()) > 0.5


def test_lite0_taps_and_same_padding(lite0):
    with torch.no_grad():
        feats = lite0.features(torch.zeros(1, 3, 96, 160))
    for name, stride in (("res2", 4), ("res3", 8), ("res4", 16), ("res5", 32)):
        assert feats[name].shape == (1, TAP_CHANNELS[name], 96 // stride, 160 // stride)
    # TensorFlow SAME: a stride-2 3x3 conv on an even input pads 0 on the top/left and 1 on the bottom/right
    conv = SameConv2d(1, 1, 3, stride=2, bias=False)
    conv.weight.data.fill_(1.0)
    x = torch.ones(1, 1, 4, 4)
    out = conv(x)
    assert out.shape == (1, 1, 2, 2)
    assert out[0, 0].tolist() == [[9.0, 6.0], [6.0, 4.0]]


def test_folded_lite0_computes_the_plain_networks_taps(lite0):
    torch.manual_seed(0)
    x = torch.randn(2, 3, 96, 160) * 2
    folded = FoldedLite0(lite0)
    with torch.no_grad():
        plain, fast = lite0.features(x), folded(x)
    assert sorted(fast) == sorted(plain)
    for name in plain:
        scale = plain[name].abs().max()
        assert scale > 1.0  # real activations, not an all-zero map
        torch.testing.assert_close(fast[name], plain[name], atol=1e-4 * float(scale), rtol=0)
    with pytest.raises(ValueError, match="multiples of 32"):
        folded(torch.zeros(1, 3, 100, 96))


def test_lite0_encoder_refolds_when_weights_are_loaded(lite0):
    from copy import deepcopy

    torch.manual_seed(0)
    sam = build_sam("lite0")
    state = sam.state_dict()
    assert not any("folded" in k for k in state)  # a cache, not a checkpoint entry
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = lite0.features(x)["res4"]
    random = EfficientNetLite0()

    def stale(model):  # fold another network's weights, as if the backbone's had changed under the cache
        model.image_encoder.folded.refresh(random)
        assert not torch.allclose(model.image_encoder.folded(x)["res4"], expected, atol=1e-3)

    stale(sam)
    sam.image_encoder.load_state_dict(sam.image_encoder.state_dict())  # loading into the encoder refolds
    torch.testing.assert_close(sam.image_encoder.folded(x)["res4"], expected, atol=1e-4, rtol=1e-4)
    copy = deepcopy(sam)
    stale(sam)
    stale(copy)
    copy.load_state_dict(state)  # loading a whole SAM refolds, and a deep copy refolds its own cache
    torch.testing.assert_close(copy.image_encoder.folded(x)["res4"], expected, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(sam.image_encoder.folded(x)["res4"], expected, atol=1e-3)


def test_lite0_rejects_a_state_dict_of_another_network(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"conv.weight": torch.zeros(1)}, path)
    with pytest.raises(ValueError, match="not an EfficientNet-Lite0"):
        pretrained_lite0(path)


def test_lite0_sam_frozen_backbone_and_wrapping():
    torch.manual_seed(0)
    sam = build_sam("lite0")
    enc = sam.image_encoder
    assert enc.img_size == 256 and sam.pixel_mean.flatten().tolist() == [127.5] * 3
    reference = pretrained_lite0(head=False).state_dict()
    for name, value in enc.backbone.state_dict().items():
        assert torch.equal(value, reference[name]), name
    with torch.no_grad():
        emb = enc(torch.randn(2, 3, 256, 256))
    assert emb.shape == (2, 256, 16, 16)
    model = wrap_sam(sam)
    assert model.config.sam_size == "lite0" and model.config.image_size == 256
    assert model.config.fusion.lang_pos  # the preset's position-aware language queries run end to end
    image = (np.random.default_rng(0).random((96, 80, 3)) * 255).astype(np.uint8)
    assert model.predict(image, text="the red circle on the left").mask.shape == (96, 80)
    assert not any(p.requires_grad for p in enc.parameters())
    model.train()
    assert not enc.backbone.training  # BatchNorm keeps the ImageNet statistics
    with pytest.raises(ValueError, match="multiple of 32"):
        build_sam("lite0", image_size=200)


def test_lite0_sam_checkpoint_round_trip(tmp_path):
    from safetensors.torch import save_file

    torch.manual_seed(0)
    sam = build_sam("lite0")
    save_file({k: v.contiguous() for k, v in sam.state_dict().items()}, str(tmp_path / "sam_lite0.safetensors"))
    loaded = build_sam("lite0", checkpoint=tmp_path / "sam_lite0.safetensors")
    for name, value in loaded.state_dict().items():
        assert torch.equal(value, sam.state_dict()[name]), name
    x = torch.randn(1, 3, 256, 256)
    with torch.no_grad():
        assert torch.equal(loaded.image_encoder(x), sam.image_encoder(x))


def test_stand_in_trains_only_the_neck_of_lite0():
    torch.manual_seed(0)
    sam = build_sam("lite0")
    before = {k: v.clone() for k, v in sam.state_dict().items()}
    losses = pretrain_image_encoder(sam, SyntheticConfig(seed=3, image_size=(64, 64)),
                                    StandInConfig(steps=3, batch_size=2), num_workers=0, progress=False)
    assert len(losses) == 3 and all(np.isfinite(losses))
    after = sam.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith("image_encoder.neck.") for k in changed), sorted(changed)[:5]
    assert not sam.image_encoder.training and not any(p.requires_grad for p in sam.image_encoder.parameters())


def test_random_lite0_is_a_plain_network():
    net = EfficientNetLite0()
    assert sum(p.numel() for p in net.parameters()) == sum(p.numel() for p in pretrained_lite0().parameters())


def test_eval_loader_reads_a_saved_lite0_sam_by_path_or_name(tmp_path):
    from safetensors.torch import save_file

    from unifusion_sam.sam.builders.options import build_sam_from_option

    torch.manual_seed(0)
    sam = build_sam("lite0")
    path = tmp_path / "sam_lite0.safetensors"
    save_file({k: v.contiguous() for k, v in sam.state_dict().items()}, str(path))
    for option, weights in ((str(path), None), ("lite0", path)):
        loaded = build_sam_from_option(option, sam_checkpoint=weights)
        assert loaded.image_encoder.size_name == "lite0"
        assert torch.equal(loaded.image_encoder.neck[0].weight, sam.image_encoder.neck[0].weight)


# ------------------------------------------------------------------ lite0_hr: SAM 2's high-resolution maps
def test_high_res_packing_is_exact_and_checked():
    from unifusion_sam.sam.backends.high_res import pack_high_res, unpack_high_res

    s4, s8, emb = torch.randn(2, 32, 64, 64), torch.randn(2, 64, 32, 32), torch.randn(2, 256, 16, 16)
    packed = pack_high_res(s4, s8, emb)
    assert packed.shape == (2, 1024, 16, 16) and torch.equal(packed[:, :256], emb)
    back4, back8 = unpack_high_res(packed)
    assert torch.equal(back4, s4) and torch.equal(back8, s8)
    one = unpack_high_res(packed[:1].expand(3, -1, -1, -1))  # one frame broadcast: unfolded once
    assert one[0].shape[0] == 1 and torch.equal(one[0], s4[:1])
    with pytest.raises(ValueError, match="1024 channels"):
        unpack_high_res(emb)


def test_lite0_hr_sam_predicts_what_sam_predictor_predicts_and_uses_its_maps():
    from segment_anything import SamPredictor

    from unifusion_sam.sam.backends.high_res import HighResMaskDecoder

    torch.manual_seed(0)
    sam = build_sam("lite0_hr")
    assert isinstance(sam.mask_decoder, HighResMaskDecoder) and sam.image_encoder.size_name == "lite0_hr"
    model = wrap_sam(sam)
    assert model.config.sam_size == "lite0_hr" and model.backend.feature_channels == 1024
    image = (np.random.default_rng(1).random((96, 120, 3)) * 255).astype(np.uint8)
    predictor = SamPredictor(sam)
    predictor.set_image(image)
    kwargs = dict(point_coords=np.array([[40.0, 30.0]]), point_labels=np.array([1]))
    masks, scores, low_res = predictor.predict(**kwargs, multimask_output=False, return_logits=True)
    ours = model.predict(image, **kwargs)  # no reference, zero-initialised fusion: exactly SAM
    np.testing.assert_allclose(ours.low_res_logits, low_res[0], rtol=0, atol=1e-5)
    np.testing.assert_allclose(np.float32(ours.score), scores[0], rtol=0, atol=1e-6)
    # Meta's Sam.forward runs the packed features through the same decoder
    pixels = torch.as_tensor(predictor.transform.apply_image(image)).permute(2, 0, 1).float()
    point = torch.as_tensor(predictor.transform.apply_coords(kwargs["point_coords"], image.shape[:2]))[None].float()
    with torch.no_grad():
        out = sam([{"image": pixels, "original_size": image.shape[:2], "point_coords": point,
                    "point_labels": torch.ones(1, 1)}], multimask_output=False)[0]
    np.testing.assert_allclose(out["low_res_logits"][0, 0].numpy(), low_res[0], rtol=0, atol=1e-5)
    # the stride-4 map reaches the mask: changing it changes the logits, not the score's embedding path
    features = sam.image_encoder(model.transform.image(image).pixels)
    emb, extras = model.backend.image_embedding(features), model.backend.decoder_inputs(features)
    sparse, dense = model.backend.embed_prompts(None, None, None, 1)
    plain, _ = model.backend.decode(emb, sparse, dense, extras=extras)
    moved, _ = model.backend.decode(emb, sparse, dense, extras=[extras[0] + 1.0, extras[1]])
    assert plain.shape == (1, 1, 64, 64) and not torch.allclose(plain, moved)
    with pytest.raises(ValueError, match="high-resolution maps"):
        model.backend.decode(emb, sparse, dense)
    assert model.predict(image, text="the red circle").mask.shape == (96, 120)


def test_stand_in_trains_the_neck_and_high_res_projections_of_lite0_hr():
    torch.manual_seed(0)
    sam = build_sam("lite0_hr")
    before = {k: v.clone() for k, v in sam.state_dict().items()}
    losses = pretrain_image_encoder(sam, SyntheticConfig(seed=3, image_size=(64, 64)),
                                    StandInConfig(steps=2, batch_size=2, decoder_weight=1.0), num_workers=0,
                                    progress=False)
    assert len(losses) == 2 and all(np.isfinite(losses))
    after = sam.state_dict()
    changed = {k.split(".")[1] for k in before if k.startswith("image_encoder.") and not torch.equal(before[k], after[k])}
    assert changed == {"neck", "conv_s0", "conv_s1"}, changed
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("mask_decoder.output_upscaling"))


def test_eval_loader_tells_lite0_hr_weights_from_lite0(tmp_path):
    from safetensors.torch import save_file

    from unifusion_sam.sam.adapter.wrap import default_preset_for
    from unifusion_sam.sam.builders.options import build_sam_from_option

    sam = build_sam("lite0_hr")
    path = tmp_path / "sam_lite0_hr.safetensors"
    save_file({k: v.contiguous() for k, v in sam.state_dict().items()}, str(path))
    loaded = build_sam_from_option(str(path))
    assert loaded.image_encoder.size_name == "lite0_hr"
    assert torch.equal(loaded.image_encoder.conv_s0.weight, sam.image_encoder.conv_s0.weight)
    assert default_preset_for(loaded) == "sam-lite0-hr"

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
from unifusion_sam.training import StandInConfig, pretrain_image_encoder

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

    from unifusion_sam.evaluation.loading import build_sam_from_option

    torch.manual_seed(0)
    sam = build_sam("lite0")
    path = tmp_path / "sam_lite0.safetensors"
    save_file({k: v.contiguous() for k, v in sam.state_dict().items()}, str(path))
    for option, weights in ((str(path), None), ("lite0", path)):
        loaded = build_sam_from_option(option, sam_checkpoint=weights)
        assert loaded.image_encoder.size_name == "lite0"
        assert torch.equal(loaded.image_encoder.neck[0].weight, sam.image_encoder.neck[0].weight)

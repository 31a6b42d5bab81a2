"""Stand-in SAM pre-training: targets, loss, what trains and what stays, config errors."""

from pathlib import Path

import numpy as np
import pytest
import torch

from unifusion_sam.data.synthetic import SyntheticConfig, SyntheticDataset
from unifusion_sam.data.synthetic.shapes import COLOURS, SHAPE_CLASSES
from unifusion_sam.sam import build_sam
from unifusion_sam.sam.backends.transforms import SamTransform
from unifusion_sam.sam.builders import save_sam
from unifusion_sam.sam.builders.stand_in import StandInConfig, pretrain_image_encoder
from unifusion_sam.sam.builders.stand_in.pretrain import MAX_INSTANCES, DenseHead, SceneTargets, Targets, stand_in_loss
from unifusion_sam.sam.training import SamTrainConfig, pretrain_stand_in
from unifusion_sam.training import apply_overrides

SYN = SyntheticConfig(seed=3, image_size=(64, 64))


def _targets(sam, image_size=(64, 64)):
    syn = SyntheticConfig(seed=3, image_size=image_size)
    transform = SamTransform(sam.image_encoder.img_size, sam.pixel_mean, sam.pixel_std)
    return SceneTargets(SyntheticDataset("train", "ris", 8, syn), transform, 8), SyntheticDataset("train", "ris", 8, syn)


def test_scene_targets_follow_the_objects_and_mark_padding():
    sam = build_sam("tiny")
    targets, scenes = _targets(sam, image_size=(48, 64))  # not square: the bottom rows are padding
    pixels, colour, shape, objects, valid, point, mask = targets[0]
    assert pixels.shape == (3, 256, 256)
    assert colour.shape == (len(COLOURS) + 1, 32, 32) and shape.shape == (len(SHAPE_CLASSES) + 1, 32, 32)
    assert objects.shape == (MAX_INSTANCES + 1, 32, 32)
    # 48 x 64 -> 192 x 256 input pixels = 24 x 32 cells of 8 pixels; the rest is padding
    assert (valid[:24] == 1).all() and (valid[24:] == 0).all()
    for t in (colour, shape, objects):
        torch.testing.assert_close(t.sum(0), valid)  # shares of a cell add up to its image part
    rec = scenes.scene(0)
    ids = torch.from_numpy(rec.meta["label_map"].astype(np.int64))
    cell_ids = torch.nn.functional.one_hot(ids, MAX_INSTANCES + 1).permute(2, 0, 1).float()
    torch.testing.assert_close(objects[:, :24], torch.nn.functional.avg_pool2d(cell_ids[None], 2)[0])
    for obj in rec.meta["objects"]:
        area = objects[obj["id"]]
        assert area.sum() > 0
        torch.testing.assert_close(colour[1 + list(COLOURS).index(obj["colour"])] >= area - 1e-6,
                                   torch.ones_like(area, dtype=torch.bool))
        torch.testing.assert_close(shape[1 + list(SHAPE_CLASSES).index(obj["shape"])] >= area - 1e-6,
                                   torch.ones_like(area, dtype=torch.bool))


def _batch(sam, n):
    targets, _ = _targets(sam)
    items = [targets[i] for i in range(n)]
    pixels = torch.stack([it[0] for it in items])
    return pixels, Targets(*(torch.stack([it[k] for it in items]) for k in range(1, 5)))


def test_loss_is_low_for_a_head_that_reads_the_answer():
    """A head whose logits are the log-shares themselves scores far below a random head."""
    sam = build_sam("tiny")
    _, targets = _batch(sam, 1)
    emb = torch.randn(1, 256, 16, 16)
    random_loss = stand_in_loss(DenseHead(256, 16), emb, targets, 0.1).item()

    class Oracle(DenseHead):
        def forward(self, embeddings):
            inst = torch.nn.functional.pad(targets.objects, (0, 0, 0, 0, 0, 16 - targets.objects.shape[1]))
            return (torch.log(targets.colour + 1e-4), torch.log(targets.shape + 1e-4),
                    torch.nn.functional.normalize(inst + 1e-6, dim=1))

    oracle_loss = stand_in_loss(Oracle(256, 16), emb, targets, 0.05).item()
    assert oracle_loss < 0.25 * random_loss, (oracle_loss, random_loss)


def test_pretraining_trains_the_encoder_only_and_is_reproducible():
    config = StandInConfig(steps=4, batch_size=2, lr=1e-3)
    torch.manual_seed(0)
    a = build_sam("tiny")
    before = {k: v.clone() for k, v in a.state_dict().items()}
    torch.manual_seed(1)
    losses = pretrain_image_encoder(a, SYN, config, num_workers=0, progress=False)
    assert len(losses) == 4 and all(np.isfinite(losses))
    after = a.state_dict()
    assert not torch.equal(before["image_encoder.patch_embed.proj.weight"], after["image_encoder.patch_embed.proj.weight"])
    for name, value in before.items():
        if not name.startswith("image_encoder."):
            assert torch.equal(value, after[name]), name
    assert not a.image_encoder.training
    assert not any(p.requires_grad for p in a.image_encoder.parameters())
    torch.manual_seed(0)
    b = build_sam("tiny")
    torch.manual_seed(1)
    assert pretrain_image_encoder(b, SYN, config, num_workers=0, progress=False) == losses
    for name, value in b.state_dict().items():
        assert torch.equal(value, after[name]), name


def test_pretraining_under_bf16_autocast_follows_float32():
    """``autocast_dtype`` runs the forward passes in bf16 (what ``mixed_precision: auto`` picks on an AMX CPU):
    the same steps, losses within bf16 rounding of float32's, and the weights stay float32."""
    config = StandInConfig(steps=3, batch_size=2, lr=1e-3, decoder_weight=1.0)
    losses = {}
    for dtype in (None, torch.bfloat16):
        torch.manual_seed(0)
        sam = build_sam("tiny")
        torch.manual_seed(1)
        losses[dtype] = pretrain_image_encoder(sam, SYN, config, num_workers=0, progress=False, autocast_dtype=dtype)
        assert all(v.dtype == torch.float32 for v in sam.state_dict().values() if v.is_floating_point())
    assert losses[None] != losses[torch.bfloat16]  # it did run in bf16
    assert np.allclose(losses[None], losses[torch.bfloat16], rtol=0.05), losses


def test_pretraining_lowers_the_loss_on_a_fixed_batch():
    sam = build_sam("tiny")
    pixels, targets = _batch(sam, 4)
    head = DenseHead(256, 16)
    params = list(sam.image_encoder.parameters()) + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=1e-3)
    losses = []
    for _ in range(15):
        loss = stand_in_loss(head, sam.image_encoder(pixels), targets, 0.1)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0], losses


def test_zero_steps_changes_nothing_and_bad_input_is_rejected():
    sam = build_sam("tiny")
    before = {k: v.clone() for k, v in sam.state_dict().items()}
    assert pretrain_image_encoder(sam, SYN, StandInConfig(steps=0), progress=False) == []
    assert all(torch.equal(v, sam.state_dict()[k]) for k, v in before.items())
    with pytest.raises(TypeError, match="segment_anything Sam"):
        pretrain_image_encoder(torch.nn.Linear(2, 2), SYN, StandInConfig(steps=1), progress=False)
    with pytest.raises(ValueError, match="steps"):
        StandInConfig(steps=-1)
    with pytest.raises(ValueError, match="lr"):
        StandInConfig(lr=0)


def test_stand_in_config_in_the_training_config(tmp_path):
    default = Path(__file__).resolve().parents[1] / "recipes" / "configs" / "default.yaml"
    cfg = SamTrainConfig.from_yaml(default)
    assert cfg.stand_in.steps > 0 and cfg.sam_checkpoint is None  # the offline default pre-trains its random SAM
    cfg = apply_overrides(cfg, {"stand_in.steps": "5", "stand_in.lr": "2e-3"})
    assert cfg.stand_in == StandInConfig(steps=5, lr=2e-3, decoder_weight=1.0)  # the default's decoder term
    assert SamTrainConfig.from_json(cfg.to_json()) == cfg
    with pytest.raises(ValueError, match="stand_in.stepz"):
        apply_overrides(cfg, {"stand_in.stepz": "5"})
    with pytest.raises(ValueError, match="batch_size"):
        apply_overrides(cfg, {"stand_in.batch_size": "0"})


def test_recipe_skips_the_stand_in_for_a_pretrained_sam(tmp_path, capsys):
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "recipes"))
    import train_sam_unifusion as recipe

    class Acc:
        is_main_process = True

        def print(self, *args):
            print(*args)

        def wait_for_everyone(self):
            pass

    ckpt = tmp_path / "sam.safetensors"
    sam = build_sam("tiny")
    save_sam(sam, ckpt)
    before = {k: v.clone() for k, v in sam.state_dict().items()}
    cfg = apply_overrides(SamTrainConfig.from_yaml(recipe.DEFAULT_CONFIG), {"sam_checkpoint": str(ckpt)})
    assert pretrain_stand_in(Acc(), sam, cfg, tmp_path / "out") is None
    assert "ignored" in capsys.readouterr().out
    assert all(torch.equal(v, sam.state_dict()[k]) for k, v in before.items())
    assert not (tmp_path / "out").exists()

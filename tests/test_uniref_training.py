"""Matching and losses of the full UniRef++ (the authors' SimOTA / Hungarian and ``SetCriterion``).

Their exact numbers on the authors' fixture are checked by ``reference_check`` (test_uniref_reference);
these tests pin the rules on hand-made cases and show the losses train the small preset.
"""

from __future__ import annotations

import copy

import pytest
import torch

from unifusion_sam.data.synthetic import SyntheticConfig, sample_video
from unifusion_sam.encoders.text import TextReferenceEncoder
from unifusion_sam.interface import ObjectQuery
from unifusion_sam.uniref import build_uniref, load_uniref_preset
from unifusion_sam.uniref.losses.criterion import LayerOutput, Target, UniRefCriterion, base_name
from unifusion_sam.uniref.losses.matcher import candidate_regions, hungarian_match, simota_match
from unifusion_sam.uniref.modeling.config import TaskSizes
from unifusion_sam.uniref.modeling.model import layer_outputs


def _boxes(*rows):
    return torch.tensor(rows, dtype=torch.float32)


def test_candidates_are_queries_inside_a_box_or_near_its_centre():
    targets = _boxes([0.5, 0.5, 0.4, 0.4])
    queries = _boxes([0.5, 0.5, 0.1, 0.1], [0.65, 0.5, 0.1, 0.1], [0.9, 0.9, 0.1, 0.1], [0.52, 0.51, 0.3, 0.3])
    anywhere, both = candidate_regions(queries, targets)
    assert anywhere.tolist() == [True, True, False, True]
    assert both[:, 0].tolist() == [True, False, False, True]  # 0.65 is in the box but not within 2.5 / 32 of 0.5


def test_simota_gives_each_target_its_cheapest_queries_and_resolves_conflicts():
    targets = _boxes([0.3, 0.3, 0.2, 0.2], [0.7, 0.7, 0.2, 0.2])
    labels = torch.zeros(2, dtype=torch.long)
    queries = _boxes([0.3, 0.3, 0.2, 0.2], [0.305, 0.3, 0.2, 0.2], [0.3, 0.31, 0.2, 0.2], [0.7, 0.7, 0.2, 0.2],
                     [0.1, 0.9, 0.05, 0.05])
    logits = torch.zeros(5, 1)
    query, gt = simota_match(logits, queries, labels, targets)
    # target 0: IoUs 1, 0.95, 0.90 -> dynamic k = int(2.85) = 2, its two cheapest (highest GIoU); target 1: k = 1
    assert query.tolist() == [0, 1, 3] and gt.tolist() == [0, 0, 1]
    # a query that is the cheapest for two targets keeps the cheaper one; the other target takes its next best
    both = _boxes([0.5, 0.5, 0.3, 0.3], [0.52, 0.5, 0.3, 0.3])
    query, gt = simota_match(torch.zeros(2, 1), _boxes([0.5, 0.5, 0.3, 0.3], [0.6, 0.5, 0.3, 0.3]), labels, both)
    assert sorted(zip(query.tolist(), gt.tolist())) == [(0, 0), (1, 1)]
    # a target far from every query still gets the cheapest one (+10000 outside the candidate regions)
    query, gt = simota_match(logits[4:], queries[4:], labels[:1], _boxes([0.6, 0.2, 0.05, 0.05]))
    assert query.tolist() == [0] and gt.tolist() == [0]
    empty = simota_match(logits, queries, labels[:0], targets[:0])
    assert empty[0].numel() == empty[1].numel() == 0


def test_hungarian_is_one_to_one():
    targets = _boxes([0.3, 0.3, 0.2, 0.2], [0.7, 0.7, 0.2, 0.2])
    queries = _boxes([0.69, 0.7, 0.2, 0.2], [0.5, 0.5, 0.5, 0.5], [0.3, 0.31, 0.2, 0.2])
    query, gt = hungarian_match(torch.zeros(3, 1), queries, torch.zeros(2, dtype=torch.long), targets)
    assert sorted(zip(query.tolist(), gt.tolist())) == [(0, 1), (2, 0)]


def test_criterion_terms_weights_and_edge_cases():
    assert base_name("loss_mask_cls_3") == "loss_mask_cls" and base_name("loss_giou_enc") == "loss_giou"
    criterion = UniRefCriterion()
    logits = torch.randn(1, 5, 1)
    boxes = torch.rand(1, 5, 4) * 0.5 + 0.25
    masks = torch.zeros(1, 64, 64)
    masks[0, 16:48, 16:48] = 1
    target = Target(torch.zeros(1, dtype=torch.long), _boxes([0.5, 0.5, 0.5, 0.5]), masks)
    matched = LayerOutput(logits, boxes, [(torch.tensor([2]), torch.tensor([0]))], torch.randn(1, 16, 16))
    losses = criterion([matched, matched], (logits, boxes), [target])
    assert set(losses) == {f"{n}{s}" for n in ("loss_ce", "loss_bbox", "loss_giou", "loss_mask", "loss_dice",
                                               "loss_mask_cls", "loss_mask_iou") for s in ("_0", "")} | \
        {"loss_ce_enc", "loss_bbox_enc", "loss_giou_enc"}
    assert all(torch.isfinite(v) for v in losses.values())
    raw = UniRefCriterion(weights={k: 1.0 for k in criterion.weights})([matched], None, [target])
    assert float(losses["loss_dice"]) == pytest.approx(5.0 * float(raw["loss_dice"]))
    # a perfect mask: dice ~ 0; box-only targets: no mask terms; no match: zero, still differentiable
    perfect = LayerOutput(logits, boxes, matched.indices, (masks[:, 2::4, 2::4] * 40 - 20))
    assert float(UniRefCriterion()([perfect], None, [target])["loss_dice"]) < 0.05
    box_only = UniRefCriterion()([matched], None, [Target(target.labels, target.boxes)])
    assert "loss_mask" not in box_only and "loss_ce" in box_only
    nothing = LayerOutput(logits.requires_grad_(), boxes, [(torch.zeros(0, dtype=torch.long),) * 2],
                          torch.zeros(0, 16, 16))
    zero = UniRefCriterion()([nothing], None, [target])
    assert float(zero["loss_bbox"].detach()) == 0.0 and zero["loss_ce"].requires_grad


def test_a_few_steps_drive_the_losses_down_on_a_fixed_batch(text_encoder_parts):
    """RIS and VOS samples of the small preset's heads: 15 AdamW steps more than halve the total weighted
    loss. (On a random ResNet-18: this checks the heads, matching and losses; the pretrained Lite0
    backbone's features need more steps on one 64 px clip.)"""
    config = load_uniref_preset("uniref-small").replace(
        video_sizes=TaskSizes(64, 128),  # the clip's own size
        backbone="resnet18", pixel_mean=(123.675, 116.28, 103.53), pixel_std=(58.395, 57.12, 57.375))
    tokenizer, backbone = text_encoder_parts
    torch.manual_seed(0)
    model = build_uniref(config, text_encoder=TextReferenceEncoder(config.text, backbone=copy.deepcopy(backbone),
                                                                   tokenizer=tokenizer))
    spec = sample_video(SyntheticConfig(image_size=(64, 80), num_frames=2, late_entry_prob=0.0), "heldout", 1)
    (img0, lab0), (img1, lab1) = spec.render(0), spec.render(1)
    prep0, prep1 = model.prepare_image(img0, "video"), model.prepare_image(img1, "video")
    mask1 = model.prepare_mask(lab1 == 1, prep1)
    ys, xs = torch.nonzero(mask1, as_tuple=True)
    h, w = prep1.input_size
    x0, y0, x1, y1 = float(xs.min()), float(ys.min()), float(xs.max()) + 1, float(ys.max()) + 1
    box = torch.tensor([[(x0 + x1) / 2 / w, (y0 + y1) / 2 / h, (x1 - x0) / w, (y1 - y0) / h]])
    target = Target(torch.zeros(1, dtype=torch.long), box, mask1[None])
    criterion = UniRefCriterion()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=2e-4, weight_decay=0.05)
    model.train()
    totals = []
    for _ in range(15):
        frame = model.encode_frame(prep1)
        ref = model.encode_masks([model.encode_frame(prep0)], [prep0], model.prepare_mask(lab0 == 1, prep0)[None])
        total = 0.0
        for objects, vos in (([ObjectQuery(text=model.encode_text(["the object"]))], False),
                             ([ObjectQuery(masks=[ref])], True)):
            lang, mask = model.references(objects)
            det = model.detect(model.fuse(frame, lang, mask), frame)
            layers, proposals = layer_outputs(model, det, frame, [target], vos=vos)
            total = total + sum(criterion(layers, proposals, [target]).values())
        optimizer.zero_grad()
        total.backward()
        torch.nn.utils.clip_grad_norm_(params, 0.1)
        optimizer.step()
        totals.append(float(total.detach()))
    model.eval()
    assert all(torch.isfinite(torch.tensor(totals)))
    assert totals[-1] < 0.5 * totals[0], totals


# ------------------------------------------------------------------ BoxInst (box-only data)
def test_boxinst_terms_on_hand_made_cases():
    from unifusion_sam.uniref.losses.boxinst import (
        box_masks,
        color_similarity,
        pairwise_term,
        projection_term,
        valid_region,
    )

    boxes = box_masks(torch.tensor([[8.0, 4.0, 23.0, 19.0]]), (32, 32))
    assert boxes.sum() == 16 * 16 and boxes[0, 4, 8] == 1 and boxes[0, 20, 8] == 0
    box4 = boxes[:, 2::4, 2::4]
    assert float(projection_term(box4, box4)) < 1e-3  # a mask spanning the box's rows and columns
    assert float(projection_term(torch.zeros_like(box4), box4)) > 0.9
    flat = pairwise_term(torch.full((1, 8, 8), 9.0))
    assert flat.shape == (1, 8, 8, 8) and float(flat[:, :, 3:5, 3:5].max()) < 1e-3  # confident and smooth: no cost
    split = pairwise_term(torch.where(torch.arange(8)[None, :] < 4, 9.0, -9.0).expand(1, 8, 8))
    assert float(split.max()) > 8.0  # neighbours across the edge disagree
    image = torch.zeros(3, 32, 64)
    image[0, :, 32:] = 255.0  # left half black, right half red: pooled by 4, columns 0-7 black, 8-15 red
    sim = color_similarity(image, valid_region(32, 64, (32, 64), 32, bottom_removed=0))
    assert sim.shape == (8, 8, 16)
    assert float(sim[:, 2:6, 3].min()) == pytest.approx(1.0)  # every neighbour (dilation 2) is black too
    assert float(sim[:, 2:6, 7].min()) < 0.01  # two columns right is red
    assert float(sim[:, 0, 0].min()) == 0.0  # neighbours outside the image count for nothing


def test_boxinst_losses_prefer_the_box_and_replace_the_mask_terms():
    """On box-only targets the criterion computes BoxInst's terms (not the mask losses), counting its calls
    for the pairwise warm-up; among hand-made masks the box itself scores lowest."""
    from unifusion_sam.uniref.losses.boxinst import boxinst_losses, color_similarity, valid_region

    box = torch.zeros(1, 16, 24)
    box[:, 4:12, 6:16] = 1
    image = torch.full((3, 64, 96), 40.0)
    image[:, 16:48, 24:64] = torch.tensor([200.0, 60.0, 30.0])[:, None, None]  # the object fills its box
    same = color_similarity(image, valid_region(64, 96, (64, 96), 64))[None]  # pairs across its edge: dissimilar
    candidates = {"box": torch.where(box.bool(), 9.0, -9.0), "everything": torch.full_like(box, 9.0),
                  "half": torch.where(box.bool() & (torch.arange(24) < 11), 9.0, -9.0)}  # half the object
    totals = {k: float(sum(boxinst_losses(v, box, same, 10000).values())) for k, v in candidates.items()}
    assert totals["box"] < 0.01 and min(totals["everything"], totals["half"]) > 10 * totals["box"], totals
    warm = boxinst_losses(candidates["half"], box, same, 2500)
    assert float(warm["loss_pairwise"]) == pytest.approx(0.25 * float(boxinst_losses(candidates["half"], box, same,
                                                                                       10000)["loss_pairwise"]))

    masks = torch.zeros(1, 64, 96)
    masks[0, 16:48, 24:64] = 1
    target = Target(torch.zeros(1, dtype=torch.long), torch.tensor([[0.45, 0.5, 0.4, 0.5]]), masks,
                    torch.ones(1, 8, 16, 24))
    layer = LayerOutput(torch.zeros(1, 3, 1), torch.rand(1, 3, 4) * 0.5 + 0.25, [(torch.tensor([1]), torch.tensor([0]))],
                        torch.randn(1, 16, 24))
    criterion = UniRefCriterion()
    losses = criterion([layer, layer], None, [target])
    assert {"loss_prj", "loss_pairwise", "loss_prj_0", "loss_pairwise_0"} <= set(losses)
    assert not any(k.startswith(("loss_mask", "loss_dice")) for k in losses)
    assert criterion.boxinst_calls == 2  # one call per decoder layer, as the authors' counter
    restored = UniRefCriterion()
    restored.load_state_dict(criterion.state_dict())
    assert restored.boxinst_calls == 2

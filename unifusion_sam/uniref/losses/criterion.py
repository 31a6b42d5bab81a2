"""UniRef++ training losses, the authors' ``SetCriterion`` (with SimOTA matching, ``OTA=True``).

Per decoder layer (the last one named plainly, the others ``_0`` .. ``_4``), over the queries SimOTA
matched in that layer (``M`` of them, the normaliser of every term):

- ``loss_ce``: sigmoid focal loss (alpha 0.25, gamma 2) over every query and class, summed / M;
- ``loss_bbox`` (L1) and ``loss_giou`` (1 - GIoU) of the matched boxes, / M;
- ``loss_mask`` (focal, mean over pixels) and ``loss_dice`` of the matched masks against the targets
  (sampled at the mask resolution: every 4th pixel from offset 2, or full resolution for VOS), / M;
- with the mask auxiliary losses: ``loss_mask_cls``, a bootstrapped cross-entropy (the worst 40 % of
  pixels) of the soft-aggregated [background, object] probabilities, and ``loss_mask_iou``
  (1 - soft IoU), / M;
- ``_enc``: ``loss_ce`` / ``loss_bbox`` / ``loss_giou`` of the two-stage proposals, Hungarian-matched
  with class-agnostic targets.

Box-only targets (detection pre-training) carry ``color_similarity`` and box masks as ``masks``; their
mask terms are BoxInst's ``loss_prj`` and ``loss_pairwise`` instead (:mod:`.boxinst`; on at most 64
randomly chosen matches per layer; unweighted, as in the authors' weight dict).

Every term is multiplied by its weight (``WEIGHTS``; aux and ``_enc`` terms share the base weights).
torchvision supplies the focal loss and the GIoU loss.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torchvision.ops import box_convert, generalized_box_iou_loss, sigmoid_focal_loss

from .boxinst import boxinst_losses
from .matcher import hungarian_match

WEIGHTS = {"loss_ce": 2.0, "loss_bbox": 5.0, "loss_giou": 2.0, "loss_mask": 2.0, "loss_dice": 5.0,
           "loss_mask_cls": 1.0, "loss_mask_iou": 1.0, "loss_prj": 1.0, "loss_pairwise": 1.0}


@dataclass
class Target:
    """One image's targets: ``labels`` ``[G]``, ``boxes`` ``[G, 4]`` normalised cxcywh, ``masks`` ``[G, Hp, Wp]``
    (zero-padded to the padded image size; the boxes' masks for box-only data) or ``None``;
    ``color_similarity`` ``[G, 8, Hp / 4, Wp / 4]`` for box-only data (BoxInst)."""

    labels: torch.Tensor
    boxes: torch.Tensor
    masks: torch.Tensor | None = None
    color_similarity: torch.Tensor | None = None


@dataclass
class LayerOutput:
    """One decoder layer (or the proposals): ``logits`` ``[B, Q, K]``, ``boxes`` ``[B, Q, 4]``, the matching
    ``indices`` (per image: query indices, target indices) and the matched queries' mask logits
    ``masks`` ``[M, h, w]`` in the order of the indices (``None`` for the proposals)."""

    logits: torch.Tensor
    boxes: torch.Tensor
    indices: list[tuple[torch.Tensor, torch.Tensor]]
    masks: torch.Tensor | None = None


def focal_loss(logits: torch.Tensor, targets: torch.Tensor, normalizer: float) -> torch.Tensor:
    """The authors' ``sigmoid_focal_loss``: mean over dim 1, summed, / ``normalizer``."""
    return sigmoid_focal_loss(logits, targets, alpha=0.25, gamma=2.0, reduction="none").mean(1).sum() / normalizer


def dice_loss(logits: torch.Tensor, targets: torch.Tensor, normalizer: float) -> torch.Tensor:
    probs = logits.sigmoid().flatten(1)
    numerator = 2 * (probs * targets).sum(1)
    return (1 - (numerator + 1) / (probs.sum(-1) + targets.sum(-1) + 1)).sum() / normalizer


def soft_aggregate_pair(probs: torch.Tensor) -> torch.Tensor:
    """``[N, h, w]`` object probabilities -> ``[N, 2, h, w]`` [background, object] (soft aggregation of one object)."""
    both = torch.stack([1 - probs, probs], 1).clamp(1e-7, 1 - 1e-7)
    return F.softmax(torch.log(both / (1 - both)), dim=1)


def bootstrap_ce(probs: torch.Tensor, targets: torch.Tensor, fraction: float = 0.4) -> torch.Tensor:
    """Mean of the worst ``fraction`` of pixels' cross-entropy, ``probs`` / ``targets`` ``[N, 2, h, w]``."""
    n, _, h, w = probs.shape
    loss = (-torch.log(probs) * targets).sum(1).view(n, -1)
    return torch.sort(loss, dim=-1, descending=True)[0][:, : int(h * w * fraction)].mean()


def mask_iou_loss(probs: torch.Tensor, targets: torch.Tensor, normalizer: float, eps: float = 1e-7) -> torch.Tensor:
    inter = torch.min(probs, targets).sum((1, 2))
    union = torch.max(probs, targets).sum((1, 2))
    return 1.0 - ((inter + eps) / (union + eps)).sum() / normalizer


def target_masks_at(targets: list[Target], indices, size: tuple[int, int]) -> torch.Tensor:
    """The matched targets' masks ``[M, h, w]`` at the prediction size (every ``s``-th pixel from ``s // 2``)."""
    rows = []
    for t, (_, gt) in zip(targets, indices):
        masks = t.masks[gt].float()
        stride = masks.shape[-1] // size[1]
        if stride != 1:
            masks = masks[:, stride // 2 :: stride, stride // 2 :: stride]
        rows.append(masks)
    return torch.cat(rows)


class UniRefCriterion:
    """``criterion(layers, proposals, targets) -> {name: weighted loss}``; ``layers`` = decoder layers in order."""

    def __init__(self, weights: dict[str, float] | None = None, mask_aux: bool = True, num_classes: int = 1,
                 boxinst_topk: int = 64, seed: int = 0) -> None:
        self.weights = dict(WEIGHTS if weights is None else weights)
        self.mask_aux = mask_aux
        self.num_classes = num_classes
        self.boxinst_topk = boxinst_topk
        self.boxinst_calls = 0  # the pairwise term's warm-up counts calls (the authors' criterion._iter)
        self._rng = random.Random(seed)

    def state_dict(self) -> dict:
        """What a resumed run needs: the BoxInst call counter and the subset sampler's state."""
        return {"boxinst_calls": self.boxinst_calls, "rng": self._rng.getstate()}

    def load_state_dict(self, state: dict) -> None:
        self.boxinst_calls = int(state["boxinst_calls"])
        self._rng.setstate(tuple(state["rng"]) if not isinstance(state["rng"], tuple) else state["rng"])

    def layer_losses(self, out: LayerOutput, targets: list[Target], masks: bool = True) -> dict[str, torch.Tensor]:
        batch = torch.cat([torch.full_like(q, i) for i, (q, _) in enumerate(out.indices)])
        query = torch.cat([q for q, _ in out.indices])
        matched = max(len(query), 1) if len(query) else 1
        onehot = torch.zeros_like(out.logits)
        labels = torch.cat([t.labels[g] for t, (_, g) in zip(targets, out.indices)])
        if len(query) == 0:
            zero = out.logits.sum() * 0.0
            losses = {"loss_ce": zero, "loss_bbox": zero, "loss_giou": zero}
        else:
            onehot[batch, query, labels] = 1.0
            losses = {"loss_ce": focal_loss(out.logits, onehot, len(query)) * out.logits.shape[1]}
            src = out.boxes[batch, query]
            tgt = torch.cat([t.boxes[g] for t, (_, g) in zip(targets, out.indices)])
            losses["loss_bbox"] = F.l1_loss(src, tgt, reduction="none").sum() / matched
            losses["loss_giou"] = generalized_box_iou_loss(box_convert(src, "cxcywh", "xyxy"),
                                                           box_convert(tgt, "cxcywh", "xyxy")).sum() / matched
        if masks and out.masks is not None and targets[0].masks is not None:
            losses.update(self.mask_losses(out, targets))
        return losses

    def mask_losses(self, out: LayerOutput, targets: list[Target]) -> dict[str, torch.Tensor]:
        if targets[0].color_similarity is not None:
            return self.boxinst(out, targets)
        src = out.masks  # [M, h, w]
        if src.shape[0] == 0:
            zero = src.sum() * 0.0
            names = ["loss_mask", "loss_dice"] + (["loss_mask_cls", "loss_mask_iou"] if self.mask_aux else [])
            return dict.fromkeys(names, zero)
        tgt = target_masks_at(targets, out.indices, tuple(src.shape[-2:]))
        m = src.shape[0]
        losses = {"loss_mask": focal_loss(src.flatten(1), tgt.flatten(1), m),
                  "loss_dice": dice_loss(src.flatten(1), tgt.flatten(1), m)}
        if self.mask_aux:
            probs = soft_aggregate_pair(src.sigmoid())
            pair = torch.stack([1 - tgt, tgt], 1)
            losses["loss_mask_cls"] = bootstrap_ce(probs, pair)
            losses["loss_mask_iou"] = mask_iou_loss(probs[:, 1], pair[:, 1], m)
        return losses

    def boxinst(self, out: LayerOutput, targets: list[Target]) -> dict[str, torch.Tensor]:
        """BoxInst's projection and pairwise terms on (at most ``boxinst_topk`` of) the matched queries."""
        self.boxinst_calls += 1
        pairs = [(i, int(g)) for i, (_, gts) in enumerate(out.indices) for g in gts]
        keep = list(range(len(pairs)))
        if len(pairs) > self.boxinst_topk:
            keep = self._rng.sample(keep, self.boxinst_topk)
        logits = out.masks[keep]
        if not keep:
            return boxinst_losses(logits, logits, logits, self.boxinst_calls)
        h, w = logits.shape[-2:]
        boxes, similarity = [], []
        for k in keep:
            i, g = pairs[k]
            t = targets[i]
            stride = t.masks.shape[-1] // w
            boxes.append(t.masks[g, stride // 2 :: stride, stride // 2 :: stride].float())
            similarity.append(t.color_similarity[g])
        return boxinst_losses(logits, torch.stack(boxes), torch.stack(similarity), self.boxinst_calls)

    def proposal_losses(self, logits: torch.Tensor, boxes: torch.Tensor, targets: list[Target]):
        """The two-stage proposals' terms with class-agnostic Hungarian matching: (losses, indices)."""
        agnostic = [Target(torch.zeros_like(t.labels), t.boxes) for t in targets]
        indices = [hungarian_match(logits[i], boxes[i], t.labels, t.boxes) for i, t in enumerate(agnostic)]
        return self.layer_losses(LayerOutput(logits, boxes, indices), agnostic, masks=False), indices

    def __call__(self, layers: list[LayerOutput], proposals: tuple[torch.Tensor, torch.Tensor] | None,
                 targets: list[Target]) -> dict[str, torch.Tensor]:
        raw = {}
        for i, out in enumerate(layers):
            suffix = "" if i == len(layers) - 1 else f"_{i}"
            raw.update({k + suffix: v for k, v in self.layer_losses(out, targets).items()})
        if proposals is not None:
            enc, _ = self.proposal_losses(*proposals, targets)
            raw.update({k + "_enc": v for k, v in enc.items()})
        return {k: v * self.weights[base_name(k)] for k, v in raw.items()}


def base_name(name: str) -> str:
    """``loss_giou_3`` / ``loss_giou_enc`` -> ``loss_giou`` (aux and proposal terms share the base weight)."""
    return re.sub(r"_(\d+|enc)$", "", name)

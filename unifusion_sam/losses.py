"""Training losses shared by the recipes: mask BCE + Dice on full-resolution masks, and the object score.

``segmentation_loss`` = ``bce_weight * BCE + dice_weight * Dice`` (2.0 and 0.5 by default, DESIGN
section 2), computed on the logits upsampled to the target's resolution and restricted to the valid
(unpadded) region. The object score (SAM's predicted IoU) is regressed to the IoU of the predicted mask
with the target, which is 0 when the object is absent: a sample whose target is empty teaches the
model to report a low score, and its mask loss teaches an empty mask.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class LossWeights:
    bce: float = 2.0
    dice: float = 0.5
    score: float = 1.0
    point: float = 0.5  # the text point's heat-map mass on the target (adapters with text_point)


def upsample_logits(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``[B, 1, s, s]`` -> ``[B, s', s']`` bilinear (SAM's own postprocessing mode)."""
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)[:, 0]


def dice_loss(logits: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Per-sample soft Dice loss ``[B]`` for logits / binary targets ``[B, H, W]`` (smoothing 1)."""
    p = logits.sigmoid()
    if valid is not None:
        p, targets = p * valid, targets * valid
    inter = (p * targets).flatten(1).sum(1)
    total = p.flatten(1).sum(1) + targets.flatten(1).sum(1)
    return 1.0 - (2.0 * inter + 1.0) / (total + 1.0)


def bce_loss(logits: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Per-sample mean binary cross-entropy ``[B]`` over the valid pixels."""
    loss = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    if valid is None:
        return loss.flatten(1).mean(1)
    return (loss * valid).flatten(1).sum(1) / valid.flatten(1).sum(1).clamp(min=1.0)


def mask_iou(logits: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """IoU ``[B]`` of ``logits > 0`` with the targets (1 when both are empty)."""
    pred = logits > 0
    tgt = targets > 0.5
    if valid is not None:
        pred, tgt = pred & valid.bool(), tgt & valid.bool()
    inter = (pred & tgt).flatten(1).sum(1).float()
    union = (pred | tgt).flatten(1).sum(1).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))


def segmentation_loss(
    logits: torch.Tensor,
    scores: torch.Tensor,
    targets: torch.Tensor,
    valid: torch.Tensor | None = None,
    weights: LossWeights | None = None,
) -> dict[str, torch.Tensor]:
    """Loss terms for low-res ``logits`` ``[B, 1, s, s]``, ``scores`` ``[B]`` and ``targets`` ``[B, H, W]``.

    ``valid``: optional ``[B, H, W]`` mask of the unpadded region. Returns a dict with ``loss`` (the
    weighted total, a scalar) and the unweighted means ``bce``, ``dice``, ``score``.
    """
    w = weights or LossWeights()
    targets = targets.to(logits.dtype)
    valid = None if valid is None else valid.to(logits.dtype)
    full = upsample_logits(logits, tuple(targets.shape[-2:]))
    bce = bce_loss(full, targets, valid).mean()
    dice = dice_loss(full, targets, valid).mean()
    iou = mask_iou(full.detach(), targets, valid)
    present = (targets.flatten(1).sum(1) > 0).to(iou.dtype)
    score_target = iou * present  # an absent object has score target 0
    score = F.mse_loss(scores, score_target)
    total = w.bce * bce + w.dice * dice + w.score * score
    return {"loss": total, "bce": bce.detach(), "dice": dice.detach(), "score": score.detach()}

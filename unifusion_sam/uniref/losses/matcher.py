"""Matching predictions to targets for UniRef++ training: SimOTA for the decoder, Hungarian for proposals.

:func:`simota_match` (the authors' ``forward_ota``, per decoder layer and image): candidates are queries
whose predicted centre lies inside a target box or within 2.5 / 32 of its centre; the cost is the focal
classification cost + 3 x (-GIoU) + 100 x (not inside both the box and the centre region), + 10000
outside every candidate region; each target takes its ``k`` cheapest queries with the dynamic
``k = clamp(int(sum of its top-10 IoUs)), >= 1)``; a query claimed by several targets keeps the
cheapest; a target left without a query takes the cheapest unclaimed one.

:func:`hungarian_match` (``forward_ori``, the two-stage proposals): one-to-one assignment
(``scipy.optimize.linear_sum_assignment``) of ``cost_bbox x L1 + cost_class x focal + cost_giou x
(-GIoU)``. Boxes are normalised cxcywh; torchvision's box operations compute IoU and GIoU.
"""

from __future__ import annotations

import torch
from scipy.optimize import linear_sum_assignment
from torchvision.ops import box_convert, box_iou, generalized_box_iou


def focal_cost(prob: torch.Tensor, labels: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0) -> torch.Tensor:
    """``[Q, K]`` probabilities -> ``[Q, G]`` classification cost of assigning each query to each target."""
    neg = (1 - alpha) * prob**gamma * (-(1 - prob + 1e-8).log())
    pos = alpha * (1 - prob) ** gamma * (-(prob + 1e-8).log())
    return pos[:, labels] - neg[:, labels]


def candidate_regions(boxes: torch.Tensor, targets: torch.Tensor, stride: float = 32.0, radius: float = 2.5):
    """(``[Q]`` query centre inside any target box or centre region, ``[Q, G]`` inside both of that target)."""
    corners = box_convert(targets, "cxcywh", "xyxy")
    cx, cy = boxes[:, 0:1], boxes[:, 1:2]
    in_box = (cx > corners[:, 0]) & (cx < corners[:, 2]) & (cy > corners[:, 1]) & (cy < corners[:, 3])
    r = radius / stride
    in_centre = ((cx > targets[:, 0] - r) & (cx < targets[:, 0] + r) & (cy > targets[:, 1] - r) & (cy < targets[:, 1] + r))
    return in_box.any(1) | in_centre.any(1), in_box & in_centre


def _dynamic_k(cost: torch.Tensor, ious: torch.Tensor) -> torch.Tensor:
    """The authors' dynamic-k assignment on ``cost`` / ``ious`` ``[Q, G]``: a ``[Q, G]`` 0/1 matrix."""
    num_gt = cost.shape[1]
    matching = torch.zeros_like(cost)
    top_ious, _ = torch.topk(ious, min(len(ious), 10), dim=0)
    ks = torch.clamp(top_ious.sum(0).int(), min=1)
    for g in range(num_gt):
        _, pos = torch.topk(cost[:, g], k=int(ks[g]), largest=False)
        matching[:, g][pos] = 1.0
    claimed = matching.sum(1)  # computed once: the authors reuse it inside the loop below
    if (claimed > 1).any():
        _, cheapest = torch.min(cost[claimed > 1], dim=1)
        matching[claimed > 1] *= 0
        matching[claimed > 1, cheapest] = 1
    while (matching.sum(0) == 0).any():
        cost[matching.sum(1) > 0] += 100000.0
        for g in torch.nonzero(matching.sum(0) == 0, as_tuple=False).squeeze(1):
            matching[:, g][torch.argmin(cost[:, g])] = 1.0
        if (matching.sum(1) > 1).any() and (claimed > 1).any():  # (where the authors' code would crash: skip)
            _, cheapest = torch.min(cost[claimed > 1], dim=1)
            matching[claimed > 1] *= 0
            matching[claimed > 1, cheapest] = 1
    return matching


@torch.no_grad()
def simota_match(logits: torch.Tensor, boxes: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor,
                 alpha: float = 0.25, gamma: float = 2.0) -> tuple[torch.Tensor, torch.Tensor]:
    """One image: ``logits`` ``[Q, K]``, ``boxes`` ``[Q, 4]``, target ``labels`` ``[G]`` and ``targets``
    ``[G, 4]`` -> (matched query indices ``[M]`` ascending, their target indices ``[M]``)."""
    device = logits.device
    if targets.shape[0] == 0:
        return torch.zeros(0, dtype=torch.long, device=device), torch.zeros(0, dtype=torch.long, device=device)
    prob = logits.sigmoid()
    candidates, inside_both = candidate_regions(boxes, targets)
    ious = box_iou(box_convert(boxes, "cxcywh", "xyxy"), box_convert(targets, "cxcywh", "xyxy"))
    giou = generalized_box_iou(box_convert(boxes, "cxcywh", "xyxy"), box_convert(targets, "cxcywh", "xyxy"))
    cost = focal_cost(prob, labels, alpha, gamma) + 3.0 * (-giou) + 100.0 * (~inside_both)
    cost[~candidates] = cost[~candidates] + 10000.0
    matching = _dynamic_k(cost, ious)
    selected = matching.sum(1) > 0
    gt_index = matching[selected].max(1)[1]
    return torch.arange(len(matching), device=device)[selected], gt_index


@torch.no_grad()
def hungarian_match(logits: torch.Tensor, boxes: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor,
                    cost_class: float = 2.0, cost_bbox: float = 5.0, cost_giou: float = 2.0,
                    alpha: float = 0.25, gamma: float = 2.0) -> tuple[torch.Tensor, torch.Tensor]:
    """One image, one-to-one: (query indices, target indices), as ``scipy``'s assignment returns them."""
    prob = logits.sigmoid()
    cost = (cost_bbox * torch.cdist(boxes, targets, p=1) + cost_class * focal_cost(prob, labels, alpha, gamma)
            + cost_giou * -generalized_box_iou(box_convert(boxes, "cxcywh", "xyxy"), box_convert(targets, "cxcywh", "xyxy")))
    rows, cols = linear_sum_assignment(cost.cpu())
    return (torch.as_tensor(rows, dtype=torch.long, device=logits.device),
            torch.as_tensor(cols, dtype=torch.long, device=logits.device))

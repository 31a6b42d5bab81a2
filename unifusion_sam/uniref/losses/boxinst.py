"""BoxInst: mask losses from boxes only, for detection pre-training on box-annotated data (Objects365).

The authors' ``loss_masks_boxinst`` (from BoxInst, Tian et al. 2021), on the matched queries' stride-4
mask logits ``[M, h, w]``:

- ``loss_prj``: the projection term, dice between the max-projections of the mask probabilities and of
  the box mask along each axis (a mask whose rows and columns span the box scores 0);
- ``loss_pairwise``: for each pixel and its 8 neighbours at dilation 2, ``-log P(same label)``, averaged
  over the pairs inside the box whose colours are similar (LAB similarity ``exp(-||dLab|| / 2) >= 0.3``),
  ramped up linearly over the first 10000 calls.

The colour similarity is computed as the authors do: the padded 0..255 image average-pooled by 4,
channels taken in the order ``[2, 1, 0]`` (their RGB input goes through a swap written for BGR
images, kept for exactness), converted to LAB by scikit-image, compared with its dilated neighbours;
pairs reaching outside the valid image (padding, the bottom 10 rows of the original scale) get weight 0.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def unfold_without_centre(x: torch.Tensor, kernel: int, dilation: int) -> torch.Tensor:
    """``[B, C, H, W]`` -> ``[B, C, kernel * kernel - 1, H, W]``: each pixel's dilated neighbours ('same' padding)."""
    padding = (kernel + (dilation - 1) * (kernel - 1)) // 2
    unfolded = F.unfold(x, kernel_size=kernel, padding=padding, dilation=dilation)
    unfolded = unfolded.reshape(x.size(0), x.size(1), -1, x.size(2), x.size(3))
    centre = kernel * kernel // 2
    return torch.cat((unfolded[:, :, :centre], unfolded[:, :, centre + 1 :]), dim=2)


def color_similarity(image: torch.Tensor, valid: torch.Tensor, stride: int = 4, kernel: int = 3,
                     dilation: int = 2) -> torch.Tensor:
    """``image`` ``[3, Hp, Wp]`` 0..255 (padded), ``valid`` ``[Hp, Wp]`` 1 where the image is usable ->
    ``[8, Hp / stride, Wp / stride]`` LAB colour similarity of each pixel to its neighbours."""
    from skimage import color

    if image.shape[-2] % stride or image.shape[-1] % stride:
        raise ValueError(f"the padded image size {tuple(image.shape[-2:])} must be a multiple of {stride}")
    pooled = F.avg_pool2d(image[None].float(), kernel_size=stride, stride=stride)[0][[2, 1, 0]]
    lab = color.rgb2lab(pooled.byte().permute(1, 2, 0).cpu().numpy())
    lab = torch.as_tensor(np.ascontiguousarray(lab), dtype=torch.float32, device=image.device).permute(2, 0, 1)[None]
    diff = lab[:, :, None] - unfold_without_centre(lab, kernel, dilation)
    similarity = torch.exp(-torch.norm(diff, dim=1) * 0.5)  # [1, 8, h, w]
    start = stride // 2
    weights = unfold_without_centre(valid[start::stride, start::stride][None, None].float(), kernel, dilation)
    return (similarity * torch.max(weights, dim=1)[0])[0]


def valid_region(height: int, width: int, padded: tuple[int, int], original_height: int,
                 bottom_removed: int = 10) -> torch.Tensor:
    """``[Hp, Wp]``: 1 on the image, 0 on the padding and on its bottom rows (``bottom_removed`` rows at
    the original scale, where COCO-style annotations are unreliable)."""
    valid = torch.zeros(padded)
    valid[:height, :width] = 1
    removed = int(bottom_removed * float(height) / float(original_height))
    if removed > 0:
        valid[height - removed : height, :width] = 0
    return valid


def box_masks(boxes: torch.Tensor, padded: tuple[int, int]) -> torch.Tensor:
    """``[G, 4]`` xyxy pixel boxes -> ``[G, Hp, Wp]`` 0/1 masks of the boxes (the authors' integer rounding)."""
    out = torch.zeros(len(boxes), *padded, device=boxes.device)
    for g, (x0, y0, x1, y1) in enumerate(boxes.tolist()):
        out[g, int(y0) : int(y1 + 1), int(x0) : int(x1 + 1)] = 1.0
    return out


def dice_coefficient(x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    n = x.size(0)
    x, target = x.reshape(n, -1), target.reshape(n, -1)
    intersection = (x * target).sum(dim=1)
    union = (x**2.0).sum(dim=1) + (target**2.0).sum(dim=1) + 1e-5
    return 1.0 - 2 * intersection / union


def projection_term(probs: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """``[M, h, w]`` mask probabilities and box masks -> the mean of the two axes' projection dice."""
    y = dice_coefficient(probs.max(dim=1, keepdim=True)[0], boxes.max(dim=1, keepdim=True)[0])
    x = dice_coefficient(probs.max(dim=2, keepdim=True)[0], boxes.max(dim=2, keepdim=True)[0])
    return (x + y).mean()


def pairwise_term(logits: torch.Tensor, kernel: int = 3, dilation: int = 2) -> torch.Tensor:
    """``[M, h, w]`` logits -> ``[M, 8, h, w]`` ``-log P(pixel and neighbour take the same label)``."""
    x = logits[:, None]
    log_fg, log_bg = F.logsigmoid(x), F.logsigmoid(-x)
    same_fg = log_fg[:, :, None] + unfold_without_centre(log_fg, kernel, dilation)
    same_bg = log_bg[:, :, None] + unfold_without_centre(log_bg, kernel, dilation)
    top = torch.max(same_fg, same_bg)
    return -(torch.log(torch.exp(same_fg - top) + torch.exp(same_bg - top)) + top)[:, 0]


def boxinst_losses(logits: torch.Tensor, boxes: torch.Tensor, similarity: torch.Tensor, calls: int,
                   threshold: float = 0.3, warmup: int = 10000) -> dict[str, torch.Tensor]:
    """``logits`` ``[M, h, w]``, box masks ``[M, h, w]`` and colour similarities ``[M, 8, h, w]`` of the
    matched targets; ``calls``: how many times the loss has run (the pairwise warm-up counts calls)."""
    if logits.shape[0] == 0:
        zero = logits.sum() * 0.0
        return {"loss_prj": zero, "loss_pairwise": zero}
    weights = (similarity >= threshold).float() * boxes[:, None]
    pairwise = (pairwise_term(logits) * weights).sum() / weights.sum().clamp(min=1.0)
    return {"loss_prj": projection_term(logits.sigmoid(), boxes),
            "loss_pairwise": pairwise * min(calls / float(warmup), 1.0)}

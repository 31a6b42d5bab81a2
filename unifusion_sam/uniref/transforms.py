"""Test-time image and mask preprocessing of the full UniRef++ model (the authors' dataset mappers).

Images are resized with detectron2's ``ResizeShortestEdge(min_size, max_size)`` rule (shorter side to
``min_size`` unless the longer side would exceed ``max_size``; sizes rounded half up; PIL bilinear),
normalised with the model's pixel statistics on 0..255 RGB, and zero-padded bottom / right to a
multiple of 32 (or to a given padded size, for images batched together); the padding mask marks
the padded pixels. Masks are resized nearest to the resized image size and zero-padded alike.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..interface import PreparedImage


def shortest_edge_size(h: int, w: int, min_size: int, max_size: int) -> tuple[int, int]:
    """detectron2's ``ResizeShortestEdge.get_output_shape``: ``(new_h, new_w)``."""
    scale = min_size / min(h, w)
    new_h, new_w = (min_size, scale * w) if h < w else (scale * h, min_size)
    if max(new_h, new_w) > max_size:
        scale = max_size / max(new_h, new_w)
        new_h, new_w = new_h * scale, new_w * scale
    return int(new_h + 0.5), int(new_w + 0.5)


def padded_size(h: int, w: int, divisibility: int) -> tuple[int, int]:
    return (h + divisibility - 1) // divisibility * divisibility, (w + divisibility - 1) // divisibility * divisibility


def prepare_image(
    rgb: np.ndarray, min_size: int, max_size: int, mean: torch.Tensor, std: torch.Tensor, divisibility: int = 32,
    pad_to: tuple[int, int] | None = None, device: torch.device | str = "cpu",
) -> PreparedImage:
    """``H x W x 3`` uint8 RGB -> :class:`PreparedImage` (``pixels`` ``[1, 3, Hp, Wp]``)."""
    h, w = rgb.shape[:2]
    new_h, new_w = shortest_edge_size(h, w, min_size, max_size)
    if (new_h, new_w) != (h, w):
        rgb = np.asarray(Image.fromarray(rgb).resize((new_w, new_h), Image.BILINEAR))
    x = torch.from_numpy(np.array(rgb, dtype=np.uint8)).permute(2, 0, 1).float()
    x = (x - mean.view(3, 1, 1).cpu()) / std.view(3, 1, 1).cpu()
    ph, pw = padded_size(new_h, new_w, divisibility)
    if pad_to is not None:
        if pad_to[0] < ph or pad_to[1] < pw or pad_to[0] % divisibility or pad_to[1] % divisibility:
            raise ValueError(f"pad_to {pad_to} must be multiples of {divisibility} covering {(ph, pw)}")
        ph, pw = pad_to
    pixels = F.pad(x, (0, pw - new_w, 0, ph - new_h))[None].to(device)
    return PreparedImage(pixels, (new_h, new_w), (h, w))


def padding_mask(prepared: PreparedImage) -> torch.Tensor:
    """``[1, Hp, Wp]`` bool, True on the padding."""
    ph, pw = prepared.padded_size
    mask = torch.ones(1, ph, pw, dtype=torch.bool, device=prepared.pixels.device)
    mask[:, : prepared.input_size[0], : prepared.input_size[1]] = False
    return mask


def prepare_mask(mask: np.ndarray, prepared: PreparedImage) -> torch.Tensor:
    """``H x W`` bool at the original size -> ``[Hp, Wp]`` float 0/1 (nearest resize, zero padding)."""
    m = torch.as_tensor(np.ascontiguousarray(mask), dtype=torch.float32)[None, None]
    if tuple(m.shape[-2:]) != prepared.input_size:
        m = F.interpolate(m, size=prepared.input_size)
    ph, pw = prepared.padded_size
    return F.pad(m, (0, pw - m.shape[-1], 0, ph - m.shape[-2]))[0, 0].to(prepared.pixels.device)

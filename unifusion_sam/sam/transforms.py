"""Image, mask and prompt preprocessing for SAM, and mask postprocessing back to the input size.

Images are resized so their longest side equals SAM's input size (exactly like
``segment_anything.utils.transforms.ResizeLongestSide``), normalised with SAM's pixel statistics and
padded bottom-right to a square; predicted logits go the opposite way (upsample, crop, resize).
Input validation (which images and masks are accepted) is shared: :mod:`unifusion_sam.inference.inputs`.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from segment_anything.utils.transforms import ResizeLongestSide

from ..inference.inputs import to_bool_mask, to_rgb_array  # noqa: F401 - re-exported
from ..interface import PreparedImage


class SamTransform:
    """Resize-longest-side + normalise + pad for a SAM with input size ``S`` and pixel stats (0..255 scale)."""

    def __init__(self, image_size: int, pixel_mean: torch.Tensor, pixel_std: torch.Tensor) -> None:
        self.image_size = image_size
        self.resizer = ResizeLongestSide(image_size)
        self.pixel_mean = pixel_mean.detach().float().cpu().view(3, 1, 1)
        self.pixel_std = pixel_std.detach().float().cpu().view(3, 1, 1)

    def input_size(self, original_size: tuple[int, int]) -> tuple[int, int]:
        return ResizeLongestSide.get_preprocess_shape(original_size[0], original_size[1], self.image_size)

    def image(self, image: np.ndarray, device: torch.device | str = "cpu") -> PreparedImage:
        """``H x W x 3`` uint8 -> :class:`PreparedImage` on ``device``."""
        resized = self.resizer.apply_image(image)
        x = torch.as_tensor(resized, device="cpu").permute(2, 0, 1).contiguous().float()  # [3, h, w]
        h, w = x.shape[-2:]
        pad = (0, self.image_size - w, 0, self.image_size - h)
        pixels = F.pad((x - self.pixel_mean) / self.pixel_std, pad)
        unit = F.pad(x / 255.0, pad)
        return PreparedImage(pixels[None].to(device), (h, w), (image.shape[0], image.shape[1]), unit[None].to(device))

    def mask(self, mask: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
        """``H x W`` bool -> ``[1, S, S]`` float 0/1, resized (nearest) like its image and padded."""
        h, w = self.input_size(mask.shape)
        m = torch.as_tensor(mask.astype(np.float32))[None, None]
        m = F.interpolate(m, size=(h, w), mode="nearest")
        return F.pad(m, (0, self.image_size - w, 0, self.image_size - h))[0].to(device)

    def coords(self, coords: np.ndarray, original_size: tuple[int, int]) -> np.ndarray:
        """``N x 2`` (x, y) pixel coordinates of the original image -> SAM input coordinates."""
        return self.resizer.apply_coords(np.asarray(coords, dtype=np.float64), original_size)

    def boxes(self, boxes: np.ndarray, original_size: tuple[int, int]) -> np.ndarray:
        """``N x 4`` (x0, y0, x1, y1) boxes of the original image -> SAM input coordinates."""
        return self.resizer.apply_boxes(np.asarray(boxes, dtype=np.float64), original_size)

    def postprocess(
        self, logits: torch.Tensor, input_size: tuple[int, int], original_size: tuple[int, int]
    ) -> torch.Tensor:
        """Low-resolution logits ``[B, 1, s, s]`` -> ``[B, 1, H, W]`` at the original image size."""
        x = F.interpolate(logits, (self.image_size, self.image_size), mode="bilinear", align_corners=False)
        x = x[..., : input_size[0], : input_size[1]]
        return F.interpolate(x, original_size, mode="bilinear", align_corners=False)

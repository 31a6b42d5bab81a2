"""Image, mask and prompt preprocessing for SAM, and mask postprocessing back to the input size.

Images are resized so their longest side equals SAM's input size (exactly like
``segment_anything.utils.transforms.ResizeLongestSide``), normalised with SAM's pixel statistics and
padded bottom-right to a square; predicted logits go the opposite way (upsample, crop, resize).

Accepted images: ``H x W x 3`` uint8 RGB numpy arrays or PIL images. Grayscale (``H x W`` or
``H x W x 1``) and PIL "L"/"P" images are converted to RGB; RGBA images are converted by dropping
alpha (documented choice: SAM has no notion of transparency). Float arrays are rejected because
their range is ambiguous.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from segment_anything.utils.transforms import ResizeLongestSide


@dataclass
class PreparedImage:
    """A preprocessed image: ``pixels`` ``[1, 3, S, S]`` normalised and padded; ``unit`` ``[1, 3, S, S]``
    the same in [0, 1] (input of the mask encoder); sizes as (h, w)."""

    pixels: torch.Tensor
    unit: torch.Tensor
    input_size: tuple[int, int]
    original_size: tuple[int, int]


def to_rgb_array(image, name: str = "image") -> np.ndarray:
    """Validate and convert an image to ``H x W x 3`` uint8 RGB (see the module docstring for the rules)."""
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover
        Image = None
    if Image is not None and isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"), dtype=np.uint8)
    if isinstance(image, torch.Tensor):
        raise TypeError(f"{name} must be a numpy array (H x W x 3, uint8) or a PIL image, got a torch.Tensor")
    if not isinstance(image, np.ndarray):
        raise TypeError(f"{name} must be a numpy array (H x W x 3, uint8) or a PIL image, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise TypeError(f"{name} must have dtype uint8 (values 0..255), got {image.dtype} with shape {image.shape}")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    elif image.ndim == 3 and image.shape[2] == 4:
        image = image[:, :, :3]
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"{name} must be H x W x 3 (RGB), H x W (grayscale) or H x W x 4 (RGBA), got shape {image.shape}")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"{name} is empty: shape {image.shape}")
    return np.ascontiguousarray(image)


def to_bool_mask(mask, image_shape: tuple[int, int], name: str = "mask") -> np.ndarray:
    """Validate a reference mask against its image size; returns ``H x W`` bool.

    Accepts bool, or integer/float arrays whose values are all 0/1 or all 0/255 (PIL "1"/"L" images too).
    """
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover
        Image = None
    if Image is not None and isinstance(mask, Image.Image):
        mask = np.asarray(mask.convert("L"))
    if isinstance(mask, torch.Tensor):
        mask = mask.detach().cpu().numpy()
    if not isinstance(mask, np.ndarray):
        raise TypeError(f"{name} must be a numpy array (H x W), got {type(mask).__name__}")
    if mask.ndim == 3 and mask.shape[2] == 1:
        mask = mask[:, :, 0]
    if mask.ndim != 2 or tuple(mask.shape) != tuple(image_shape):
        raise ValueError(f"{name} has shape {mask.shape} but its image is {tuple(image_shape)} (H x W); they must match")
    if mask.dtype == bool:
        return mask
    values = np.unique(mask)
    if np.isin(values, (0, 1)).all():
        return mask.astype(bool)
    if np.isin(values, (0, 255)).all():
        return mask > 0
    raise ValueError(f"{name} must be binary (bool, 0/1 or 0/255), found values {values[:6].tolist()}")


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
        return PreparedImage(pixels[None].to(device), unit[None].to(device), (h, w), (image.shape[0], image.shape[1]))

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

"""Image, mask and prompt preprocessing for SAM, and mask postprocessing back to the input size.

Images are resized so their longest side equals SAM's input size (exactly like
``segment_anything.utils.transforms.ResizeLongestSide``), normalised with SAM's pixel statistics and
padded bottom-right to a square; predicted logits go the opposite way (upsample, crop, resize).
SAM 2 resizes the whole image to a square instead (:class:`Sam2Transform`).
Input validation (which images and masks are accepted) is shared: :mod:`unifusion_sam.inference.inputs`.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from segment_anything.utils.transforms import ResizeLongestSide
from torchvision.transforms import functional as tvF
from torchvision.transforms.v2 import functional as tvF2

from ...interface import PreparedImage


class SamTransform:
    """Resize-longest-side + normalise + pad for a SAM with input size ``S`` and pixel stats (0..255 scale)."""

    def __init__(self, image_size: int, pixel_mean: torch.Tensor, pixel_std: torch.Tensor) -> None:
        self.image_size = image_size
        self.resizer = ResizeLongestSide(image_size)
        self.pixel_mean = pixel_mean.detach().float().cpu().view(3, 1, 1)
        self.pixel_std = pixel_std.detach().float().cpu().view(3, 1, 1)

    def input_size(self, original_size: tuple[int, int]) -> tuple[int, int]:
        """``(h, w)`` of an ``original_size`` image resized so its longer side is ``S``; a ``ValueError`` names
        an image so thin that its shorter side would shrink to no pixel (e.g. 1 x 600 at ``S`` = 256)."""
        h, w = ResizeLongestSide.get_preprocess_shape(original_size[0], original_size[1], self.image_size)
        if h < 1 or w < 1:
            raise ValueError(f"an image of {original_size[0]} x {original_size[1]} (H x W) pixels is too thin for SAM: "
                             f"resized to its input size {self.image_size} it would be {h} x {w}; its shorter side "
                             f"must be at least {max(original_size) / (2 * self.image_size):g} pixels")
        return h, w

    def image(self, image: np.ndarray, device: torch.device | str = "cpu") -> PreparedImage:
        """``H x W x 3`` uint8 -> :class:`PreparedImage` on ``device``."""
        self.input_size(image.shape[:2])  # refuses an image too thin to resize
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


# ImageNet statistics on the 0..1 scale, as SAM 2 (both implementations) normalises.
SAM2_MEAN = (0.485, 0.456, 0.406)
SAM2_STD = (0.229, 0.224, 0.225)
SAM2_FLAVOURS = ("meta", "hf")


class Sam2Transform:
    """SAM 2's preprocessing: the whole image resized to ``S x S`` (aspect not kept, no padding), ImageNet
    normalisation; coordinates scale by ``S / W`` and ``S / H``; logits resize straight to the original size.

    The order of operations follows each implementation exactly, so the pixels are bit-identical to it:
    ``flavour="meta"`` as ``sam2.utils.transforms.SAM2Transforms`` (to float in [0, 1], antialiased bilinear
    resize, normalise; torchvision's v1 functions), ``"hf"`` as ``transformers.Sam2Processor`` (antialiased
    bilinear resize of the uint8 image, then rescale and normalise in one step; torchvision's v2 functions).
    """

    def __init__(self, image_size: int, flavour: str = "meta") -> None:
        if flavour not in SAM2_FLAVOURS:
            raise ValueError(f"flavour must be one of {SAM2_FLAVOURS}, got {flavour!r}")
        self.image_size = image_size
        self.flavour = flavour

    def input_size(self, original_size: tuple[int, int]) -> tuple[int, int]:
        return self.image_size, self.image_size

    def _resize(self, x: torch.Tensor) -> torch.Tensor:
        functions = tvF if self.flavour == "meta" else tvF2
        return functions.resize(x, [self.image_size, self.image_size], interpolation=tvF.InterpolationMode.BILINEAR,
                                antialias=True)

    def image(self, image: np.ndarray, device: torch.device | str = "cpu") -> PreparedImage:
        """``H x W x 3`` uint8 -> :class:`PreparedImage`: ``pixels`` / ``unit`` ``[1, 3, S, S]``, input size ``(S, S)``."""
        if self.flavour == "meta":
            unit = self._resize(tvF.to_tensor(image))
            pixels = tvF.normalize(unit, list(SAM2_MEAN), list(SAM2_STD))
        else:
            resized = self._resize(torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).contiguous()[None])[0]
            mean = torch.tensor(SAM2_MEAN) * (1.0 / (1 / 255))  # the processor's fused rescale + normalise
            std = torch.tensor(SAM2_STD) * (1.0 / (1 / 255))
            pixels = tvF2.normalize(resized.to(torch.float32), mean, std, inplace=True)
            unit = resized.float() / 255.0
        size = (self.image_size, self.image_size)
        return PreparedImage(pixels[None].to(device), size, (image.shape[0], image.shape[1]), unit[None].to(device))

    def mask(self, mask: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
        """``H x W`` bool -> ``[1, S, S]`` float 0/1, resized (nearest) like its image."""
        m = torch.as_tensor(mask.astype(np.float32))[None, None]
        return F.interpolate(m, size=(self.image_size,) * 2, mode="nearest")[0].to(device)

    def coords(self, coords: np.ndarray, original_size: tuple[int, int]) -> np.ndarray:
        """``N x 2`` (x, y) pixels of the original image -> SAM 2 input coordinates (float32, as SAM 2 computes them)."""
        h, w = original_size
        c = torch.as_tensor(np.asarray(coords, dtype=np.float64), dtype=torch.float).clone()
        if self.flavour == "meta":  # SAM2Transforms.transform_coords(normalize=True)
            c[..., 0] = c[..., 0] / w
            c[..., 1] = c[..., 1] / h
            c = c * self.image_size
        else:  # Sam2Processor._normalize_coordinates
            c[..., 0] = c[..., 0] * (self.image_size / w)
            c[..., 1] = c[..., 1] * (self.image_size / h)
        return c.numpy()

    def boxes(self, boxes: np.ndarray, original_size: tuple[int, int]) -> np.ndarray:
        """``N x 4`` (x0, y0, x1, y1) boxes of the original image -> SAM 2 input coordinates."""
        corners = np.asarray(boxes, dtype=np.float64).reshape(-1, 2, 2)
        return self.coords(corners, original_size).reshape(-1, 4)

    def postprocess(
        self, logits: torch.Tensor, input_size: tuple[int, int], original_size: tuple[int, int]
    ) -> torch.Tensor:
        """Low-resolution logits ``[B, 1, s, s]`` -> ``[B, 1, H, W]``: one bilinear resize, as SAM 2 does."""
        return F.interpolate(logits.float(), original_size, mode="bilinear", align_corners=False)

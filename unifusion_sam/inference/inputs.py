"""Validation of user inputs shared by both families: images (numpy / PIL -> H x W x 3 uint8 RGB) and masks.

Accepted images: ``H x W x 3`` uint8 RGB numpy arrays or PIL images. Grayscale (``H x W`` or
``H x W x 1``) and PIL "L"/"P" images are converted to RGB; RGBA images are converted by dropping
alpha (documented choice: the models have no notion of transparency). Float arrays are rejected
because their range is ambiguous. Masks are bool, 0/1 or 0/255 and must match their image's size.
"""

from __future__ import annotations

import numpy as np
import torch


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

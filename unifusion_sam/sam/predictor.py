"""Numpy-in, numpy-out prediction with references, like ``segment_anything.SamPredictor``.

The predictor owns the state the network does not: an embedding cache (the image encoder is frozen,
so an image's embedding is computed once and reused, keyed by its content) and the current image
(``set_image``). Input rules:

- images: ``H x W x 3`` uint8 RGB or PIL; grayscale is converted to RGB, RGBA drops alpha;
- reference masks: ``H x W`` matching their image, bool / 0-1 / 0-255;
- an all-empty reference mask is allowed (the object is absent from that reference, as happens in
  video); if *every* reference mask is empty a :class:`UserWarning` is emitted, since the result
  then rests on image context alone;
- ``text``: one non-empty string; points: ``N x 2`` (x, y) inside the image with labels 0/1;
  ``box``: (x0, y0, x1, y1) inside the image.

Reference images here are examples (few-shot supports): where the object lies in them says nothing
about where it lies in the query. For frames of one video use ``model.track``, whose references are
earlier frames and which therefore uses UniFusion's locality prior (``fusion.mask_pos_logit``).
"""

from __future__ import annotations

import hashlib
import warnings
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..encoders.text import validate_sentences
from .batch import SamBatch
from .transforms import PreparedImage, SamTransform, to_bool_mask, to_rgb_array


@dataclass
class Prediction:
    """``mask``: ``H x W`` bool at the input image size; ``score``: the predicted IoU (object score);
    ``logits``: ``H x W`` float32 mask logits at the input size; ``low_res_logits``: ``s x s`` SAM logits."""

    mask: np.ndarray
    score: float
    logits: np.ndarray
    low_res_logits: np.ndarray


class EmbeddingCache:
    """LRU cache of frozen-encoder outputs keyed by image content (``[1, 256, h, w]`` tensors)."""

    def __init__(self, capacity: int = 16) -> None:
        if capacity < 0:
            raise ValueError(f"capacity must be >= 0, got {capacity}")
        self.capacity = capacity
        self._items: OrderedDict[str, tuple[PreparedImage, torch.Tensor]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(image: np.ndarray) -> str:
        digest = hashlib.blake2b(np.ascontiguousarray(image).data, digest_size=16)
        digest.update(str(image.shape).encode())
        return digest.hexdigest()

    def get(self, key: str):
        item = self._items.get(key)
        if item is None:
            self.misses += 1
            return None
        self.hits += 1
        self._items.move_to_end(key)
        return item

    def put(self, key: str, value) -> None:
        if self.capacity == 0:
            return
        self._items[key] = value
        self._items.move_to_end(key)
        while len(self._items) > self.capacity:
            self._items.popitem(last=False)

    def clear(self) -> None:
        self._items.clear()

    def __len__(self) -> int:
        return len(self._items)


class ReferencePredictor:
    """Stateful predictor over a :class:`~unifusion_sam.sam.model.UniFusionSam` network."""

    def __init__(self, model, cache_size: int = 16) -> None:
        self.model = model
        self.transform = SamTransform(model.image_size, model.backend.pixel_mean, model.backend.pixel_std)
        self.cache = EmbeddingCache(cache_size)
        self._current: tuple[np.ndarray, PreparedImage, torch.Tensor] | None = None

    # ------------------------------------------------------------------ images
    def embed(self, image, name: str = "image") -> tuple[np.ndarray, PreparedImage, torch.Tensor]:
        """Validate, preprocess and encode an image, reusing the cache. Returns (rgb, prepared, [1,256,h,w])."""
        rgb = to_rgb_array(image, name)
        key = f"{EmbeddingCache.key(rgb)}:{self.model.encoder_version()!r}"
        hit = self.cache.get(key)
        if hit is not None:
            return rgb, hit[0], hit[1]
        prepared = self.transform.image(rgb, self.model.device)
        with torch.no_grad():
            emb = self.model.encode_image(prepared.pixels)
        self.cache.put(key, (prepared, emb))
        return rgb, prepared, emb

    def set_image(self, image) -> None:
        """Compute (or fetch) the embedding of ``image`` for the next ``predict`` calls without an image."""
        self._current = self.embed(image)

    def reset_image(self) -> None:
        self._current = None

    # ------------------------------------------------------------------ prediction
    def predict(
        self,
        image=None,
        *,
        text: str | None = None,
        ref_images: Sequence | None = None,
        ref_masks: Sequence | None = None,
        point_coords=None,
        point_labels=None,
        box=None,
    ) -> Prediction:
        """Segment the object given by the references and/or prompts (see the module docstring)."""
        if image is None:
            if self._current is None:
                raise ValueError("no image: pass one or call set_image(image) first")
            rgb, prepared, emb = self._current
        else:
            rgb, prepared, emb = self.embed(image)
        size = rgb.shape[:2]
        texts = [None]
        if text is not None:
            if not isinstance(text, str):
                raise TypeError(f"text must be a string, got {type(text).__name__}: {text!r}")
            texts = validate_sentences(text)
        refs = self._references(ref_images, ref_masks)
        coords, labels, boxes = self._prompts(point_coords, point_labels, box, size)
        if texts[0] is None and not refs and coords is None and boxes is None:
            raise ValueError("nothing to segment: give text, ref_images + ref_masks, point_coords or box")

        batch = SamBatch(texts=texts, embeddings=emb, point_coords=coords, point_labels=labels, boxes=boxes)
        if refs:
            batch.ref_units = torch.cat([r[0].unit for r in refs])
            batch.ref_embeddings = torch.cat([r[1] for r in refs])
            batch.ref_masks = torch.cat([r[2] for r in refs])
            batch.ref_owner = torch.zeros(len(refs), dtype=torch.long, device=emb.device)
        modes = [(m, m.training) for m in self.model.modules()]
        self.model.eval()  # inference: no dropout, BatchNorm running statistics (and none updated)
        try:
            with torch.no_grad():
                out = self.model(batch)
                full = self.transform.postprocess(out.logits, prepared.input_size, prepared.original_size)
        finally:
            for m, mode in modes:  # give every submodule its own mode back
                m.training = mode
        logits = full[0, 0].float().cpu().numpy()
        return Prediction(
            mask=logits > 0.0,
            score=float(out.scores[0]),
            logits=logits,
            low_res_logits=out.logits[0, 0].float().cpu().numpy(),
        )

    def _references(self, ref_images, ref_masks) -> list[tuple[PreparedImage, torch.Tensor, torch.Tensor]]:
        if ref_images is None and ref_masks is None:
            return []
        if ref_images is None or ref_masks is None:
            raise ValueError("ref_images and ref_masks must be given together")
        if isinstance(ref_images, np.ndarray) and ref_images.ndim == 3:
            ref_images = [ref_images]
        if isinstance(ref_masks, np.ndarray) and ref_masks.ndim == 2:
            ref_masks = [ref_masks]
        ref_images, ref_masks = list(ref_images), list(ref_masks)
        if len(ref_images) != len(ref_masks):
            raise ValueError(f"got {len(ref_images)} ref_images but {len(ref_masks)} ref_masks; they must pair up")
        if not ref_images:
            raise ValueError("ref_images is empty; give at least one reference or none at all")
        out = []
        for k, (img, m) in enumerate(zip(ref_images, ref_masks)):
            rgb, prepared, emb = self.embed(img, name=f"ref_images[{k}]")
            mask = to_bool_mask(m, rgb.shape[:2], name=f"ref_masks[{k}]")
            out.append((prepared, emb, self.transform.mask(mask, self.model.device)))
        if all(not bool(r[2].any()) for r in out):
            warnings.warn("all reference masks are empty: the prediction rests on image context alone", stacklevel=3)
        return out

    def _prompts(self, point_coords, point_labels, box, size: tuple[int, int]):
        h, w = size
        coords = labels = boxes = None
        if (point_coords is None) != (point_labels is None):
            raise ValueError("point_coords and point_labels must be given together")
        if point_coords is not None:
            pts = np.asarray(point_coords, dtype=np.float64)
            lab = np.asarray(point_labels)
            if pts.ndim != 2 or pts.shape[1] != 2:
                raise ValueError(f"point_coords must be N x 2 (x, y), got shape {pts.shape}")
            if not np.isfinite(pts).all():
                raise ValueError(f"point_coords must be finite, got {pts.tolist()}")
            if lab.shape != (pts.shape[0],):
                raise ValueError(f"point_labels must have shape ({pts.shape[0]},), got {lab.shape}")
            if not np.isin(lab, (0, 1)).all():
                raise ValueError(f"point_labels must be 0 (background) or 1 (foreground), got {np.unique(lab).tolist()}")
            outside = (pts[:, 0] < 0) | (pts[:, 0] >= w) | (pts[:, 1] < 0) | (pts[:, 1] >= h)
            if outside.any():
                raise ValueError(f"point {pts[outside][0].tolist()} lies outside the {w} x {h} (W x H) image")
            t = self.transform.coords(pts, size)
            coords = torch.as_tensor(t, dtype=torch.float, device=self.model.device)[None]
            labels = torch.as_tensor(lab, dtype=torch.int, device=self.model.device)[None]
        if box is not None:
            bx = np.asarray(box, dtype=np.float64).reshape(-1)
            if bx.shape != (4,):
                raise ValueError(f"box must be (x0, y0, x1, y1), got {np.asarray(box).shape}")
            if not (0 <= bx[0] < bx[2] <= w and 0 <= bx[1] < bx[3] <= h):
                raise ValueError(f"box {bx.tolist()} must satisfy 0 <= x0 < x1 <= {w} and 0 <= y0 < y1 <= {h}")
            boxes = torch.as_tensor(self.transform.boxes(bx[None], size), dtype=torch.float, device=self.model.device)
        return coords, labels, boxes

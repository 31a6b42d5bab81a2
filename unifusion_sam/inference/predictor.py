"""Numpy-in, numpy-out prediction with references, like ``segment_anything.SamPredictor``, for both families.

The predictor owns the state the network does not: a cache of encoded frames (the image encoder is
frozen at inference, so an image is encoded once and reused, keyed by its content, the task's
preprocessing and the encoder version) and the current image (``set_image``). It talks to the model
only through :class:`~unifusion_sam.interface.ReferenceSegmenter`. Input rules:

- images: ``H x W x 3`` uint8 RGB or PIL; grayscale is converted to RGB, RGBA drops alpha;
- reference masks: ``H x W`` matching their image, bool / 0-1 / 0-255;
- an all-empty reference mask is allowed (the object is absent from that reference, as happens in
  video); if *every* reference mask is empty a :class:`UserWarning` is emitted, since the result
  then rests on image context alone;
- ``text``: one non-empty string; points: ``N x 2`` (x, y) inside the image with labels 0/1;
  ``box``: (x0, y0, x1, y1) inside the image (prompts: SAM family only).

Reference images here are examples (few-shot supports): where the object lies in them says nothing
about where it lies in the query. For frames of one video use ``model.track``.
"""

from __future__ import annotations

import hashlib
import warnings
from collections import OrderedDict
from collections.abc import Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, fields, is_dataclass

import numpy as np
import torch

from ..encoders.text import validate_sentences
from ..interface import MaskReference, ObjectQuery, Prompts
from .inputs import to_bool_mask, to_rgb_array


@dataclass
class Prediction:
    """``mask``: ``H x W`` bool at the input image size; ``score``: the object score (SAM: predicted IoU;
    UniRef++: the chosen query's class probability); ``logits``: ``H x W`` float32 mask logits at the
    input size; ``low_res_logits``: the network's own-resolution logits; ``box``: (x0, y0, x1, y1)
    pixels where the model predicts boxes (UniRef++), else ``None``."""

    mask: np.ndarray
    score: float
    logits: np.ndarray | None
    low_res_logits: np.ndarray
    box: np.ndarray | None = None


def value_bytes(value) -> int:
    """Bytes of the tensors in ``value`` (a tensor, or dataclasses / lists / tuples / dicts of them)."""
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if is_dataclass(value) and not isinstance(value, type):
        return sum(value_bytes(getattr(value, f.name)) for f in fields(value))
    if isinstance(value, (list, tuple)):
        return sum(value_bytes(v) for v in value)
    if isinstance(value, dict):
        return sum(value_bytes(v) for v in value.values())
    return 0


class EmbeddingCache:
    """LRU cache of encoded frames keyed by image content (and preprocessing): at most ``capacity``
    entries and ``max_bytes`` bytes of tensors (``None``: no byte limit); the least recently used go
    first, and an entry larger than ``max_bytes`` is not kept."""

    def __init__(self, capacity: int = 16, max_bytes: int | None = None) -> None:
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 0:
            raise ValueError(f"capacity must be a non-negative int, got {capacity!r}")
        if max_bytes is not None and (isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 0):
            raise ValueError(f"max_bytes must be a non-negative int or None, got {max_bytes!r}")
        self.capacity = capacity
        self.max_bytes = max_bytes
        self._items: OrderedDict[str, tuple[object, int]] = OrderedDict()
        self.bytes = 0
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
        return item[0]

    def put(self, key: str, value) -> None:
        size = value_bytes(value)
        if self.capacity == 0 or (self.max_bytes is not None and size > self.max_bytes):
            return
        old = self._items.pop(key, None)
        if old is not None:
            self.bytes -= old[1]
        self._items[key] = (value, size)
        self.bytes += size
        while len(self._items) > self.capacity or (self.max_bytes is not None and self.bytes > self.max_bytes):
            _, (_, dropped) = self._items.popitem(last=False)
            self.bytes -= dropped

    def resize(self, capacity: int) -> None:
        """Change how many entries the cache keeps (the least recently used beyond it go now)."""
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 0:
            raise ValueError(f"capacity must be a non-negative int, got {capacity!r}")
        self.capacity = capacity
        while len(self._items) > capacity:
            _, (_, dropped) = self._items.popitem(last=False)
            self.bytes -= dropped

    @contextmanager
    def holding(self, count: int):
        """Keep at least ``count`` entries inside the block (e.g. every frame of a clip that is tracked
        several times, once per expression), then the previous capacity again."""
        previous = self.capacity
        self.resize(max(previous, count))
        try:
            yield self
        finally:
            self.resize(previous)

    def clear(self) -> None:
        self._items.clear()
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._items)


@contextmanager
def inference_mode(model):
    """``no_grad`` with every submodule in eval mode (no dropout, BatchNorm running statistics, none
    updated); each module's own mode is restored after. A model with an ``inference_context()`` method (a
    context manager: a runtime's own settings, such as :class:`~unifusion_sam.sam.onnx.OnnxSam`'s torch
    threads) is run inside it too."""
    # only the modules in training mode are switched (and back): setting ``training`` through
    # ``nn.Module.__setattr__`` on every module of a large model costs milliseconds per call
    training = [m for m in model.modules() if m.training] if isinstance(model, torch.nn.Module) else []
    for m in training:
        m.training = False
    runtime = getattr(model, "inference_context", None)
    try:
        with torch.no_grad(), (runtime() if runtime is not None else nullcontext()):
            yield
    finally:
        for m in training:
            m.training = True


def _as_list(value, name: str, what: str) -> list:
    """``value`` (a list, tuple or other iterable of ``what``) as a list; a ``TypeError`` names anything else."""
    try:
        return list(value)
    except TypeError:
        raise TypeError(f"{name} must be a list of {what}, got {type(value).__name__}: {value!r:.80}") from None


def _as_array(value, name: str, dtype=None) -> np.ndarray:
    """``value`` as a numpy array (of ``dtype``); a ``ValueError`` names what cannot be read as numbers."""
    try:
        array = np.asarray(value)
        complex_values = np.iscomplexobj(array)
        if not complex_values and dtype is not None:
            array = array.astype(dtype)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be an array of numbers, got {value!r:.80} ({exc})") from None
    if complex_values:  # numpy would drop the imaginary part with only a warning
        raise ValueError(f"{name} must be real numbers, got complex values {value!r:.80}")
    return array


class ReferencePredictor:
    """Stateful predictor over a :class:`~unifusion_sam.interface.ReferenceSegmenter` network."""

    def __init__(self, model, cache_size: int | None = None) -> None:
        self.model = model
        self.cache = EmbeddingCache(cache_size if cache_size is not None else getattr(model, "frame_cache_size", 16),
                                    getattr(model, "frame_cache_bytes", None))
        self._current: np.ndarray | None = None

    # ------------------------------------------------------------------ images
    def embed(self, image, name: str = "image", task: str = "ris", pad_to: tuple[int, int] | None = None):
        """Validate, preprocess and encode an image for ``task``, reusing the cache.
        Returns ``(rgb, prepared, frame)``."""
        rgb = to_rgb_array(image, name)
        key = f"{EmbeddingCache.key(rgb)}:{task}:{pad_to}:{self.model.encoder_version()!r}"
        hit = self.cache.get(key)
        if hit is not None:
            return rgb, hit[0], hit[1]
        with inference_mode(self.model):
            prepared = self.model.prepare_image(rgb, task, pad_to)
            frame = self.model.encode_frame(prepared)
        self.cache.put(key, (prepared, frame))
        return rgb, prepared, frame

    def set_image(self, image) -> None:
        """Encode ``image`` now and keep it for the next ``predict`` calls without an image. (The full
        UniRef++ model sizes examples-only queries differently; such a call encodes the image once more.)"""
        self._current, _, _ = self.embed(image, task="ris")

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
            image = self._current
        rgb = to_rgb_array(image)
        if text is not None:
            if not isinstance(text, str):
                raise TypeError(f"text must be a string, got {type(text).__name__}: {text!r}")
            validate_sentences(text)
        pairs = self.reference_pairs(ref_images, ref_masks)
        prompts = self.check_prompts(point_coords, point_labels, box, rgb.shape[:2])
        if text is None and not pairs and prompts is None:
            raise ValueError("nothing to segment: give text, ref_images + ref_masks, point_coords or box")
        task = "fss" if pairs and text is None else "ris"
        _, prepared, frame = self.embed(rgb, task=task)
        with inference_mode(self.model):
            masks = self.encode_references(pairs, task) if pairs else None
            feats = self.model.encode_text([text]) if text is not None else None
            objects = [ObjectQuery(text=feats, masks=[masks[k] for k in range(len(masks))] if masks else [])] \
                if (feats is not None or masks is not None) else []
            decoded = self.model.decode_objects(frame, prepared, objects, task=task, tracking=False, prompts=prompts)
            result = self.model.postprocess(decoded, prepared, task)
        return Prediction(
            mask=result.masks[0].cpu().numpy(),
            score=float(decoded.scores[0]),
            logits=None if result.logits is None else result.logits[0].float().cpu().numpy(),
            low_res_logits=decoded.logits[0, 0].float().cpu().numpy(),
            box=None if result.boxes is None else result.boxes[0].float().cpu().numpy(),
        )

    def reference_pairs(self, ref_images, ref_masks) -> list[tuple[np.ndarray, np.ndarray]]:
        if ref_images is None and ref_masks is None:
            return []
        if ref_images is None or ref_masks is None:
            raise ValueError("ref_images and ref_masks must be given together")
        if isinstance(ref_images, np.ndarray) and ref_images.ndim == 3:
            ref_images = [ref_images]
        if isinstance(ref_masks, np.ndarray) and ref_masks.ndim == 2:
            ref_masks = [ref_masks]
        ref_images, ref_masks = _as_list(ref_images, "ref_images", "images"), _as_list(ref_masks, "ref_masks", "masks")
        if len(ref_images) != len(ref_masks):
            raise ValueError(f"got {len(ref_images)} ref_images but {len(ref_masks)} ref_masks; they must pair up")
        if not ref_images:
            raise ValueError("ref_images is empty; give at least one reference or none at all")
        pairs = []
        for k, (img, m) in enumerate(zip(ref_images, ref_masks)):
            rgb = to_rgb_array(img, name=f"ref_images[{k}]")
            pairs.append((rgb, to_bool_mask(m, rgb.shape[:2], name=f"ref_masks[{k}]")))
        if all(not m.any() for _, m in pairs):
            warnings.warn("all reference masks are empty: the prediction rests on image context alone", stacklevel=3)
        return pairs

    def encode_references(self, pairs, task: str) -> MaskReference:
        """K (image, mask) supports, batched at one padded size (as the authors batch their shots): images
        whose own padded size is smaller are padded to the largest (and encoded at that size)."""
        encoded = [self.embed(rgb, name=f"ref_images[{k}]", task=task) for k, (rgb, _) in enumerate(pairs)]
        sizes = {e[1].padded_size for e in encoded}
        if len(sizes) > 1:
            pad_to = (max(s[0] for s in sizes), max(s[1] for s in sizes))
            encoded = [e if e[1].padded_size == pad_to else self.embed(rgb, name=f"ref_images[{k}]", task=task, pad_to=pad_to)
                       for k, ((rgb, _), e) in enumerate(zip(pairs, encoded))]
        masks = torch.stack([self.model.prepare_mask(mask, e[1]) for (_, mask), e in zip(pairs, encoded)])
        return self.model.encode_masks([e[2] for e in encoded], [e[1] for e in encoded], masks)

    @staticmethod
    def check_prompts(point_coords, point_labels, box, size: tuple[int, int]) -> Prompts | None:
        """SAM-style prompts validated against an image of ``size`` (H, W): ``Prompts`` in its pixels, or
        ``None`` when there are none; a ``ValueError`` names a bad point, label or box."""
        h, w = size
        if (point_coords is None) != (point_labels is None):
            raise ValueError("point_coords and point_labels must be given together")
        pts = lab = bx = None
        if point_coords is not None:
            pts = _as_array(point_coords, "point_coords", np.float64)
            lab = _as_array(point_labels, "point_labels")
            if pts.ndim != 2 or pts.shape[1] != 2:
                raise ValueError(f"point_coords must be N x 2 (x, y), got shape {pts.shape}")
            if not np.isfinite(pts).all():
                raise ValueError(f"point_coords must be finite, got {pts.tolist()}")
            if lab.shape != (pts.shape[0],):
                raise ValueError(f"point_labels must have shape ({pts.shape[0]},), got {lab.shape}")
            bad = ~np.isin(lab, (0, 1))
            if bad.any():
                raise ValueError(f"point_labels must be 0 (background) or 1 (foreground), got "
                                 f"{list(dict.fromkeys(lab[bad].tolist()))[:6]}")
            outside = (pts[:, 0] < 0) | (pts[:, 0] >= w) | (pts[:, 1] < 0) | (pts[:, 1] >= h)
            if outside.any():
                raise ValueError(f"point {pts[outside][0].tolist()} lies outside the {w} x {h} (W x H) image")
        if box is not None:
            bx = _as_array(box, "box", np.float64).reshape(-1)
            if bx.shape != (4,):
                raise ValueError(f"box must be (x0, y0, x1, y1), got {np.asarray(box).shape}")
            if not (0 <= bx[0] < bx[2] <= w and 0 <= bx[1] < bx[3] <= h):
                raise ValueError(f"box {bx.tolist()} must satisfy 0 <= x0 < x1 <= {w} and 0 <= y0 < y1 <= {h}")
        if pts is None and bx is None:
            return None
        return Prompts(pts, lab, bx)

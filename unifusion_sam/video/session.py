"""Online video inference (VOS and RVOS): a stateful session over the stateless network.

Feed frames one at a time (``session.step(frame)``, or ``for r in session.run(frames)`` over any
iterable, so a live stream works). Per object the session keeps a fixed-size state: the encoded
*first* reference (its mask on the frame where it was given, or for RVOS the first frame whose
language-only score passes ``sigma``), and the *previous* frame's predicted mask. The previous frame's
embedding and image are shared by all objects. Nothing grows with the number of frames seen.

Per frame: the frame is encoded once; all objects are decoded in one batched forward (each with its
own references); a mask is kept only if its score exceeds ``sigma``; masks are merged by soft
aggregation (background = prod(1 - p_i), argmax) into a label map with stable ids. On the frame where
an object's mask is given, the given mask is the output (painted over the predictions; where two
given masks overlap, the smaller id wins). The network runs in inference mode (``eval``: no dropout,
BatchNorm running statistics, none updated) and the caller's train/eval modes are restored after.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..fusion.unifusion import ReferenceTokens
from ..sam.batch import References, stack_text
from ..sam.model import MaskReference
from ..sam.transforms import PreparedImage, to_bool_mask, to_rgb_array

SIGMA_PRESETS = {"youtube_vos": 0.4, "mose": 0.4, "davis": 0.3, "rvos": 0.3, "lvos": 0.5}


def resolve_sigma(sigma: float | str) -> float:
    """A score threshold, or a preset name: youtube_vos/mose 0.4, davis/rvos 0.3, lvos 0.5."""
    if isinstance(sigma, str):
        if sigma not in SIGMA_PRESETS:
            raise ValueError(f"unknown sigma preset {sigma!r}; choose a number or one of {sorted(SIGMA_PRESETS)}")
        return SIGMA_PRESETS[sigma]
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float)):
        raise TypeError(f"sigma must be a number or a preset name, got {sigma!r}")
    return float(sigma)


@dataclass
class FrameResult:
    """One frame's output: ``masks`` {object id: H x W bool}, ``scores`` {object id: float} (the
    predicted IoU; given masks score 1.0), ``label_map`` H x W uint8 (0 = background)."""

    index: int
    masks: dict[int, np.ndarray]
    scores: dict[int, float]
    label_map: np.ndarray


@dataclass
class _Object:
    text: str | None = None
    words: torch.Tensor | None = None  # [L, C]
    pooled: torch.Tensor | None = None  # [C]
    first: MaskReference | None = None  # tokens [1, h*w, C], prototype [1, C]
    prev_mask: torch.Tensor | None = None  # [S, S] float 0/1 at SAM input resolution
    pending: np.ndarray | None = None  # a mask given for the next frame
    meta: dict = field(default_factory=dict)


class VideoSession:
    """Track objects through a video with a :class:`~unifusion_sam.sam.model.UniFusionSam`.

    ``sigma``: score threshold or preset; ``max_short_side``: frames whose shorter side is larger are
    downscaled to it for inference (480 in the paper's protocol; ``None`` keeps the original size);
    results are always at the original frame size.
    """

    def __init__(self, model, *, sigma: float | str = 0.4, max_short_side: int | None = None) -> None:
        self.model = model
        self.sigma = resolve_sigma(sigma)
        if max_short_side is not None and (not isinstance(max_short_side, int) or max_short_side <= 0):
            raise ValueError(f"max_short_side must be a positive int or None, got {max_short_side!r}")
        self.max_short_side = max_short_side
        self.transform = model.predictor.transform
        self.objects: dict[int, _Object] = {}
        self.frame_index = -1
        self._prev: tuple[PreparedImage, torch.Tensor] | None = None  # previous frame (prepared, embedding)
        self._size: tuple[int, int] | None = None

    # ------------------------------------------------------------------ objects
    def add_object(self, obj_id: int, mask) -> None:
        """Give object ``obj_id``'s mask on the next frame to be processed (its first frame, or a correction)."""
        obj_id = self._check_id(obj_id)
        obj = self.objects.setdefault(obj_id, _Object())
        obj.pending = mask

    def add_text_object(self, obj_id: int, text: str) -> None:
        """Track the object a sentence refers to (RVOS), from the next frame on."""
        obj_id = self._check_id(obj_id)
        if not isinstance(text, str):
            raise TypeError(f"text must be a string, got {type(text).__name__}: {text!r}")
        with self._inference():
            feats = self.model.encode_text([text])
        valid = ~feats.padding_mask[0]
        self.objects[obj_id] = _Object(text=text, words=feats.words[0][valid], pooled=feats.pooled[0])

    def remove_object(self, obj_id: int) -> None:
        self.objects.pop(obj_id, None)

    @staticmethod
    def _check_id(obj_id: int) -> int:
        if isinstance(obj_id, bool) or not isinstance(obj_id, (int, np.integer)) or not 1 <= int(obj_id) <= 255:
            raise ValueError(f"object ids must be ints in [1, 255] (0 is background), got {obj_id!r}")
        return int(obj_id)

    @contextmanager
    def _inference(self):
        """``no_grad`` with every submodule in eval mode; the modules' own modes are restored after."""
        modules = list(self.model.modules()) if isinstance(self.model, torch.nn.Module) else []
        modes = [m.training for m in modules]
        for m in modules:
            m.training = False
        try:
            with torch.no_grad():
                yield
        finally:
            for m, mode in zip(modules, modes):
                m.training = mode

    # ------------------------------------------------------------------ frames
    def run(self, frames: Iterable, new_objects: Mapping[int, Mapping[int, np.ndarray]] | None = None) -> Iterator[FrameResult]:
        """Step through ``frames`` lazily; ``new_objects[i]`` = {object id: mask} given on frame ``i``
        (the session's frame index, which equals the position in ``frames`` for a new session)."""
        for frame in frames:
            for obj_id, mask in (new_objects or {}).get(self.frame_index + 1, {}).items():
                self.add_object(obj_id, mask)
            yield self.step(frame)

    def step(self, frame) -> FrameResult:
        """Process the next frame: ``H x W x 3`` uint8 RGB (or PIL)."""
        rgb = to_rgb_array(frame, name=f"frame {self.frame_index + 1}")
        size = rgb.shape[:2]
        if self._size is not None and size != self._size:
            raise ValueError(f"frame {self.frame_index + 1} has size {size} (H x W) but the video's frames are "
                             f"{self._size}")
        # validate every mask given for this frame before touching the state, so an error leaves it intact
        pending = {k: to_bool_mask(o.pending, size, name=f"mask of object {k}")
                   for k, o in self.objects.items() if o.pending is not None}
        self._size = size
        self.frame_index += 1
        work = self._downscale(rgb)
        with self._inference():
            # the only image encode of this frame; the predictor's small LRU cache lets several tracks
            # over the same video (e.g. one per RVOS expression) share the frame's embedding
            _, prepared, emb = self.model.predictor.embed(work, name=f"frame {self.frame_index}")
            given = self._take_given(pending, prepared, emb)
            tracked = [k for k, o in self.objects.items() if k not in given and (o.prev_mask is not None or o.text)]
            probs, scores = self._predict(tracked, prepared, emb) if tracked else ({}, {})
            label_map = self._aggregate(probs, prepared, size)  # predicted objects only ...
            scores.update({k: 1.0 for k in given})
            for k in sorted(pending, reverse=True):  # ... then given masks, exactly as given, on top
                label_map[pending[k]] = k
            masks = {k: label_map == k for k in self.objects}
            self._update_state(prepared, emb, label_map, masks, scores, tracked)
        return FrameResult(self.frame_index, masks, scores, label_map)

    def _downscale(self, rgb: np.ndarray) -> np.ndarray:
        h, w = rgb.shape[:2]
        if self.max_short_side is None or min(h, w) <= self.max_short_side:
            return rgb
        scale = self.max_short_side / min(h, w)
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        return np.asarray(Image.fromarray(rgb).resize(size, Image.BILINEAR))

    def _take_given(self, pending: dict[int, np.ndarray], prepared: PreparedImage,
                    emb: torch.Tensor) -> set[int]:
        """Masks given for this frame (validated, at the frame size) become the object's first reference."""
        for k, mask in pending.items():
            obj = self.objects[k]
            obj.pending = None
            small = self._to_work_size(mask, prepared.input_size)
            input_mask = self.transform.mask(small, self.model.device)  # [1, S, S]
            obj.first = self.model.encode_mask_reference(prepared.unit, input_mask, emb)
        return set(pending)

    def _to_work_size(self, mask: np.ndarray, input_size: tuple[int, int]) -> np.ndarray:
        if self.max_short_side is None or min(mask.shape) <= self.max_short_side:
            return mask
        scale = self.max_short_side / min(mask.shape)
        size = (max(1, round(mask.shape[1] * scale)), max(1, round(mask.shape[0] * scale)))
        return np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize(size, Image.NEAREST)) > 127

    def _predict(self, ids: list[int], prepared: PreparedImage, emb: torch.Tensor):
        """One batched forward for all tracked objects; returns probabilities at the working size and scores."""
        n = len(ids)
        objs = [self.objects[k] for k in ids]
        refs = stack_text([o.words for o in objs], [o.pooled for o in objs])
        with_prev = [i for i, o in enumerate(objs) if o.prev_mask is not None]
        if with_prev:
            prev_prepared, prev_emb = self._prev
            prev_masks = torch.stack([objs[i].prev_mask for i in with_prev])  # [P, S, S]
            prev = self.model.encode_mask_reference(
                prev_prepared.unit.expand(len(with_prev), -1, -1, -1), prev_masks, prev_emb.expand(len(with_prev), -1, -1, -1)
            )
            keys, values, protos, owner = [], [], [], []
            for j, i in enumerate(with_prev):
                first = objs[i].first
                if first is not None:
                    keys.append(first.tokens.keys[0])
                    values.append(first.tokens.values[0])
                    protos.append(first.prototype[0])
                    owner.append(i)
                keys.append(prev.tokens.keys[j])
                values.append(prev.tokens.values[j])
                protos.append(prev.prototype[j])
                owner.append(i)
            encoded = MaskReference(ReferenceTokens(torch.stack(keys), torch.stack(values)), torch.stack(protos))
            masks = self.model.mask_references(encoded, torch.tensor(owner, device=emb.device), n)
            refs = References(refs.lang, refs.text_pooled, refs.has_text, masks.mask, masks.mask_pooled, masks.has_mask,
                              tracking=torch.ones(n, dtype=torch.bool, device=emb.device))
        out = self.model.segment(emb.expand(n, -1, -1, -1), refs)
        full = self.transform.postprocess(out.logits, prepared.input_size, prepared.original_size)  # [N, 1, h, w]
        probs, scores = {}, {}
        for i, k in enumerate(ids):
            score = float(out.scores[i])
            scores[k] = score
            probs[k] = full[i, 0].sigmoid().cpu() if score > self.sigma else torch.zeros(full.shape[-2:])
        return probs, scores

    def _aggregate(self, probs: dict[int, torch.Tensor], prepared: PreparedImage, size: tuple[int, int]) -> np.ndarray:
        """Soft aggregation: background = prod(1 - p_i); label = argmax over [background, p_1..p_N].

        Probabilities are at the working size; the label map is returned at the frame's ``size``."""
        h, w = prepared.original_size
        if not probs:
            return np.zeros(size, dtype=np.uint8)
        ids = sorted(probs)
        stack = torch.stack([F.interpolate(probs[k][None, None].float(), size=(h, w), mode="bilinear",
                                           align_corners=False)[0, 0] if probs[k].shape != (h, w) else probs[k].float()
                             for k in ids])  # [N, h, w]
        background = torch.prod(1 - stack, dim=0, keepdim=True)
        winner = torch.cat([background, stack]).argmax(dim=0)  # [h, w] in 0..N
        lut = torch.tensor([0, *ids], dtype=torch.uint8)
        label = lut[winner].numpy()
        if label.shape != size:
            label = np.array(Image.fromarray(label).resize((size[1], size[0]), Image.NEAREST))  # writable
        return label

    def _update_state(self, prepared, emb, label_map, masks, scores, tracked) -> None:
        h, w = prepared.original_size
        small = label_map
        if label_map.shape != (h, w):
            small = np.asarray(Image.fromarray(label_map).resize((w, h), Image.NEAREST))
        for k, obj in self.objects.items():
            if obj.first is None and k not in tracked and obj.prev_mask is None and obj.text is None:
                continue
            m = self.transform.mask(small == k, self.model.device)[0]  # [S, S]
            if obj.text is not None and obj.first is None:
                # RVOS: language only until a frame's score passes sigma; that prediction becomes the first reference
                if k in tracked and scores.get(k, 0.0) > self.sigma and masks[k].any():
                    obj.first = self.model.encode_mask_reference(prepared.unit, m[None], emb)
                    obj.prev_mask = m
                continue
            obj.prev_mask = m
        self._prev = (prepared, emb)

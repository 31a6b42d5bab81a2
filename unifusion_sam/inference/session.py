"""Online video inference (VOS and RVOS) for both families: a stateful session over a stateless network.

Feed frames one at a time (``session.step(frame)``, or ``for r in session.run(frames)`` over any
iterable, so a live stream works). Per object the session keeps a fixed-size state: the encoded
*first* reference (its mask on the frame where it was given, or for RVOS the first frame whose
language-only score passes ``sigma``), and the *previous* frame's predicted mask. The previous frame's
encoding is shared by all objects. Nothing grows with the number of frames seen.

Per frame: the frame is encoded once; all objects are decoded in one batched forward (each with its
own references); a mask is kept only if its score exceeds ``sigma``; masks are merged by soft
aggregation (background = prod(1 - p_i), argmax) into a label map with stable ids. On the frame where
an object's mask is given, the given mask is the output (painted over the predictions; where two
given masks overlap, the smaller id wins). With ``keep_last_seen`` (the full UniRef++ model's default,
as the authors' loop does) an object whose mask comes out empty keeps its last non-empty previous
reference; otherwise the empty mask becomes the previous reference. The network runs in inference
mode and the caller's train / eval modes are restored after. The session talks to the network only
through :class:`~unifusion_sam.interface.ReferenceSegmenter`.

The references can be switched off, to rerun the paper's ablations (UniRef++ Tables 9 and 7):

- ``mask_refs`` (every object with a mask reference): ``"first+previous"`` (the default: both),
  ``"first"`` (every frame uses only the first reference: the given mask, or for RVOS the first
  confident frame's prediction) or ``"previous"`` (only the previous frame's mask; for VOS the given
  mask is the previous reference on the frame after it, afterwards only the previous prediction);
- ``rvos_refs`` (objects given by a sentence): ``"language+mask"`` (the default: the sentence plus the
  mask references above once a frame passes ``sigma``) or ``"language"`` (the sentence alone on every
  frame; no mask reference is ever encoded for the object, not even one given with ``add_object``).

A reference that is switched off is never encoded, so it costs nothing.

``set_previous_mask`` replaces an object's previous-frame reference after a step (the first reference
stays): a correction that does not re-anchor the object, or teacher forcing when measuring drift.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..encoders.text import TextFeatures
from ..interface import MaskReference, ObjectQuery, PreparedImage
from .inputs import to_bool_mask, to_rgb_array
from .predictor import inference_mode

SIGMA_PRESETS = {"youtube_vos": 0.4, "mose": 0.4, "davis": 0.3, "rvos": 0.3, "lvos": 0.5}
MASK_REFS = ("first+previous", "first", "previous")  # which mask references an object's decode gets
RVOS_REFS = ("language+mask", "language")  # what a sentence-given object's decode gets


def resolve_sigma(sigma: float | str) -> float:
    """A score threshold, or a preset name: youtube_vos/mose 0.4, davis/rvos 0.3, lvos 0.5."""
    if isinstance(sigma, str):
        if sigma not in SIGMA_PRESETS:
            raise ValueError(f"unknown sigma preset {sigma!r}; choose a number or one of {sorted(SIGMA_PRESETS)}")
        return SIGMA_PRESETS[sigma]
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float)):
        raise TypeError(f"sigma must be a number or a preset name, got {sigma!r}")
    return float(sigma)


def check_refs(name: str, value: str, choices: tuple[str, ...]) -> str:
    """``value`` if it is one of ``choices`` (:data:`MASK_REFS` / :data:`RVOS_REFS`), else ``ValueError``."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")
    return value


@dataclass
class FrameResult:
    """One frame's output: ``masks`` {object id: H x W bool}, ``scores`` {object id: float} (the
    object score; given masks score 1.0), ``label_map`` H x W uint8 (0 = background)."""

    index: int
    masks: dict[int, np.ndarray]
    scores: dict[int, float]
    label_map: np.ndarray


@dataclass
class _Object:
    text: TextFeatures | None = None  # the sentence, encoded (batch 1)
    first: MaskReference | None = None  # length 1
    # [Hp, Wp] float 0/1 on prev_frame's network input; set once the object has a mask to follow
    prev_mask: torch.Tensor | None = None
    # (prepared, encoded) of the frame prev_mask is on (shared, not copied); None where "previous" is off
    prev_frame: tuple | None = None
    pending: np.ndarray | None = None  # a mask given for the next frame
    meta: dict = field(default_factory=dict)


class VideoSession:
    """Track objects through a video with a :class:`~unifusion_sam.interface.ReferenceSegmenter`.

    ``sigma``: score threshold or preset; ``max_short_side``: frames whose shorter side is larger are
    downscaled to it before the network's own preprocessing (``None`` keeps the original size; the full
    UniRef++ model resizes video to a 480 short side itself); results are always at the frame size.
    ``keep_last_seen``: see the module docstring (default: the model's ``keep_last_seen``, else False).
    ``mask_refs`` (one of :data:`MASK_REFS`) and ``rvos_refs`` (one of :data:`RVOS_REFS`): which
    references each object's decode gets (the paper's ablations; see the module docstring).
    ``independent``: objects do not compete for pixels: each object's mask is its own probability
    > 0.5 (when its score passes ``sigma``), masks may overlap, and each object follows its own mask, so
    N objects tracked together give what N one-object sessions give, in one batched forward per frame
    (e.g. every referring expression of a video; the label map still shows the soft aggregation).
    """

    def __init__(self, model, *, sigma: float | str = 0.4, max_short_side: int | None = None,
                 keep_last_seen: bool | None = None, mask_refs: str = "first+previous",
                 rvos_refs: str = "language+mask", independent: bool = False) -> None:
        self.model = model
        self.sigma = resolve_sigma(sigma)
        if max_short_side is not None and (not isinstance(max_short_side, int) or max_short_side <= 0):
            raise ValueError(f"max_short_side must be a positive int or None, got {max_short_side!r}")
        self.max_short_side = max_short_side
        self.mask_refs = check_refs("mask_refs", mask_refs, MASK_REFS)
        self.rvos_refs = check_refs("rvos_refs", rvos_refs, RVOS_REFS)
        self.keep_last_seen = bool(getattr(model, "keep_last_seen", False) if keep_last_seen is None else keep_last_seen)
        if not isinstance(independent, bool):
            raise TypeError(f"independent must be a bool, got {independent!r}")
        self.independent = independent
        self.objects: dict[int, _Object] = {}
        self.frame_index = -1
        self._prev: tuple[PreparedImage, object] | None = None  # previous frame (prepared, encoded)
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
        with inference_mode(self.model):
            feats = self.model.encode_text([text])
        self.objects[obj_id] = _Object(text=feats)

    def set_previous_mask(self, obj_id: int, mask) -> None:
        """Make ``mask`` (``H x W`` bool, on the frame just processed) object ``obj_id``'s previous-frame
        reference, keeping its first reference: the next frame follows this mask instead of the one the
        session predicted (a light correction that does not re-anchor the object, or teacher forcing in
        ``benchmarks/vos_failures.py``). The frame's returned masks are not changed. The object must
        already follow a mask (a given one, or for RVOS a confident frame's prediction)."""
        obj_id = self._check_id(obj_id)
        obj = self.objects.get(obj_id)
        if obj is None:
            raise ValueError(f"unknown object {obj_id}; the session tracks {sorted(self.objects)}")
        if self._prev is None or self._size is None:
            raise ValueError("set_previous_mask needs a processed frame: call step() first")
        if obj.pending is not None:
            raise ValueError(f"object {obj_id} has a mask given for the next frame (add_object), which replaces "
                             "its references there")
        if obj.prev_mask is None:
            raise ValueError(f"object {obj_id} follows no mask yet: give it one with add_object")
        prepared, encoded = self._prev
        small = self._to_size(to_bool_mask(mask, self._size, name=f"mask of object {obj_id}"), prepared.original_size)
        with inference_mode(self.model):
            obj.prev_mask = self.model.prepare_mask(small, prepared)
        obj.prev_frame = (prepared, encoded) if self._uses(obj)[1] else None

    def remove_object(self, obj_id: int) -> None:
        self.objects.pop(obj_id, None)

    @staticmethod
    def _check_id(obj_id: int) -> int:
        if isinstance(obj_id, bool) or not isinstance(obj_id, (int, np.integer)) or not 1 <= int(obj_id) <= 255:
            raise ValueError(f"object ids must be ints in [1, 255] (0 is background), got {obj_id!r}")
        return int(obj_id)

    def _uses(self, obj: _Object) -> tuple[bool, bool]:
        """Whether ``obj``'s decode gets its (first, previous) mask reference."""
        if obj.text is not None and self.rvos_refs == "language":
            return False, False
        return self.mask_refs != "previous", self.mask_refs != "first"

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
        # the only encode of this frame; the predictor's small LRU cache lets several tracks over the
        # same video (e.g. one per RVOS expression) share the frame's encoding
        _, prepared, encoded = self.model.predictor.embed(work, name=f"frame {self.frame_index}", task="video")
        with inference_mode(self.model):
            given = self._take_given(pending, prepared, encoded)
            tracked = [k for k, o in self.objects.items() if k not in given and (o.prev_mask is not None or o.text)]
            probs, scores = self._predict(tracked, prepared, encoded) if tracked else ({}, {})
            stack = self._at_work_size(probs, prepared)
            label_map = self._aggregate(stack, size)  # predicted objects only ...
            scores.update({k: 1.0 for k in given})
            for k in sorted(pending, reverse=True):  # ... then given masks, exactly as given, on top
                label_map[pending[k]] = k
            work_size = prepared.original_size
            if self.independent:  # each object's own mask (given ones as given)
                seen = {k: (stack[k] > 0.5).numpy() for k in stack}  # at the working size
                seen.update({k: self._to_size(pending[k], work_size) for k in pending})
                masks = {k: pending[k] if k in pending else self._to_size(seen[k], size) if k in seen
                         else np.zeros(size, bool) for k in self.objects}
            else:
                masks = {k: label_map == k for k in self.objects}
                small = self._to_size(label_map, work_size)
                seen = {k: small == k for k in self.objects}
            self._update_state(prepared, encoded, seen, masks, scores, tracked, given)
        return FrameResult(self.frame_index, masks, scores, label_map)

    def _downscale(self, rgb: np.ndarray) -> np.ndarray:
        h, w = rgb.shape[:2]
        if self.max_short_side is None or min(h, w) <= self.max_short_side:
            return rgb
        scale = self.max_short_side / min(h, w)
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        return np.asarray(Image.fromarray(rgb).resize(size, Image.BILINEAR))

    def _take_given(self, pending: dict[int, np.ndarray], prepared: PreparedImage, encoded) -> set[int]:
        """Masks given for this frame (validated, at the frame size) become the objects' first references,
        encoded together in one batch (only for objects whose decode uses a first reference)."""
        for k in pending:
            self.objects[k].pending = None
        ids = [k for k in pending if self._uses(self.objects[k])[0]]
        if ids:
            masks = torch.stack([self.model.prepare_mask(self._to_size(pending[k], prepared.original_size),
                                                         prepared) for k in ids])
            encoded_refs = self.model.encode_masks([encoded], [prepared], masks)
            for j, k in enumerate(ids):
                self.objects[k].first = encoded_refs[j]
        return set(pending)

    def _predict(self, ids: list[int], prepared: PreparedImage, encoded):
        """One batched forward for all tracked objects; returns probabilities at the working size and scores."""
        objs = [self.objects[k] for k in ids]
        uses = [self._uses(o) for o in objs]  # (first, previous) per object
        groups: dict[int, list[int]] = {}  # previous masks grouped by the frame they are on (usually one)
        for i, o in enumerate(objs):
            if o.prev_mask is not None and uses[i][1]:
                groups.setdefault(id(o.prev_frame[1]), []).append(i)
        prev: dict[int, MaskReference] = {}
        for rows in groups.values():
            prev_prepared, prev_encoded = objs[rows[0]].prev_frame
            encoded_refs = self.model.encode_masks([prev_encoded], [prev_prepared],
                                                   torch.stack([objs[i].prev_mask for i in rows]))
            prev.update({i: encoded_refs[j] for j, i in enumerate(rows)})
        queries = []
        for i, o in enumerate(objs):
            # [first, previous] (each length 1) once the object has a mask to follow (a given one, or for
            # RVOS a confident frame's), less what the switches turn off; none before that
            first = o.first if uses[i][0] and o.prev_mask is not None else None
            refs = [r for r in (first, prev.get(i)) if r is not None]
            queries.append(ObjectQuery(text=o.text, masks=refs))
        decoded = self.model.decode_objects(encoded, prepared, queries, task="video", tracking=True)
        result = self.model.postprocess(decoded, prepared, "video")  # probabilities at the working size
        probs, scores = {}, {}
        for i, k in enumerate(ids):
            score = float(decoded.scores[i])
            scores[k] = score
            probs[k] = result.probs[i].float().cpu() if score > self.sigma else torch.zeros(result.probs.shape[-2:])
        return probs, scores

    def _at_work_size(self, probs: dict[int, torch.Tensor], prepared: PreparedImage) -> dict[int, torch.Tensor]:
        """Each object's probabilities ``[h, w]`` at the working size (the prepared image's original size)."""
        h, w = prepared.original_size
        return {k: F.interpolate(p[None, None].float(), size=(h, w), mode="bilinear", align_corners=False)[0, 0]
                if p.shape != (h, w) else p.float() for k, p in probs.items()}

    @staticmethod
    def _to_size(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        """A bool or uint8 map at ``size`` (H x W), nearest-neighbour (writable)."""
        if mask.shape == size:
            return mask
        return np.array(Image.fromarray(mask.astype(np.uint8)).resize((size[1], size[0]), Image.NEAREST)).astype(mask.dtype)

    def _aggregate(self, stack: dict[int, torch.Tensor], size: tuple[int, int]) -> np.ndarray:
        """Soft aggregation: background = prod(1 - p_i); label = argmax over [background, p_1..p_N].

        Probabilities are at the working size; the label map is returned at the frame's ``size``."""
        if not stack:
            return np.zeros(size, dtype=np.uint8)
        ids = sorted(stack)
        probs = torch.stack([stack[k] for k in ids])  # [N, h, w]
        background = torch.prod(1 - probs, dim=0, keepdim=True)
        winner = torch.cat([background, probs]).argmax(dim=0)  # [h, w] in 0..N
        lut = torch.tensor([0, *ids], dtype=torch.uint8)
        return self._to_size(lut[winner].numpy(), size)

    def _update_state(self, prepared, encoded, seen_masks, masks, scores, tracked, given) -> None:
        """Each object's previous mask becomes this frame's output (``seen_masks``: at the working size, on
        this frame's encoding; kept only as a flag where the switches turn the previous reference off)."""
        for k, obj in self.objects.items():
            use_first, use_prev = self._uses(obj)
            if (k not in tracked and k not in given) or not (use_first or use_prev):
                continue  # nothing to follow yet, or (RVOS, language only) no mask state at all
            seen = seen_masks[k]
            frame = (prepared, encoded) if use_prev else None
            if obj.text is not None and obj.prev_mask is None and k not in given:
                # RVOS: language only until a frame's score passes sigma; that prediction becomes the first reference
                if k in tracked and scores.get(k, 0.0) > self.sigma and masks[k].any():
                    m = self.model.prepare_mask(seen, prepared)
                    if use_first:
                        obj.first = self.model.encode_masks([encoded], [prepared], m[None])
                    obj.prev_mask, obj.prev_frame = m, frame
                continue
            if self.keep_last_seen and obj.prev_mask is not None and not seen.any():
                continue  # the object is not visible: keep its last previous reference (and that frame)
            obj.prev_mask, obj.prev_frame = self.model.prepare_mask(seen, prepared), frame
        self._prev = (prepared, encoded)

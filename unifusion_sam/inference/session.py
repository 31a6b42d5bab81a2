"""Online video inference (VOS, RVOS and example-prompted tracking) for every family: a stateful session over a
stateless network.

Feed frames one at a time (``session.step(frame)``, or ``for r in session.run(frames)`` over any iterable,
so a live stream works). An object is given by a mask on the frame it appears in (VOS), by a sentence (RVOS)
or by examples, pictures of it taken elsewhere with its mask (``add_example_object``). Per object the session
keeps a fixed-size state (:class:`~.tracking.TrackedObject`): its *anchor* (the given mask encoded on its
frame; for a sentence, the first frame whose language-only score passes ``sigma``; for examples, the examples
and the frame they were first found on) and the *previous* frame's predicted mask. The previous frame's
encoding is shared by all objects. Nothing grows with the number of frames seen.

Per frame: the frame is encoded once; all objects are decoded in one batched forward (each with its own
references: anchor + previous mask; a sentence- or example-given object that is not found yet decodes from
its sentence or its examples alone, and is found on the first frame whose score passes ``sigma``); a mask is
kept only if its score exceeds ``sigma``; masks are merged by soft aggregation (background = prod(1 - p_i),
argmax) into a label map with stable ids. On the frame where an object's mask is given, the given mask is the
output (painted over the predictions; where two given masks overlap, the smaller id wins). With
``keep_last_seen`` (the full UniRef++ model's default, as the authors' loop does) an object whose mask comes
out empty keeps its last non-empty previous reference; otherwise the empty mask becomes the previous
reference. Examples are other images: they never take UniFusion's locality prior (where the object lies in an
example says nothing about where it lies in the video); frames of the video do.

The references can be switched off, to rerun the paper's ablations (UniRef++ Tables 9 and 7):
``mask_refs`` ``"first+previous"`` (default), ``"first"`` (the anchor only) or ``"previous"`` (the previous
mask only, once there is one); ``rvos_refs`` ``"language+mask"`` (default) or ``"language"`` (the sentence
alone on every frame; no mask reference is ever encoded for the object). A switched-off reference is never
encoded, so it costs nothing.

Corrections after a step: :meth:`VideoSession.correct` replaces an object's mask on the frame just processed
(given, or from SAM-style point / box prompts) and re-anchors the object there; :meth:`set_previous_mask`
replaces only its previous-frame reference (a light correction, or teacher forcing when measuring drift).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..interface import MaskReference, ObjectQuery, PreparedImage, Prompts
from .inputs import to_bool_mask, to_rgb_array
from .predictor import inference_mode
from .tracking import (
    MASK_REFS,
    RVOS_REFS,
    SIGMA_PRESETS,
    FrameResult,
    TrackedObject,
    aggregate,
    check_examples_not_empty,
    check_mask_reference,
    check_new_objects,
    check_object_id,
    check_refs,
    example_pairs,
    reference_kind,
    resolve_sigma,
    to_size,
)

__all__ = ["MASK_REFS", "RVOS_REFS", "SIGMA_PRESETS", "FrameResult", "VideoSession", "check_new_objects", "check_refs",
           "resolve_sigma"]


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
        if max_short_side is not None and (type(max_short_side) is not int or max_short_side <= 0):  # not a bool
            raise ValueError(f"max_short_side must be a positive int or None, got {max_short_side!r}")
        self.max_short_side = max_short_side
        self.mask_refs = check_refs("mask_refs", mask_refs, MASK_REFS)
        self.rvos_refs = check_refs("rvos_refs", rvos_refs, RVOS_REFS)
        self.keep_last_seen = bool(getattr(model, "keep_last_seen", False) if keep_last_seen is None else keep_last_seen)
        if not isinstance(independent, bool):
            raise TypeError(f"independent must be a bool, got {independent!r}")
        self.independent = independent
        self.objects: dict[int, TrackedObject] = {}
        self.frame_index = -1
        self._prev: tuple[PreparedImage, object] | None = None  # previous frame (prepared, encoded)
        self._size: tuple[int, int] | None = None
        self._last: FrameResult | None = None  # the frame just processed, as returned

    # ------------------------------------------------------------------ objects
    def add(self, obj_id: int, reference) -> None:
        """Give object ``obj_id`` by a mask (on the next frame), a sentence or examples (:func:`~.tracking.reference_kind`)."""
        kind = reference_kind(reference)
        if kind == "text":
            self.add_text_object(obj_id, reference)
        elif kind == "examples":
            self.add_example_object(obj_id, reference)
        else:
            self.add_object(obj_id, reference)

    def add_object(self, obj_id: int, mask) -> None:
        """Give object ``obj_id``'s mask on the next frame to be processed: its first frame, or, for an object
        already tracked, a new anchor there (the mask becomes that frame's output and its first reference)."""
        obj_id = check_object_id(obj_id)
        check_mask_reference(mask, self._size, name=f"mask of object {obj_id}")
        obj = self.objects.setdefault(obj_id, TrackedObject())
        obj.pending = mask

    def add_text_object(self, obj_id: int, text: str) -> None:
        """Track the object a sentence refers to (RVOS), from the next frame on."""
        obj_id = self._new_id(obj_id)
        if not isinstance(text, str):
            raise TypeError(f"text must be a string, got {type(text).__name__}: {text!r}")
        with inference_mode(self.model):
            feats = self.model.encode_text([text])
        self.objects[obj_id] = TrackedObject(text=feats)

    def add_example_object(self, obj_id: int, examples) -> None:
        """Find and track the object that ``examples`` show: ``[(image, mask), ...]``, pictures of it taken
        elsewhere (one or several). Until it is found (a frame whose score passes ``sigma``) each frame is
        decoded with the examples as references, as few-shot segmentation does; from then on with the
        examples and the found frame's mask (encoded once, on that frame, as a first-frame reference is) in place
        of a first-frame reference, plus its previous frame's mask. The found frame is the one reference of this
        video with the object's look and place in it (0.714 against 0.698 held-out J&F without it,
        ``benchmarks/example_tracking.py --videos 16``)."""
        obj_id = self._new_id(obj_id)
        name = f"examples of object {obj_id}"
        images, masks = example_pairs(examples, name)
        try:
            with warnings.catch_warnings():  # an empty example mask is an error here, not a warning
                warnings.simplefilter("ignore", UserWarning)
                pairs = self.model.predictor.reference_pairs(images, masks)
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"{name}: {exc}") from exc
        check_examples_not_empty([m for _, m in pairs], name)
        with inference_mode(self.model):
            refs = self.model.predictor.encode_references(pairs, task="fss")
        self.objects[obj_id] = TrackedObject(examples=refs.with_local(False))

    def remove_object(self, obj_id: int) -> None:
        self.objects.pop(check_object_id(obj_id), None)

    def _new_id(self, obj_id) -> int:
        obj_id = check_object_id(obj_id)
        if obj_id in self.objects:
            raise ValueError(f"object {obj_id} is tracked already (given by its {self.objects[obj_id].kind}); "
                             "remove_object it first, or correct it with correct()")
        return obj_id

    def _known(self, obj_id, action: str) -> TrackedObject:
        obj_id = check_object_id(obj_id)
        if obj_id not in self.objects:
            raise ValueError(f"unknown object {obj_id}; the session tracks {sorted(self.objects)}")
        if self._prev is None or self._size is None:
            raise ValueError(f"{action} needs a processed frame: call step() first")
        return self.objects[obj_id]

    # ------------------------------------------------------------------ corrections
    def set_previous_mask(self, obj_id: int, mask) -> None:
        """Make ``mask`` (``H x W`` bool, on the frame just processed) object ``obj_id``'s previous-frame
        reference, keeping its anchor: the next frame follows this mask instead of the one the session
        predicted (a light correction that does not re-anchor the object, or teacher forcing in
        ``benchmarks/vos_failures.py``). The frame's returned masks are not changed. The object must
        already follow a mask (a given one, or for RVOS a confident frame's prediction)."""
        obj = self._known(obj_id, "set_previous_mask")
        if obj.pending is not None:
            raise ValueError(f"object {obj_id} has a mask given for the next frame (add_object), which replaces "
                             "its references there")
        if obj.prev_mask is None:
            raise ValueError(f"object {obj_id} follows no mask yet: give it one with add_object")
        prepared, encoded = self._prev
        small = to_size(to_bool_mask(mask, self._size, name=f"mask of object {obj_id}"), prepared.original_size)
        with inference_mode(self.model):
            obj.prev_mask = self.model.prepare_mask(small, prepared)
        obj.prev_frame = (prepared, encoded) if self._uses(obj)[1] else None

    def correct(self, obj_id: int, *, mask=None, points=None, labels=None, box=None) -> FrameResult:
        """Correct object ``obj_id`` on the frame just processed, and have the following frames follow it.

        Give the right ``mask`` (``H x W``, any family), or SAM-style prompts (SAM family): ``points``
        ``N x 2`` (x, y) frame pixels with ``labels`` (1 object, 0 background) and / or a ``box`` (x0, y0, x1,
        y1); the object is decoded again on that frame with its references and the prompts. The corrected mask
        replaces the frame's output for the object (the returned :class:`FrameResult`; other objects lose the
        pixels it takes) and becomes **both its anchor and its previous reference**: the anchor (the
        first-frame mask, a sentence's first confident frame, or the examples) is what every later frame is
        matched against, so keeping a wrong or outdated one would pull the track back to the error within a
        few frames, while the corrected frame shows the object as it looks now. A sentence stays with its
        object; examples are dropped (the object is now anchored on a frame of this video)."""
        obj = self._known(obj_id, "correct")
        obj_id = int(obj_id)
        if (mask is None) == (points is None and box is None):
            raise ValueError("correct takes either mask= or prompts (points= with labels=, and / or box=)")
        prepared, encoded = self._prev
        if mask is not None:
            corrected = to_bool_mask(mask, self._size, name=f"mask of object {obj_id}")
        else:
            corrected = self._decode_with_prompts(obj_id, obj, prepared, encoded, points, labels, box)
        work = to_size(corrected, prepared.original_size)
        with inference_mode(self.model):
            m = self.model.prepare_mask(work, prepared)
            obj.first = self.model.encode_masks([encoded], [prepared], m[None]).with_local(True)
            obj.examples, obj.pending = None, None
            obj.prev_mask, obj.prev_frame = m, (prepared, encoded) if self._uses(obj)[1] else None
            if obj.found_at is None:
                obj.found_at = self.frame_index
        last = self._last
        label_map = last.label_map.copy()
        masks, scores = dict(last.masks), {**last.scores, obj_id: 1.0}
        if not self.independent:
            label_map[label_map == obj_id] = 0
            label_map[corrected] = obj_id
            masks = {k: label_map == k for k in masks}
            with inference_mode(self.model):  # the others' previous references lose the pixels it took
                for k, other in self.objects.items():
                    if k != obj_id and other.prev_mask is not None and k in last.masks and (last.masks[k] & corrected).any():
                        other.prev_mask = self.model.prepare_mask(to_size(masks[k], prepared.original_size), prepared)
        else:
            masks[obj_id] = corrected
            label_map[corrected] = obj_id
        self._last = FrameResult(last.index, masks, scores, label_map)
        return self._last

    def _decode_with_prompts(self, obj_id, obj, prepared, encoded, points, labels, box) -> np.ndarray:
        """The object's mask on the frame just processed, decoded with its references and SAM-style prompts
        (in frame pixels, scaled to the working size)."""
        h, w = self._size
        sy, sx = prepared.original_size[0] / h, prepared.original_size[1] / w
        pts = lab = bx = None
        if points is not None:
            pts = np.asarray(points, dtype=np.float64).reshape(-1, 2) if np.size(points) else None
            if labels is None:
                raise ValueError("points need labels (1 = the object, 0 = background)")
        checked = self.model.predictor.check_prompts(pts, None if pts is None else labels, box, (h, w))
        if checked is not None:
            pts = None if checked.points is None else checked.points * (sx, sy)
            lab = checked.labels
            bx = None if checked.box is None else checked.box * (sx, sy, sx, sy)
        query = self._query(obj, self._previous_reference([obj]).get(0))
        with inference_mode(self.model):
            decoded = self.model.decode_objects(encoded, prepared, [query], task="video", tracking=True,
                                                prompts=Prompts(pts, lab, bx))
            result = self.model.postprocess(decoded, prepared, "video")
        return to_size(result.masks[0].cpu().numpy(), (h, w))

    # ------------------------------------------------------------------ frames
    def run(self, frames: Iterable, new_objects: Mapping[int, Mapping[int, object]] | None = None) -> Iterator[FrameResult]:
        """Step through ``frames`` lazily; ``new_objects[i]`` = {object id: mask, sentence or examples} given on
        frame ``i`` (the session's frame index, which equals the position in ``frames`` for a new session)."""
        new_objects = check_new_objects(new_objects)
        for frame in frames:
            for obj_id, reference in new_objects.get(self.frame_index + 1, {}).items():
                self.add(obj_id, reference)
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
            tracked = [k for k, o in self.objects.items()
                       if k not in given and (o.prev_mask is not None or o.text is not None or o.examples is not None)]
            probs, scores = self._predict(tracked, prepared, encoded) if tracked else ({}, {})
            stack = self._at_work_size(probs, prepared)
            label_map = aggregate(stack, size)  # predicted objects only ...
            scores.update({k: 1.0 for k in given})
            for k in sorted(pending, reverse=True):  # ... then given masks, exactly as given, on top
                label_map[pending[k]] = k
            work_size = prepared.original_size
            if self.independent:  # each object's own mask (given ones as given)
                seen = {k: (stack[k] > 0.5).numpy() for k in stack}  # at the working size
                seen.update({k: to_size(pending[k], work_size) for k in pending})
                masks = {k: pending[k] if k in pending else to_size(seen[k], size) if k in seen
                         else np.zeros(size, bool) for k in self.objects}
            else:
                masks = {k: label_map == k for k in self.objects}
                small = to_size(label_map, work_size)
                seen = {k: small == k for k in self.objects}
            self._update_state(prepared, encoded, seen, masks, scores, tracked, given)
        self._last = FrameResult(self.frame_index, masks, scores, label_map)
        return self._last

    def _downscale(self, rgb: np.ndarray) -> np.ndarray:
        h, w = rgb.shape[:2]
        if self.max_short_side is None or min(h, w) <= self.max_short_side:
            return rgb
        scale = self.max_short_side / min(h, w)
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        return np.asarray(Image.fromarray(rgb).resize(size, Image.BILINEAR))

    def _uses(self, obj: TrackedObject) -> tuple[bool, bool]:
        """Whether ``obj``'s decode gets its (anchor, previous) mask reference."""
        if obj.text is not None and self.rvos_refs == "language":
            return False, False
        return self.mask_refs != "previous", self.mask_refs != "first"

    def _take_given(self, pending: dict[int, np.ndarray], prepared: PreparedImage, encoded) -> set[int]:
        """Masks given for this frame (validated, at the frame size) become the objects' first references,
        encoded together in one batch (only for objects whose decode uses a first reference)."""
        for k in pending:
            self.objects[k].pending = None
        ids = [k for k in pending if self._uses(self.objects[k])[0]]
        if ids:
            masks = torch.stack([self.model.prepare_mask(to_size(pending[k], prepared.original_size), prepared)
                                 for k in ids])
            encoded_refs = self.model.encode_masks([encoded], [prepared], masks)
            for j, k in enumerate(ids):
                self.objects[k].first = encoded_refs[j].with_local(True)
        return set(pending)

    def _previous_reference(self, objs: list[TrackedObject]) -> dict[int, MaskReference]:
        """The previous masks of ``objs`` that their decode uses, encoded, grouped by the frame they are on."""
        groups: dict[int, list[int]] = {}
        for i, o in enumerate(objs):
            if o.prev_mask is not None and self._uses(o)[1]:
                groups.setdefault(id(o.prev_frame[1]), []).append(i)
        prev: dict[int, MaskReference] = {}
        for rows in groups.values():
            prev_prepared, prev_encoded = objs[rows[0]].prev_frame
            encoded_refs = self.model.encode_masks([prev_encoded], [prev_prepared],
                                                   torch.stack([objs[i].prev_mask for i in rows]))
            prev.update({i: encoded_refs[j].with_local(True) for j, i in enumerate(rows)})
        return prev

    def _query(self, obj: TrackedObject, previous: MaskReference | None) -> ObjectQuery:
        """An object's references on this frame: its sentence, and [anchor, previous] once it has a mask to
        follow (a given one, or a sentence's / examples' found frame), less what the switches turn off; before
        that an example-given object has its examples alone."""
        use_first, _ = self._uses(obj)
        if obj.examples is not None:
            shots = [obj.examples[j] for j in range(len(obj.examples))]
            if obj.prev_mask is None or (use_first and previous is None):
                return ObjectQuery(masks=shots)
            anchor = [obj.first] if use_first and obj.first is not None else []
            return ObjectQuery(masks=[*(shots if use_first else []), *anchor, *([previous] if previous is not None else [])])
        first = obj.first if use_first and obj.prev_mask is not None else None
        return ObjectQuery(text=obj.text, masks=[r for r in (first, previous) if r is not None])

    def _predict(self, ids: list[int], prepared: PreparedImage, encoded):
        """One batched forward for all tracked objects; returns probabilities at the working size and scores."""
        objs = [self.objects[k] for k in ids]
        prev = self._previous_reference(objs)
        queries = [self._query(o, prev.get(i)) for i, o in enumerate(objs)]
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

    def _update_state(self, prepared, encoded, seen_masks, masks, scores, tracked, given) -> None:
        """Each object's previous mask becomes this frame's output (``seen_masks``: at the working size, on
        this frame's encoding; kept only as a flag where the switches turn the previous reference off)."""
        for k, obj in self.objects.items():
            use_first, use_prev = self._uses(obj)
            if (k not in tracked and k not in given) or not (use_first or use_prev):
                continue  # nothing to follow yet, or (RVOS, language only) no mask state at all
            seen = seen_masks[k]
            frame = (prepared, encoded) if use_prev else None
            if obj.searching and k not in given:
                # a sentence or examples alone until a frame's score passes sigma: that prediction is the object
                if k in tracked and scores.get(k, 0.0) > self.sigma and masks[k].any():
                    m = self.model.prepare_mask(seen, prepared)
                    if use_first:  # the found frame anchors a sentence, and joins an object's examples
                        obj.first = self.model.encode_masks([encoded], [prepared], m[None]).with_local(True)
                    obj.prev_mask, obj.prev_frame, obj.found_at = m, frame, self.frame_index
                continue
            if self.keep_last_seen and obj.prev_mask is not None and not seen.any():
                continue  # the object is not visible: keep its last previous reference (and that frame)
            obj.prev_mask, obj.prev_frame = self.model.prepare_mask(seen, prepared), frame
        self._prev = (prepared, encoded)

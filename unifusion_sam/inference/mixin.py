"""``predict`` / ``set_image`` / ``track`` for any network that implements the contract of
:mod:`unifusion_sam.interface` (both families mix it in).

The mixin keeps no state of its own: the model's :class:`~.predictor.ReferencePredictor` (created on first
use, stored on the model) caches encoded frames, and every ``track`` call runs a fresh
:class:`~.session.VideoSession`.
"""

from __future__ import annotations

from collections.abc import Mapping

from .predictor import ReferencePredictor
from .session import VideoSession, check_new_objects


class ReferenceInferenceMixin:
    """``predict`` / ``set_image`` / ``track`` for a :class:`~unifusion_sam.interface.ReferenceSegmenter` network (both families)."""

    # the predictor's cache of encoded frames: at most this many frames and bytes of features (SAM at
    # 1024: 4 MiB a frame, SAM 2: 16 MiB); a family sets its own
    frame_cache_size: int = 16
    frame_cache_bytes: int | None = 1 << 30

    @property
    def predictor(self):
        """The stateful :class:`~unifusion_sam.inference.predictor.ReferencePredictor` of this model."""
        predictor = self.__dict__.get("_predictor")
        if predictor is None:
            predictor = self.__dict__["_predictor"] = ReferencePredictor(self)
        return predictor

    def set_image(self, image) -> None:
        """Encode ``image`` once for the following ``predict(None, ...)`` calls (like ``SamPredictor``)."""
        self.predictor.set_image(image)

    def predict(self, image=None, **kwargs):
        """Segment from references (and, for the SAM family, prompts); see :meth:`ReferencePredictor.predict`.

        ``model.predict(image, text="the dog on the left")``,
        ``model.predict(image, ref_images=[img0], ref_masks=[m0])`` (K pairs = K-shot).
        Returns a :class:`~unifusion_sam.inference.predictor.Prediction` (``.mask``, ``.score``, ``.logits``).
        """
        return self.predictor.predict(image, **kwargs)

    def track(self, frames, *, text=None, masks=None, examples=None, new_objects=None,
              sigma: float | str | None = None, max_short_side: int | None = None, mask_refs: str = "first+previous",
              rvos_refs: str = "language+mask", independent: bool = False):
        """Track objects through ``frames`` (any iterable of ``H x W x 3`` uint8 frames), online.

        Each object is given one way: ``masks`` {object id: its mask on the first frame} (VOS); ``text`` a
        sentence (RVOS, object id 1) or {object id: sentence}; ``examples`` {object id: [(image, mask), ...]},
        pictures of it taken elsewhere, found and then followed (example-prompted tracking); ``new_objects``
        {frame index: {object id: mask, sentence or examples}} for objects that join later. An object id
        given twice is an error. ``sigma`` (score threshold or preset name) defaults to 0.3 with text and
        0.4 otherwise. ``mask_refs`` (``"first+previous"``, ``"first"``, ``"previous"``) and ``rvos_refs``
        (``"language+mask"``, ``"language"``) choose the references each frame's decode gets (the paper's
        Table 9 / Table 7 ablations; see :class:`~unifusion_sam.inference.session.VideoSession`).
        ``independent``: the objects do not compete for pixels (e.g. several sentences tracked at once,
        each as if alone; ``.masks`` per object, which may overlap). The references are checked now; the
        frames are read as the returned iterator is consumed. Yields
        :class:`~unifusion_sam.inference.session.FrameResult` (``.masks``, ``.scores``, ``.label_map``).
        """
        texts = {} if text is None else dict(text) if isinstance(text, Mapping) else {1: text}
        for name, value in (("masks", masks), ("examples", examples)):
            if value is not None and not isinstance(value, Mapping):
                raise TypeError(f"{name} must be a mapping {{object id: {name[:-1] if name == 'masks' else name}}}, "
                                f"got {type(value).__name__}")
        given = {"masks": dict(masks or {}), "text": texts, "examples": dict(examples or {})}
        later = check_new_objects(new_objects)
        if not any(given.values()) and not later:
            raise ValueError("track needs masks, text, examples or new_objects to know what to follow")
        seen: dict[int, str] = {}
        for where, objects in [*given.items(), *((f"new_objects[{i}]", o) for i, o in sorted(later.items(), key=str))]:
            for obj_id in objects:
                if obj_id in seen:
                    raise ValueError(f"object id {obj_id!r} is given twice ({seen[obj_id]} and {where}); each object "
                                     "is given once (correct a track with VideoSession.correct)")
                seen[obj_id] = where
        if sigma is None:
            sigma = 0.3 if texts else 0.4
        session = VideoSession(self, sigma=sigma, max_short_side=max_short_side, mask_refs=mask_refs,
                               rvos_refs=rvos_refs, independent=independent)
        for obj_id, sentence in texts.items():
            session.add_text_object(obj_id, sentence)
        for obj_id, shots in given["examples"].items():
            session.add_example_object(obj_id, shots)
        for obj_id, mask in given["masks"].items():
            session.add_object(obj_id, mask)
        return session.run(frames, later)

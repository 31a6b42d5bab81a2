"""The parts of online tracking that hold no session: score thresholds, the reference switches, the per-object
state, what a reference given for an object is, and the soft aggregation of several objects into one label
map. :class:`~.session.VideoSession` puts them together."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image

from ..encoders.text import TextFeatures
from ..interface import MaskReference
from .inputs import to_bool_mask

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
    if sigma != sigma:
        raise ValueError(f"sigma must be a number, got {sigma!r}")
    return float(sigma)


def check_refs(name: str, value: str, choices: tuple[str, ...]) -> str:
    """``value`` if it is one of ``choices`` (:data:`MASK_REFS` / :data:`RVOS_REFS`), else ``ValueError``."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")
    return value


def check_object_id(obj_id) -> int:
    """An object id as an int in [1, 255] (0 is the background of a label map), else ``ValueError``."""
    if isinstance(obj_id, bool) or not isinstance(obj_id, (int, np.integer)) or not 1 <= int(obj_id) <= 255:
        raise ValueError(f"object ids must be ints in [1, 255] (0 is background), got {obj_id!r}")
    return int(obj_id)


@dataclass
class FrameResult:
    """One frame's output: ``masks`` {object id: H x W bool}, ``scores`` {object id: float} (the
    object score; given masks score 1.0), ``label_map`` H x W uint8 (0 = background)."""

    index: int
    masks: dict[int, np.ndarray]
    scores: dict[int, float]
    label_map: np.ndarray


@dataclass
class TrackedObject:
    """One object's state in a session. What it was given by: a mask (VOS), a sentence (``text``, RVOS) or
    examples from other images (``examples``, the object shown, not described). Its *anchor* is ``first``
    (the given mask on its frame, or for a sentence or examples the first confident frame's prediction), and
    for an example-given object the examples as well; ``prev_mask`` is the previous frame's mask (``[Hp, Wp]``
    float 0/1 on ``prev_frame``'s network input), set once the object has a mask to follow."""

    text: TextFeatures | None = None
    examples: MaskReference | None = None  # K references, marked non-local
    first: MaskReference | None = None  # length 1
    prev_mask: torch.Tensor | None = None
    prev_frame: tuple | None = None  # (prepared, encoded) of the frame prev_mask is on; None where "previous" is off
    pending: np.ndarray | None = None  # a mask given for the next frame
    found_at: int | None = None  # the frame a sentence- or example-given object was first found on
    meta: dict = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return "examples" if self.examples is not None else "text" if self.text is not None else "mask"

    @property
    def searching(self) -> bool:
        """Not found yet: the sentence or the examples alone decide on each frame."""
        return self.prev_mask is None and (self.text is not None or self.examples is not None)


def reference_kind(reference) -> str:
    """What a reference given for an object is: ``"text"`` (a sentence), ``"examples"`` (a list of (image,
    mask) pairs from other images) or ``"mask"`` (an ``H x W`` mask on the frame it is given on)."""
    if isinstance(reference, str):
        return "text"
    if isinstance(reference, (list, tuple)):
        return "examples"
    if isinstance(reference, (np.ndarray, torch.Tensor)) or hasattr(reference, "convert"):  # PIL images too
        return "mask"
    raise TypeError(f"a reference is a mask (H x W array), a sentence (str) or examples (a list of (image, mask) "
                    f"pairs), got {type(reference).__name__}")


def check_mask_reference(mask, size: tuple[int, int] | None, name: str) -> None:
    """A mask given for an object: an ``H x W`` array (or PIL image), checked against the video's frame ``size``
    once it is known (``None`` before the first frame); a ``TypeError`` / ``ValueError`` names it."""
    if not isinstance(mask, (np.ndarray, torch.Tensor)) and not hasattr(mask, "convert"):
        raise TypeError(f"{name} must be an H x W array, got {type(mask).__name__}")
    if size is not None:
        to_bool_mask(mask, size, name=name)


def check_new_objects(new_objects) -> dict:
    """``new_objects`` as ``{frame index (int >= 0): {object id: reference}}``; a ``ValueError`` names a bad key."""
    if new_objects is None:
        return {}
    if not isinstance(new_objects, Mapping):
        raise TypeError(f"new_objects must be a mapping {{frame index: {{object id: reference}}}}, got "
                        f"{type(new_objects).__name__}")
    for i, objects in new_objects.items():
        if isinstance(i, bool) or not isinstance(i, (int, np.integer)) or i < 0:
            raise ValueError(f"new_objects is keyed by frame index (an int >= 0), got {i!r}")
        if not isinstance(objects, Mapping):
            raise TypeError(f"new_objects[{i}] must be a mapping {{object id: reference}}, got {type(objects).__name__}")
        for obj_id, reference in objects.items():
            check_object_id(obj_id)
            reference_kind(reference)
    return dict(new_objects)


def example_pairs(examples, name: str) -> tuple[list, list]:
    """``(images, masks)`` of examples given as ``[(image, mask), ...]`` (one pair or several), checked for
    shape; the predictor checks each pair's sizes. An empty example mask is a ``ValueError``: an example
    shows the object."""
    if isinstance(examples, tuple) and len(examples) == 2 and not isinstance(examples[0], (list, tuple)):
        examples = [examples]  # a single (image, mask) pair
    if not isinstance(examples, (list, tuple)) or not examples:
        raise ValueError(f"{name}: examples must be a non-empty list of (image, mask) pairs, got {examples!r}")
    images, masks = [], []
    for k, pair in enumerate(examples):
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise ValueError(f"{name}: example {k} must be an (image, mask) pair, got {type(pair).__name__}")
        images.append(pair[0])
        masks.append(pair[1])
    return images, masks


def check_examples_not_empty(masks: Sequence[np.ndarray], name: str) -> None:
    for k, m in enumerate(masks):
        if not np.asarray(m).any():
            raise ValueError(f"{name}: the mask of example {k} is empty; an example must show the object")


def to_size(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A bool or uint8 map at ``size`` (H x W), nearest-neighbour (writable)."""
    if mask.shape == size:
        return mask
    return np.array(Image.fromarray(mask.astype(np.uint8)).resize((size[1], size[0]), Image.NEAREST)).astype(mask.dtype)


def aggregate(stack: dict[int, torch.Tensor], size: tuple[int, int]) -> np.ndarray:
    """Soft aggregation: background = prod(1 - p_i); label = argmax over [background, p_1..p_N].

    Probabilities are ``[h, w]`` at the working size; the label map is returned at ``size`` (H x W)."""
    if not stack:
        return np.zeros(size, dtype=np.uint8)
    ids = sorted(stack)
    probs = torch.stack([stack[k] for k in ids])  # [N, h, w]
    background = torch.prod(1 - probs, dim=0, keepdim=True)
    # max().indices, not argmax(): the same first-maximum index, 20x faster over a short leading dim on a CPU
    winner = torch.cat([background, probs]).max(dim=0).indices  # [h, w] in 0..N
    lut = torch.tensor([0, *ids], dtype=torch.uint8)
    return to_size(lut[winner].numpy(), size)

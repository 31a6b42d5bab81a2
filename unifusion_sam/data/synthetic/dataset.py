"""``SyntheticDataset``: the uniform, map-style access to synthetic samples used by training."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from ...config import check_probability
from ..types import TASKS, FewShotEpisode, ReferringExpression, RefSample, VideoRecord
from .config import SyntheticConfig
from .episodes import make_episode
from .examples import example_key, object_examples
from .rng import SPLITS, item_rng
from .scenes import make_referring_expression
from .videos import VideoSpec, make_video, sample_video

_REF_TRIES = 10


class SyntheticDataset:
    """Map-style dataset (``torch.utils.data.Dataset`` compatible) of generated samples.

    ``dataset[i]`` is a :class:`RefSample` that depends only on ``(config, split, task, i)``:

    - ``"ris"``: scene ``i`` with its referring sentence (``text``) and the target mask.
    - ``"fss"``: query image/mask of episode ``i``; its K supports are ``ref_images``/``ref_masks``.
    - ``"vos"``: one object of video ``i``: a current frame ``t`` and its mask; the reference is an
      earlier frame ``r`` (``1 <= t - r <= max_ref_gap``) where the object is visible, with its mask.
    - ``"rvos"``: one expression of video ``i`` (``text``), plus a reference frame as for VOS.

    ``meta`` names the record (``ref_id`` / ``episode_id`` / ``video`` with ``object_id``, ``frame``,
    ``ref_frame``). ``video_sample(i, first_ref=True)`` adds the object's first frame (``first_frame``)
    as an extra first reference, as a tracker uses it. The raw records for evaluation are ``scene(i)``, ``episode(i)``, ``video(i)``
    (VOS and RVOS share the same videos). Generation is lazy: ``length`` can be large at no cost.
    """

    def __init__(self, split: str = "train", task: str = "ris", length: int = 1000,
                 config: SyntheticConfig | None = None) -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {list(SPLITS)}, got {split!r}")
        if task not in TASKS:
            raise ValueError(f"task must be one of {list(TASKS)}, got {task!r}")
        if isinstance(length, bool) or not isinstance(length, int) or length < 0:
            raise ValueError(f"length must be a non-negative int, got {length!r}")
        if config is None:
            config = SyntheticConfig()
        if not isinstance(config, SyntheticConfig):
            raise TypeError(f"config must be a SyntheticConfig, got {type(config).__name__}")
        self.split, self.task, self.length, self.config = split, task, length, config

    def __repr__(self) -> str:
        return f"SyntheticDataset(split={self.split!r}, task={self.task!r}, length={self.length})"

    def __len__(self) -> int:
        return self.length

    def _index(self, i: Any) -> int:
        if isinstance(i, bool) or not isinstance(i, (int, np.integer)):
            raise TypeError(f"index must be an int, got {i!r}")
        i = int(i)
        if i < 0:
            i += self.length
        if not 0 <= i < self.length:
            raise IndexError(f"index {i} out of range for {self!r}")
        return i

    # ------------------------------------------------------------------ raw records
    def scene(self, i: int) -> ReferringExpression:
        """RIS record ``i`` (image, target mask, sentence; ``meta`` lists every object)."""
        return make_referring_expression(self.config, self.split, self._index(i))

    def episode(self, i: int, num_shots: int | None = None) -> FewShotEpisode:
        """FSS record ``i`` (``num_shots`` defaults to ``config.num_shots``)."""
        return make_episode(self.config, self.split, self._index(i), num_shots)

    def video(self, i: int) -> VideoRecord:
        """VOS / RVOS record ``i``: every frame, every annotation, expressions."""
        return make_video(self.config, self.split, self._index(i))

    def records(self) -> Iterator[ReferringExpression | FewShotEpisode | VideoRecord]:
        """All raw records of this task in index order (for evaluation)."""
        get = {"ris": self.scene, "fss": self.episode}.get(self.task, self.video)
        for i in range(self.length):
            yield get(i)

    # ------------------------------------------------------------------ samples
    def __getitem__(self, i: int) -> RefSample:
        i = self._index(i)
        if self.task == "ris":
            rec = self.scene(i)
            return RefSample("ris", rec.image, rec.mask, text=rec.sentence,  # type: ignore[arg-type]
                             meta={"ref_id": rec.ref_id, "split": self.split, "index": i})
        if self.task == "fss":
            ep = self.episode(i)
            return RefSample("fss", ep.query_image, ep.query_mask,  # type: ignore[arg-type]
                             ref_images=list(ep.support_images), ref_masks=list(ep.support_masks),  # type: ignore[arg-type]
                             meta={"episode_id": ep.episode_id, "class_name": ep.class_name,
                                   "split": self.split, "index": i})
        return self.video_sample(i)

    def video_sample(self, i: int, first_ref: bool = False) -> RefSample:
        """VOS / RVOS sample ``i`` (``dataset[i]``); with ``first_ref`` the object's first frame, when it
        is earlier than the sampled reference, is prepended to the references."""
        if self.task not in ("vos", "rvos"):
            raise ValueError(f"video_sample needs a vos or rvos dataset, this one is {self.task!r}")
        i = self._index(i)
        spec = sample_video(self.config, self.split, i)
        rng = item_rng(self.config.seed, self.split, self.task, i)
        n_frames, gap = spec.num_frames, self.config.max_ref_gap
        text = None
        if self.task == "rvos":
            exp_ids = sorted(spec.expressions, key=int)
            exp_id = exp_ids[int(rng.integers(len(exp_ids)))]
            obj, text = spec.expressions[exp_id]
            r, ref_image, ref_labels = _reference_frame(spec, rng, obj)
        else:
            exp_id, obj, r, ref_image, ref_labels = None, 0, 0, None, None
            for _ in range(_REF_TRIES):
                r = int(rng.integers(n_frames - 1))
                ref_image, ref_labels = spec.render(r)
                present = [k for k in spec.object_ids if (ref_labels == k).sum() >= _min_pixels(spec, k, r)]
                if present:
                    obj = present[int(rng.integers(len(present)))]
                    break
            else:  # frame 0 shows every object born there, well visible by construction
                r = 0
                ref_image, ref_labels = spec.render(0)
                present = [k for k in spec.object_ids if spec.birth[k - 1] == 0]
                obj = present[int(rng.integers(len(present)))]
        t = r + int(rng.integers(1, min(gap, n_frames - 1 - r) + 1))
        image, labels = spec.render(t)
        meta = {"video": f"synthetic-{self.split}-{i:06d}", "object_id": obj, "frame": t, "ref_frame": r,
                "split": self.split, "index": i}
        if exp_id is not None:
            meta["exp_id"] = exp_id
        ref_images, ref_masks = [ref_image], [ref_labels == obj]  # type: ignore[operator]
        first = spec.birth[obj - 1]
        if first_ref and first < r:
            first_image, first_labels = spec.render(first)
            ref_images, ref_masks = [first_image, *ref_images], [first_labels == obj, *ref_masks]
            meta["first_frame"] = first
        return RefSample(self.task, image, labels == obj, text=text, ref_images=ref_images,  # type: ignore[arg-type]
                         ref_masks=ref_masks, meta=meta)


    def example_video_sample(self, i: int, shots: int = 1, found_prob: float = 0.5, absent_prob: float = 0.0) -> RefSample:
        """VOS sample ``i`` whose object is shown by ``shots`` examples from other scenes
        (:func:`~.examples.object_examples`) instead of its first frame, as example-prompted tracking does:
        with probability ``found_prob`` the object was found already and its previous-frame mask follows the
        examples (the tracking state), otherwise the examples are the only references (the search state).
        In the search state, with probability ``absent_prob`` the frame is one of another video, where the
        object is not: the target is an empty mask (and the score's target 0), so the model learns to say
        that what the examples show is not there, rather than settle on a look-alike before the object enters.
        ``meta["ref_local"]`` says which references are frames of the video (``True``) and which are other
        images (``False``); ``meta["absent"]`` marks the empty targets. Task ``"vos_examples"``."""
        check_probability("found_prob", found_prob)
        check_probability("absent_prob", absent_prob)
        base = self.video_sample(i)
        obj = base.meta["object_id"]
        index = self._index(i)
        spec = sample_video(self.config, self.split, index)
        examples = object_examples(self.config, self.split, example_key(index, obj), spec.shapes[obj - 1], shots)
        rng = item_rng(self.config.seed, self.split, "vos_examples", index)
        found = bool(rng.random() < found_prob)
        absent = not found and bool(rng.random() < absent_prob)
        image, mask, meta = base.image, base.mask, dict(base.meta)
        if absent:  # a frame of another video (a different stream of the generator: other identities)
            other = sample_video(self.config, self.split, index + 1 + int(rng.integers(1 << 20)))
            image = other.render(int(rng.integers(other.num_frames)))[0]
            mask = np.zeros_like(base.mask)
        images = [e[0] for e in examples] + (list(base.ref_images[-1:]) if found else [])
        masks = [e[1] for e in examples] + (list(base.ref_masks[-1:]) if found else [])
        meta.update({"ref_local": [False] * len(examples) + [True] * found, "found": found, "absent": absent})
        return RefSample("vos_examples", image, mask, ref_images=images, ref_masks=masks, meta=meta)


def _min_pixels(spec: VideoSpec, object_id: int, t: int) -> int:
    """A reference mask must show at least a quarter of the object (and be non-empty)."""
    shape = spec.shape_at(object_id, t)
    if shape is None:
        return 1 << 30
    return max(1, int(np.pi * shape.radius**2 / 4))


def _reference_frame(spec: VideoSpec, rng: np.random.Generator, obj: int) -> tuple[int, np.ndarray, np.ndarray]:
    """An earlier frame (not the last) where ``obj`` is well visible; its first frame as a fallback."""
    first, last = spec.birth[obj - 1], spec.num_frames - 2
    for _ in range(_REF_TRIES):
        r = int(rng.integers(first, last + 1))
        image, labels = spec.render(r)
        if (labels == obj).sum() >= _min_pixels(spec, obj, r):
            return r, image, labels
    image, labels = spec.render(first)
    return first, image, labels

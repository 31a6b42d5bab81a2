"""Few-shot segmentation episodes: K support scenes and one query scene sharing a shape class.

The class of episode ``i`` is ``shape_classes[i % len(shape_classes)]`` (balanced classes, as the
per-class FSS metric expects). Every image is its own scene containing at least one shape of the
class, drawn in any colour and size; the mask covers *all* visible instances of the class in that
image (the FSS-1000 / PASCAL-5i convention). Train and held-out splits use the same classes (there
are only a few) but independent random streams, so held-out episodes are new scenes, colours,
textures and layouts, never images seen in training.
"""

from __future__ import annotations

from ..types import FewShotEpisode
from .config import SyntheticConfig
from .rng import item_rng
from .scenes import sample_scene


def episode_class(config: SyntheticConfig, index: int) -> str:
    return config.shape_classes[index % len(config.shape_classes)]


def make_episode(config: SyntheticConfig, split: str, index: int, num_shots: int | None = None) -> FewShotEpisode:
    """FSS record ``index`` of ``split`` with ``num_shots`` (default ``config.num_shots``) supports."""
    shots = config.num_shots if num_shots is None else num_shots
    if isinstance(shots, bool) or not isinstance(shots, int) or shots < 1:
        raise ValueError(f"num_shots must be a positive int, got {shots!r}")
    rng = item_rng(config.seed, split, "fss", index)
    kind = episode_class(config, index)
    scenes = [sample_scene(rng, config, forced_kind=kind) for _ in range(shots + 1)]
    query, supports = scenes[0], scenes[1:]
    meta = {
        "split": split, "index": index, "num_shots": shots,
        "query_objects": [(s.kind, s.colour, s.size) for s in query.shapes],
        "support_objects": [[(s.kind, s.colour, s.size) for s in sc.shapes] for sc in supports],
    }
    return FewShotEpisode(
        query_image=query.image,
        query_mask=query.class_mask(kind),
        support_images=[s.image for s in supports],
        support_masks=[s.class_mask(kind) for s in supports],
        class_name=kind,
        episode_id=f"synthetic-{split}-{index}",
        meta=meta,
    )

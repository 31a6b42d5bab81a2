"""FSS-1000 few-shot segmentation episodes (https://github.com/HKUSTCV/FSS-1000).

Layout read as distributed: ``<root>/<class>/<n>.jpg`` with its mask ``<root>/<class>/<n>.png``
(10 images per class, ``n`` = 1..10). A mask pixel is foreground when its grey value is ``>= 128``
(HSNet's ``read_mask``).

Class splits (``split``):

- ``"test"``: the 240 test classes the dataset authors hold out (``fss_test_set.txt`` of the FSS-1000
  repository, the list HSNet's ``data/splits/fss/test.txt`` uses); shipped as
  ``splits/fss1000_test.txt``.
- ``"train"`` (520 classes) / ``"val"`` (240 classes): HSNet drew these at random
  (``data/splits/fss/trn.txt`` / ``val.txt``). They are read from ``splits/fss1000_{split}.txt``
  when the package ships them, else pass ``split_file=`` (HSNet's list); otherwise a
  :class:`DataError` says so.
- ``"trainval"``: every class folder under ``root`` that is not a test class (760 classes).
- ``"all"``: every class folder under ``root``.

Episodes (what this reader does, and how it differs from HSNet): HSNet evaluates each image of each
class once as the query (10 episodes per class, 2400 over the 240 test classes) and draws supports
with ``np.random`` without a fixed seed, possibly repeating a support inside a 5-shot episode. Here,
``episodes_per_class=None`` gives the same query schedule (every image once, in name order); an
integer ``k`` gives ``k`` queries per class taken from successive seeded permutations of the class's
images. The ``shot`` supports are drawn without replacement among the class's *other* images. Every
draw comes from a generator seeded with ``(seed, crc32(class name))``, so the same seed gives the
same episodes, independently of which other classes are present.
"""

from __future__ import annotations

import os
import zlib
from importlib import resources
from pathlib import Path

import numpy as np

from ..io import DataError, handle_error, load_binary_mask
from ..types import FewShotEpisode
from ._common import Reader, check_choice, check_root, frame_sort_key, join_inside

FSS1000_SPLITS = ("train", "val", "test", "trainval", "all")
FSS_MASK_THRESHOLD = 128


def fss1000_split_classes(split: str) -> list[str]:
    """Class names of a packaged FSS-1000 split list (``train`` / ``val`` / ``test``)."""
    check_choice(split, ("train", "val", "test"), "split")
    ref = resources.files("unifusion_sam.data.readers").joinpath("splits", f"fss1000_{split}.txt")
    if not ref.is_file():
        raise DataError(
            f"the FSS-1000 {split!r} class list is not shipped with this package (splits/fss1000_{split}.txt); "
            f"pass split_file= with HSNet's data/splits/fss/{'trn' if split == 'train' else split}.txt"
        )
    return _parse_class_list(ref.read_text(encoding="utf-8"))


def _parse_class_list(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


class FSS1000(Reader):
    """Seeded K-shot episodes over the classes of one FSS-1000 split.

    Args:
        root: the folder holding the 1000 class folders.
        split: see the module docstring.
        shot: number of support pairs per episode (1 and 5 are the benchmark settings).
        episodes_per_class: ``None`` = every image of the class is the query once.
        seed: seed of all draws.
        split_file: a text file of class names (one per line) that replaces the packaged list.
        on_error / verify: see :mod:`unifusion_sam.data.readers._common`. A class folder that is
            missing, an image without its mask, or a class left with fewer than ``shot + 1`` images
            go through ``on_error``.

    Records: :class:`FewShotEpisode` with ``query_image`` / ``support_images`` as paths and
    ``query_mask`` / ``support_masks`` as ``H x W`` bool arrays (decoded when the episode is
    built); ``episode_id`` = ``"<class>/<k>"``; ``meta`` has ``query_name``, ``support_names``,
    ``split``, ``shot``, ``seed``.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "test",
        *,
        shot: int = 1,
        episodes_per_class: int | None = None,
        seed: int = 0,
        split_file: str | os.PathLike | None = None,
        on_error: str = "raise",
        verify: bool = False,
    ) -> None:
        super().__init__(on_error=on_error, verify=verify)
        self.root = check_root(root)
        self.split = check_choice(split, FSS1000_SPLITS, "split")
        if isinstance(shot, bool) or not isinstance(shot, int) or shot < 1:
            raise ValueError(f"shot must be a positive int, got {shot!r}")
        if episodes_per_class is not None and (
            isinstance(episodes_per_class, bool) or not isinstance(episodes_per_class, int) or episodes_per_class < 1
        ):
            raise ValueError(f"episodes_per_class must be None or a positive int, got {episodes_per_class!r}")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {seed!r}")
        self.shot, self.episodes_per_class, self.seed = shot, episodes_per_class, seed
        self.classes = self._split_classes(split_file)
        self._images: dict[str, list[Path]] = {}
        for name in self.classes:
            try:
                images = self._index_class(name)
            except DataError as err:
                handle_error(err, self.on_error)
                continue
            self._images[name] = images
            self._entries.extend(self._episodes(name, len(images)))
        self._finish_init()

    def _split_classes(self, split_file: str | os.PathLike | None) -> list[str]:
        on_disk = sorted(p.name for p in self.root.iterdir() if p.is_dir())
        if split_file is not None:
            path = Path(split_file)
            if not path.is_file():
                raise DataError(f"split file not found: {path}")
            try:
                return sorted(set(_parse_class_list(path.read_text(encoding="utf-8"))))
            except (OSError, UnicodeDecodeError) as exc:
                raise DataError(f"cannot read the split file {path}: {exc}") from exc
        if self.split == "all":
            return on_disk
        if self.split == "trainval":
            test = set(fss1000_split_classes("test"))
            return [c for c in on_disk if c not in test]
        return sorted(set(fss1000_split_classes(self.split)))

    def _index_class(self, name: str) -> list[Path]:
        folder = join_inside(self.root, name, "FSS-1000 class list")
        if not folder.is_dir():
            raise DataError(f"FSS-1000 class folder not found: {folder}")
        images = []
        for jpg in sorted(folder.glob("*.jpg"), key=lambda p: frame_sort_key(p.name)):
            if not jpg.with_suffix(".png").is_file():
                handle_error(DataError(f"mask not found for {jpg}: {jpg.with_suffix('.png')}"), self.on_error)
                continue
            images.append(jpg)
        if len(images) < self.shot + 1:
            raise DataError(f"class folder {folder} has {len(images)} image/mask pairs, need >= {self.shot + 1}")
        return images

    def _episodes(self, name: str, n: int) -> list[tuple[str, int, list[int], int]]:
        rng = np.random.default_rng([self.seed, zlib.crc32(name.encode("utf-8"))])
        if self.episodes_per_class is None:
            queries = list(range(n))
        else:
            cycles = -(-self.episodes_per_class // n)
            queries = [int(q) for _ in range(cycles) for q in rng.permutation(n)][: self.episodes_per_class]
        episodes = []
        for k, q in enumerate(queries):
            others = [i for i in range(n) if i != q]
            supports = [others[int(j)] for j in rng.choice(len(others), size=self.shot, replace=False)]
            episodes.append((name, q, supports, k))
        return episodes

    def _build(self, entry: tuple[str, int, list[int], int]) -> FewShotEpisode:
        name, q, supports, k = entry
        images = self._images[name]
        query, support_paths = images[q], [images[i] for i in supports]
        return FewShotEpisode(
            query_image=query,
            query_mask=load_binary_mask(query.with_suffix(".png"), threshold=FSS_MASK_THRESHOLD),
            support_images=support_paths,
            support_masks=[
                load_binary_mask(p.with_suffix(".png"), threshold=FSS_MASK_THRESHOLD) for p in support_paths
            ],
            class_name=name,
            episode_id=f"{name}/{k}",
            meta={
                "query_name": query.stem,
                "support_names": [p.stem for p in support_paths],
                "split": self.split,
                "shot": self.shot,
                "seed": self.seed,
            },
        )

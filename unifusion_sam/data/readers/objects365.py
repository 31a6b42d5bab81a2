"""Objects365 (v2): 365 classes, box-only annotations in COCO format (UniRef++'s pre-training data).

Layout read (the annotation files as distributed, ``zhiyuan_objv2_{train,val}.json``)::

    <root>/zhiyuan_objv2_<split>.json              # or <root>/annotations/zhiyuan_objv2_<split>.json
    <root>/images/<split>/...                      # or <root>/<split>/...  (the images, see below)

The json's ``file_name`` is like ``images/v1/patch8/objects365_v1_00420917.jpg`` (v1 / v2 tells which
release the image came from; the patch is the download archive). Where the image files lie depends
on how the archives were unpacked; ``image_layout`` names the convention, ``"auto"`` (default)
picks the first that holds one of the first images of the file:

- ``"file_name"``: ``<image dir>/<file_name>`` -- the path as written in the json, below the split's
  image folder, or below ``<root>`` itself (the file name taken as relative to the dataset root);
- ``"patch"``: ``<image dir>/patch8/objects365_v1_00420917.jpg`` -- each ``patchN.tar.gz`` unpacked
  in the split folder, as mmdetection's ``Objects365V2Dataset`` and EasyCV read it;
- ``"flat"``: ``<image dir>/objects365_v1_00420917.jpg`` -- every image moved into one folder, as
  UniRef's ``download_objects365_v2.py`` (after YOLOv5's) leaves them in ``<root>/images``.

The image folders tried, in order: ``image_dir`` if given, else those of ``<root>/images/<split>``,
``<root>/<split>``, ``<root>/images`` that exist (one must), then ``<root>``. Once chosen, the convention applies to every image (no
per-image search over 1.7M files); an image that is not where it says (three train images are
known to be missing from the archives) raises :class:`DataError` naming the path when loaded --
``verify=True`` with ``on_error="skip"`` drops such images up front.

Records: one :class:`DetectionRecord` per image with ``masks=None``; labels, box conversion and
filtering as in :mod:`unifusion_sam.data.readers._detection` (crowd and degenerate boxes left out,
images without boxes dropped, labels = index of the sorted category ids).
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

from ..io import DataError
from ._common import check_choice, check_root, join_inside
from ._detection import DetectionJSON, first_existing

OBJECTS365_SPLITS = ("train", "val")
OBJECTS365_IMAGE_LAYOUTS = ("auto", "file_name", "patch", "flat")
_PROBE_IMAGES = 20


def objects365_image_path(image_dir: str | os.PathLike, file_name: str, layout: str) -> Path:
    """Where an image of ``file_name`` (as in the json) lies under ``image_dir`` for ``layout``
    (``"file_name"``, ``"patch"`` or ``"flat"``; see the module docstring)."""
    check_choice(layout, OBJECTS365_IMAGE_LAYOUTS[1:], "image_layout")
    join_inside(Path(image_dir), file_name, "Objects365 annotation")
    name = PurePosixPath(file_name.replace("\\", "/"))
    if layout == "file_name":
        return Path(image_dir, *name.parts)
    if layout == "patch" and name.parent.name:
        return Path(image_dir, name.parent.name, name.name)
    return Path(image_dir, name.name)


class Objects365(DetectionJSON):
    """Objects365 v2 images as :class:`DetectionRecord` s (see the module docstring).

    Args:
        root: the dataset folder; may be ``None`` when ``annotation_file`` and ``image_dir`` are given.
        split: ``"train"`` or ``"val"``.
        annotation_file / image_dir: override the json / the image folder.
        image_layout: ``"auto"``, ``"file_name"``, ``"patch"`` or ``"flat"``.
        on_error / verify: see :mod:`unifusion_sam.data.readers._common`.

    Attributes: ``categories`` (class names, index = label), ``category_ids`` (dataset ids, index =
    label), ``num_classes``, ``image_dir`` and ``image_layout`` (the ones chosen).
    """

    dataset = "objects365"

    def __init__(
        self,
        root: str | os.PathLike | None = None,
        split: str = "train",
        *,
        annotation_file: str | os.PathLike | None = None,
        image_dir: str | os.PathLike | None = None,
        image_layout: str = "auto",
        on_error: str = "raise",
        verify: bool = False,
    ) -> None:
        super().__init__(on_error=on_error, verify=verify)
        if root is None and (annotation_file is None or image_dir is None):
            raise ValueError("give root (with split) or both annotation_file and image_dir")
        check_choice(split, OBJECTS365_SPLITS, "split")
        check_choice(image_layout, OBJECTS365_IMAGE_LAYOUTS, "image_layout")
        root_path = check_root(root, "Objects365 root") if root is not None else None
        if annotation_file is None:
            name = f"zhiyuan_objv2_{split}.json"
            annotation_file = first_existing([root_path / name, root_path / "annotations" / name],
                                             "Objects365 annotation file")
        if image_dir is not None:
            dirs = [check_root(image_dir, "Objects365 image folder")]
        else:
            candidates = [root_path / "images" / split, root_path / split, root_path / "images"]
            if not any(d.is_dir() for d in candidates):
                raise DataError(f"Objects365 image folder not found; looked for: {', '.join(map(str, candidates))}")
            dirs = [d for d in candidates if d.is_dir()] + [root_path]
        self._index(Path(annotation_file), split)
        self.image_dir, self.image_layout = self._choose_layout(dirs, image_layout)
        self._finish_init()

    def _choose_layout(self, dirs: list[Path], layout: str) -> tuple[Path, str]:
        layouts = OBJECTS365_IMAGE_LAYOUTS[1:] if layout == "auto" else (layout,)
        if len(dirs) * len(layouts) == 1 or not self._entries:
            return dirs[0], layouts[0]
        tried: list[Path] = []
        for image_id, _, _ in self._entries[:_PROBE_IMAGES]:
            for folder in dirs:
                for lay in layouts:
                    path = objects365_image_path(folder, self._images[image_id][0], lay)
                    if path.is_file():
                        return folder, lay
                    tried.append(path)
        shown = ", ".join(str(p) for p in tried[:8])
        raise DataError(f"no image of {self.annotation_file} found under {', '.join(str(d) for d in dirs)} "
                        f"(image_layout={layout!r}); looked for: {shown}{', ...' if len(tried) > 8 else ''}")

    def _image_path(self, file_name: str) -> Path:
        return objects365_image_path(self.image_dir, file_name, self.image_layout)

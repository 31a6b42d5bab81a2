"""RefCOCO / RefCOCO+ / RefCOCOg in the ``refer`` layout (https://github.com/lichengunc/refer).

Layout read as distributed::

    <root>/<dataset>/refs(<split_by>).p     # dataset in refcoco, refcoco+, refcocog
    <root>/<dataset>/instances.json         # COCO format: images, annotations, categories
    <image_dir>/COCO_train2014_*.jpg        # COCO train2014 images (default: refer's
                                            # <root>/images/mscoco/images/train2014, else <root>/train2014)

``split_by``: ``unc`` (RefCOCO, RefCOCO+; splits train / val / testA / testB), ``umd`` (RefCOCOg;
train / val / test) and ``google`` (train / val / test where present). One
:class:`~unifusion_sam.data.types.ReferringExpression` per sentence; its mask is decoded from the
referred annotation at the original image size (polygons unioned with ``pycocotools`` ``merge``,
RLE strings and uncompressed RLE count lists both accepted).

Security note: ``refs(*).p`` is a pickle written by the dataset authors and reading it cannot be
avoided. It is loaded with a restricted unpickler that resolves no global other than plain
builtins (dict / list / str / int / float / tuple / set / bool), so loading it cannot run code; a
file asking for anything else raises :class:`~unifusion_sam.data.io.DataError`.
"""

from __future__ import annotations

import builtins
import os
import pickle
from pathlib import Path
from typing import Any

from ..io import DataError, handle_error
from ..types import ReferringExpression
from ._common import Reader, check_choice, check_root, join_inside, load_json
from .coco import check_coco_segmentation, decode_coco_segmentation, is_json_id

REFCOCO_DATASETS = ("refcoco", "refcoco+", "refcocog")
REFCOCO_SPLITS: dict[str, tuple[str, ...]] = {
    "unc": ("train", "val", "testA", "testB"),
    "umd": ("train", "val", "test"),
    "google": ("train", "val", "test"),
}
DEFAULT_SPLIT_BY = {"refcoco": "unc", "refcoco+": "unc", "refcocog": "umd"}

_SAFE_BUILTINS = ("dict", "list", "str", "int", "float", "tuple", "set", "frozenset", "bool", "complex", "bytes")
_PY2_ALIASES = {"unicode": "str", "long": "int"}


class _BuiltinsOnlyUnpickler(pickle.Unpickler):
    """Unpickler that resolves only plain builtin container / scalar types."""

    def find_class(self, module: str, name: str) -> Any:
        if module in ("builtins", "__builtin__"):
            name = _PY2_ALIASES.get(name, name) if module == "__builtin__" else name
            if name in _SAFE_BUILTINS:
                return getattr(builtins, name)
        raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a refs file")

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("persistent ids are not allowed in a refs file")


def load_refs_pickle(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Read a ``refs(*).p`` file safely (see module docstring); returns the list of ref dicts."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"refs file not found: {path}")
    try:
        with open(path, "rb") as f:
            refs = _BuiltinsOnlyUnpickler(f, encoding="utf-8").load()
    except (
        pickle.UnpicklingError,
        EOFError,
        UnicodeDecodeError,
        ValueError,
        TypeError,
        AttributeError,
        IndexError,
        KeyError,
        MemoryError,
        OverflowError,
    ) as exc:
        raise DataError(f"cannot read refs pickle {path}: {exc}") from exc
    if not isinstance(refs, list) or not all(isinstance(r, dict) for r in refs):
        raise DataError(f"refs pickle {path} does not hold a list of dicts")
    return refs


class RefCOCO(Reader):
    """Referring expressions of RefCOCO / RefCOCO+ / RefCOCOg, one record per sentence.

    Args:
        root: folder holding ``refcoco/``, ``refcoco+/``, ``refcocog/`` (refer's ``data/``).
        dataset: ``"refcoco"``, ``"refcoco+"`` or ``"refcocog"``.
        split: one of ``REFCOCO_SPLITS[split_by]``.
        split_by: ``"unc"``, ``"umd"`` or ``"google"``; default ``unc`` (``umd`` for RefCOCOg).
        image_dir: the COCO ``train2014`` folder (see module docstring for the default).
        sentence_key: ``"sent"`` (refer's normalised, lower-cased sentence) or ``"raw"``.
        on_error / verify: see :mod:`unifusion_sam.data.readers._common`.

    Records: ``image`` = path of the COCO image; ``mask`` = ``H x W`` bool at the image size;
    ``ref_id`` = the ref's id as a string; ``meta`` holds ``sent_id, ann_id, image_id,
    category_id, category, split, dataset, split_by``.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        dataset: str = "refcoco",
        split: str = "val",
        *,
        split_by: str | None = None,
        image_dir: str | os.PathLike | None = None,
        sentence_key: str = "sent",
        on_error: str = "raise",
        verify: bool = False,
    ) -> None:
        super().__init__(on_error=on_error, verify=verify)
        root = check_root(root)
        self.dataset = check_choice(dataset, REFCOCO_DATASETS, "dataset")
        self.split_by = check_choice(split_by or DEFAULT_SPLIT_BY[dataset], tuple(REFCOCO_SPLITS), "split_by")
        self.split = check_choice(split, REFCOCO_SPLITS[self.split_by], f"split for split_by={self.split_by!r}")
        self.sentence_key = check_choice(sentence_key, ("sent", "raw"), "sentence_key")
        data_dir = check_root(root / dataset, f"{dataset} folder")
        if image_dir is None:
            candidates = [root / "images" / "mscoco" / "images" / "train2014", root / "train2014"]
            image_dir = next((c for c in candidates if c.is_dir()), candidates[0])
        self.image_dir = check_root(image_dir, "COCO train2014 image folder")
        self.refs_path = data_dir / f"refs({self.split_by}).p"
        self.instances_path = data_dir / "instances.json"
        refs = load_refs_pickle(self.refs_path)
        instances = load_json(self.instances_path)
        if not isinstance(instances, dict) or not all(isinstance(instances.get(k), list) for k in ("images", "annotations")) \
                or not isinstance(instances.get("categories", []), list):
            raise DataError(f"{self.instances_path} is not a COCO instances file (needs images, annotations lists)")
        self._images = {img["id"]: img for img in instances["images"] if isinstance(img, dict) and is_json_id(img.get("id"))}
        self._anns = {ann["id"]: ann for ann in instances["annotations"] if isinstance(ann, dict) and is_json_id(ann.get("id"))}
        self._cats = {
            c["id"]: c.get("name") for c in instances.get("categories", []) if isinstance(c, dict) and is_json_id(c.get("id"))
        }
        for ref in refs:
            if ref.get("split") != self.split:
                continue
            try:
                self._entries.extend(self._index_ref(ref))
            except DataError as err:
                handle_error(err, self.on_error)
        if not self._entries and not any(r.get("split") == self.split for r in refs):
            raise DataError(f"{self.refs_path} has no refs in split {self.split!r}")
        self._finish_init()

    def _index_ref(self, ref: dict[str, Any]) -> list[tuple[dict, int]]:
        src = f"{self.refs_path} ref_id={ref.get('ref_id')}"
        for key in ("ref_id", "ann_id", "image_id", "sentences"):
            if key not in ref:
                raise DataError(f"{src}: missing key {key!r}")
        for key in ("ann_id", "image_id", "category_id"):
            if key in ref and not is_json_id(ref[key]):
                raise DataError(f"{src}: {key} {ref[key]!r} is not an id")
        ann = self._anns.get(ref["ann_id"])
        if ann is None:
            raise DataError(f"{src}: ann_id {ref['ann_id']} not in {self.instances_path}")
        if "category_id" in ann and not is_json_id(ann["category_id"]):
            raise DataError(f"{self.instances_path} ann {ref['ann_id']}: category_id {ann['category_id']!r} is not an id")
        if ann.get("image_id") != ref["image_id"]:
            raise DataError(f"{src}: ann {ref['ann_id']} belongs to image {ann.get('image_id')}, not {ref['image_id']}")
        img = self._images.get(ref["image_id"])
        if img is None:
            raise DataError(f"{src}: image_id {ref['image_id']} not in {self.instances_path}")
        if not all(isinstance(img.get(k), int) for k in ("height", "width")) or not isinstance(
            img.get("file_name"), str
        ):
            raise DataError(f"{src}: image {ref['image_id']} lacks height / width / file_name in {self.instances_path}")
        join_inside(self.image_dir, img["file_name"], f"{self.instances_path} image {ref['image_id']}")
        check_coco_segmentation(
            ann.get("segmentation"), img["height"], img["width"], f"{self.instances_path} ann {ann['id']}"
        )
        sentences = ref["sentences"]
        if not isinstance(sentences, list) or not sentences:
            raise DataError(f"{src}: no sentences")
        for i, sent in enumerate(sentences):
            if not isinstance(sent, dict) or not isinstance(sent.get(self.sentence_key), str):
                raise DataError(f"{src}: sentence {i} has no string {self.sentence_key!r}")
        return [(ref, i) for i in range(len(sentences))]

    def _build(self, entry: tuple[dict, int]) -> ReferringExpression:
        ref, i = entry
        ann = self._anns[ref["ann_id"]]
        img = self._images[ref["image_id"]]
        source = f"{self.instances_path} ann {ann['id']}"
        mask = decode_coco_segmentation(ann["segmentation"], img["height"], img["width"], source)
        sent = ref["sentences"][i]
        category_id = ref.get("category_id", ann.get("category_id"))
        return ReferringExpression(
            image=join_inside(self.image_dir, img["file_name"], f"{self.instances_path} image {ref['image_id']}"),
            mask=mask,
            sentence=sent[self.sentence_key],
            ref_id=str(ref["ref_id"]),
            meta={
                "sent_id": sent.get("sent_id"),
                "ann_id": ref["ann_id"],
                "image_id": ref["image_id"],
                "category_id": category_id,
                "category": self._cats.get(category_id),
                "split": self.split,
                "dataset": self.dataset,
                "split_by": self.split_by,
            },
        )

"""DAVIS-2017 (semi-supervised and unsupervised annotations) and Ref-DAVIS17 expressions.

DAVIS layout read as distributed (``DAVIS-2017-trainval-480p.zip`` and friends)::

    <davis>/JPEGImages/480p/<video>/00000.jpg
    <davis>/Annotations/480p/<video>/00000.png               # palette PNG, index = object id
    <davis>/Annotations_unsupervised/480p/<video>/00000.png  # the unsupervised-task annotations
    <davis>/ImageSets/2017/{train,val,test-dev,test-challenge}.txt

train / val have a label map for every frame; test-dev / test-challenge only for the first frame.
Semi-supervised (``task="semi-supervised"``): the objects are those of the first frame's label map.
Unsupervised (``task="unsupervised"``): the objects are every id of every label map, each with the
first frame it appears in. Value 255 is void (the DAVIS evaluation ignores it), never an object.

Ref-DAVIS17 (Khoreva et al., 2018; ``davis_text_annotations.zip``)::

    <text_root>/Davis17_annot1.txt             # annotator 1, first-frame expressions (UTF-8)
    <text_root>/Davis17_annot1_full_video.txt  # annotator 1, full-video expressions (UTF-8)
    <text_root>/Davis17_annot2.txt             # annotator 2 (Latin-1, as ReferFormer reads it)
    <text_root>/Davis17_annot2_full_video.txt

one line per expression: ``<video> <object id> "<expression>"``. The object ids are those of the
*unsupervised* annotations (``Annotations_unsupervised``), against which Ref-DAVIS17 is evaluated
(ReferFormer / UniRef: DAVIS evaluation with ``task="unsupervised"``). Three video names in the
text files are misspelt; they are mapped as ReferFormer does (``clasic-car``, ``dog-scale``,
``motor-bike``).
"""

from __future__ import annotations

import os
from pathlib import Path

from ..io import DataError, handle_error
from ..types import VideoRecord
from ._common import Reader, check_choice, check_root, index_video_folder, scan_objects

DAVIS_SPLITS = ("train", "val", "test-dev", "test-challenge")
DAVIS_TASKS = ("semi-supervised", "unsupervised")
DAVIS_RESOLUTIONS = ("480p", "Full-Resolution")
REF_DAVIS_KINDS = ("first", "full")
_REF_DAVIS_FILES = {
    (1, "first"): ("Davis17_annot1.txt", "utf-8"),
    (1, "full"): ("Davis17_annot1_full_video.txt", "utf-8"),
    (2, "first"): ("Davis17_annot2.txt", "latin-1"),
    (2, "full"): ("Davis17_annot2_full_video.txt", "latin-1"),
}
_REF_DAVIS_VIDEO_FIXES = {"clasic-car": "classic-car", "dog-scale": "dogs-scale", "motor-bike": "motorbike"}


class DAVIS2017(Reader):
    """DAVIS-2017 videos of one split as :class:`VideoRecord` s.

    Args:
        root: the ``DAVIS`` folder (holds ``JPEGImages``, ``Annotations``, ``ImageSets``).
        split: ``train``, ``val``, ``test-dev`` or ``test-challenge``.
        resolution: ``480p`` or ``Full-Resolution``.
        task: ``semi-supervised`` (``Annotations``) or ``unsupervised`` (``Annotations_unsupervised``).
        on_error / verify: see :mod:`unifusion_sam.data.readers._common`.

    Records: ``frames`` are JPEG paths; ``annotations`` frame index -> PNG path; ``object_ids`` and
    ``first_frame`` as described in the module docstring (read from the PNGs when the record is
    first built, then cached); ``meta`` has ``split``, ``task``, ``resolution``.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "val",
        *,
        resolution: str = "480p",
        task: str = "semi-supervised",
        on_error: str = "raise",
        verify: bool = False,
    ) -> None:
        super().__init__(on_error=on_error, verify=verify)
        self.root = check_root(root, "DAVIS root")
        self.split = check_choice(split, DAVIS_SPLITS, "split")
        self.resolution = check_choice(resolution, DAVIS_RESOLUTIONS, "resolution")
        self.task = check_choice(task, DAVIS_TASKS, "task")
        folder = "Annotations" if task == "semi-supervised" else "Annotations_unsupervised"
        self.image_root = check_root(self.root / "JPEGImages" / resolution, "DAVIS image folder")
        self.ann_root = check_root(self.root / folder / resolution, "DAVIS annotation folder")
        list_path = self.root / "ImageSets" / "2017" / f"{split}.txt"
        if not list_path.is_file():
            raise DataError(f"DAVIS split list not found: {list_path}")
        try:
            self.videos = [v.strip() for v in list_path.read_text(encoding="utf-8").splitlines() if v.strip()]
        except (OSError, UnicodeDecodeError) as exc:
            raise DataError(f"cannot read the DAVIS split list {list_path}: {exc}") from exc
        self._cache: dict[str, VideoRecord] = {}
        for video in self.videos:
            try:
                frames, annotations = index_video_folder(
                    video, self.image_root / video, self.ann_root / video, require_first=task == "semi-supervised"
                )
            except DataError as err:
                handle_error(err, self.on_error)
                continue
            self._entries.append((video, frames, annotations))
        self._finish_init()

    def _build(self, entry: tuple[str, list[Path], dict[int, Path]]) -> VideoRecord:
        video, frames, annotations = entry
        if video not in self._cache:
            first = scan_objects(annotations, first_only=self.task == "semi-supervised")
            if not first:
                raise DataError(f"video {video!r}: no object in the annotations under {self.ann_root / video}")
            self._cache[video] = VideoRecord(
                name=video,
                frames=list(frames),
                frame_names=[p.stem for p in frames],
                annotations=dict(annotations),
                object_ids=sorted(first),
                first_frame=dict(sorted(first.items())),
                meta={"split": self.split, "task": self.task, "resolution": self.resolution, "dataset": "davis2017"},
            )
        return self._cache[video].copy()


def read_ref_davis_file(path: str | os.PathLike, encoding: str) -> list[tuple[str, int, str, int]]:
    """Parse one Ref-DAVIS17 text file into ``(video, object id, expression, line number)``."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"Ref-DAVIS17 expression file not found: {path}")
    try:
        text = path.read_text(encoding=encoding)
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read {path}: {exc}") from exc
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line:
            continue
        parts = line.split(maxsplit=2)
        if len(parts) != 3 or not parts[1].isdigit():
            raise DataError(f"{path} line {number}: expected '<video> <object id> \"<expression>\"', got {line!r}")
        video, obj, expression = parts
        expression = expression.strip()
        if len(expression) >= 2 and expression[0] == expression[-1] == '"':
            expression = expression[1:-1].strip()
        rows.append((_REF_DAVIS_VIDEO_FIXES.get(video, video), int(obj), expression, number))
    return rows


class RefDAVIS17(Reader):
    """Ref-DAVIS17: DAVIS-2017 videos (unsupervised annotations) with their referring expressions.

    Args:
        root: folder holding ``DAVIS/`` and ``davis_text_annotations/`` (ReferFormer's
            ``data/ref-davis``); override either with ``davis_root`` / ``text_root``.
        split: ``train`` (60 videos) or ``val`` (30 videos, the benchmark).
        annotators / kinds: which of the four expression files to read (default: all).
        on_error / verify: see :mod:`unifusion_sam.data.readers._common`.

    ``expressions`` maps an expression id to ``(object id, sentence)``. Ids follow ReferFormer's
    ``convert_davis_to_ytvos.py`` numbering: objects in increasing id order, 4 ids each, in the
    order (annotator 1 first-frame, annotator 1 full-video, annotator 2 first-frame, annotator 2
    full-video), counted over every expression file present, so ids do not change when only some
    annotators / kinds are selected. ``meta["expression_info"]`` gives
    each id's annotator, kind and object. An expression whose object is not in the video's
    annotations raises :class:`DataError` when the record is built.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "val",
        *,
        davis_root: str | os.PathLike | None = None,
        text_root: str | os.PathLike | None = None,
        annotators: tuple[int, ...] = (1, 2),
        kinds: tuple[str, ...] = REF_DAVIS_KINDS,
        resolution: str = "480p",
        on_error: str = "raise",
        verify: bool = False,
    ) -> None:
        super().__init__(on_error=on_error, verify=verify)
        root = check_root(root)
        self.split = check_choice(split, ("train", "val"), "split")
        for a in annotators:
            check_choice(a, (1, 2), "annotator")
        for k in kinds:
            check_choice(k, REF_DAVIS_KINDS, "kind")
        text_root = check_root(text_root or root / "davis_text_annotations", "Ref-DAVIS17 text folder")
        self.davis = DAVIS2017(
            davis_root or root / "DAVIS", split, resolution=resolution, task="unsupervised", on_error=on_error
        )
        self.annotators, self.kinds = tuple(annotators), tuple(kinds)
        self._expressions: dict[str, dict[tuple[int, str, int], tuple[str, str]]] = {}
        for (annotator, kind), (name, encoding) in _REF_DAVIS_FILES.items():
            wanted = annotator in annotators and kind in kinds
            if not wanted and not (text_root / name).is_file():
                continue  # read the other files only to number the expressions the same way
            for video, obj, expression, number in read_ref_davis_file(text_root / name, encoding):
                key = (obj, kind, annotator)
                self._expressions.setdefault(video, {})[key] = (expression, f"{text_root / name} line {number}")
        for i in range(len(self.davis)):
            video = self.davis._entries[i][0]
            if not any(a in annotators and k in kinds for _, k, a in self._expressions.get(video, {})):
                handle_error(
                    DataError(f"video {video!r} of {self.davis.root} has no Ref-DAVIS17 expression"), self.on_error
                )
                continue
            self._entries.append(i)
        self._finish_init()

    def _build(self, entry: int) -> VideoRecord:
        record = self.davis[entry]
        table = self._expressions[record.name]
        objects = sorted({obj for obj, _, _ in table})
        expressions, info = {}, {}
        for rank, obj in enumerate(objects):
            for combo, (annotator, kind) in enumerate(((1, "first"), (1, "full"), (2, "first"), (2, "full"))):
                if (obj, kind, annotator) not in table or annotator not in self.annotators or kind not in self.kinds:
                    continue
                sentence, where = table[(obj, kind, annotator)]
                if obj not in record.object_ids:
                    raise DataError(
                        f"{where}: object {obj} is not in the annotations of video {record.name!r} "
                        f"(objects {record.object_ids})"
                    )
                exp_id = str(4 * rank + combo)
                expressions[exp_id] = (obj, sentence)
                info[exp_id] = {"annotator": annotator, "kind": kind, "obj_id": obj}
        record.expressions = expressions
        record.meta.update({"dataset": "ref-davis17", "expression_info": info})
        return record

"""Fuzzing the dataset readers (``unifusion_sam.data.readers``) on corrupted copies of tiny datasets in their
official layouts (``tests/fixtures_layouts.py``, ``tests/fixtures_detection.py``): one file of the copy is
deleted, truncated, emptied, overwritten with garbage, or (JSON and refs pickles) has one key removed or one
value replaced by a value of another type; images and masks are rewritten at other sizes or modes, label maps
with unknown ids. Reading everything (``reader.load(i)`` for every record) must succeed or fail with a clean
error naming a file of the dataset (the rule of :mod:`fuzzing`); with ``on_error="skip"`` only a dataset that
cannot be read at all (a root, meta file or split list) may raise, and every record it gives loads."""

from __future__ import annotations

import json
import pickle
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
from fixtures_detection import write_objects365, write_ovis
from fixtures_layouts import (
    write_coco,
    write_davis,
    write_fss1000,
    write_lvos,
    write_mose,
    write_palette_png,
    write_ref_davis,
    write_ref_youtube_vos,
    write_refcoco,
    write_youtube_vos,
)
from fuzzing import Quiet, check_refusal, counted
from hypothesis import example, given
from hypothesis import strategies as st
from PIL import Image
from strategies import mutate_structure

from unifusion_sam.data.io import DataError, DataWarning
from unifusion_sam.data.readers import (
    DAVIS2017,
    FSS1000,
    LVOS,
    MOSE,
    OVIS,
    COCODetection,
    COCOInstances,
    Objects365,
    RefCOCO,
    RefDAVIS17,
    RefYouTubeVOS,
    YouTubeVOS,
)

# name -> (writer of the template, reader on a copy's root)
DATASETS = {
    "coco": (lambda r: write_coco(r, "val2017"), lambda r, **k: COCOInstances(r, "val2017", **k)),
    "coco_det": (lambda r: write_coco(r, "val2017"), lambda r, **k: COCODetection(r, "val2017", **k)),
    "refcoco": (lambda r: write_refcoco(r), lambda r, **k: RefCOCO(r, "refcoco", "train", **k)),
    "fss1000": (lambda r: write_fss1000(r, images_per_class=3),
                lambda r, **k: FSS1000(r, "all", shot=1, episodes_per_class=2, **k)),
    "davis": (lambda r: write_davis(r), lambda r, **k: DAVIS2017(r, "val", **k)),
    "ref_davis": (lambda r: write_ref_davis(r), lambda r, **k: RefDAVIS17(r, "val", **k)),
    "youtube_vos": (lambda r: write_youtube_vos(r, all_frames=False), lambda r, **k: YouTubeVOS(r, "valid", **k)),
    "ref_youtube_vos": (lambda r: write_ref_youtube_vos(r), lambda r, **k: RefYouTubeVOS(r, "train", **k)),
    "mose": (lambda r: write_mose(r, "train"), lambda r, **k: MOSE(r, "train", **k)),
    "lvos": (lambda r: write_lvos(r, "valid"), lambda r, **k: LVOS(r, "valid", **k)),
    "objects365": (lambda r: write_objects365(r, size=(48, 48)), lambda r, **k: Objects365(r, **k)),
    "ovis": (lambda r: write_ovis(r, size=(48, 48), num_frames=2), lambda r, **k: OVIS(r, **k)),
}
MUTATIONS = ("delete", "truncate", "empty", "garbage", "structure", "structure", "structure", "resize", "mode")


@pytest.fixture(scope="module")
def templates():
    """Each dataset written once; every example works on a copy."""
    with tempfile.TemporaryDirectory(prefix="fuzz-readers-") as tmp:
        out = {}
        for name, (write, _) in DATASETS.items():
            root = Path(tmp) / name
            root.mkdir()
            write(root)
            out[name] = (root, sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file()))
        yield Quiet(out, "templates")


def corrupt_file(path: Path, mutation: str, data) -> None:
    suffix = path.suffix.lower()
    raw = path.read_bytes()
    if mutation == "delete":
        path.unlink()
    elif mutation == "truncate":
        path.write_bytes(raw[: data.draw(st.integers(0, max(len(raw) - 1, 0)), label="cut")])
    elif mutation == "empty":
        path.write_bytes(b"")
    elif mutation == "garbage":
        path.write_bytes(data.draw(st.binary(min_size=1, max_size=64), label="garbage"))
    elif mutation == "structure" and suffix == ".json":
        path.write_text(json.dumps(mutate_structure(json.loads(raw), data)[0]))
    elif mutation == "structure" and suffix == ".p":
        path.write_bytes(pickle.dumps(mutate_structure(pickle.loads(raw), data)[0], protocol=2))
    elif mutation == "structure" and suffix == ".txt":
        lines = raw.decode("latin-1").splitlines()
        path.write_text("\n".join(data.draw(st.permutations(lines), label="lines")[: max(len(lines) - 1, 0)]
                                  + [data.draw(st.sampled_from(["", "x", "bear 9 \"?\"", "\"", "nope nope"]))]))
    elif mutation in ("resize", "mode", "structure") and suffix in (".png", ".jpg", ".jpeg"):
        with Image.open(path) as im:
            im.load()
            mode, (w, h) = im.mode, im.size
            arr = np.asarray(im)
        if mutation == "resize":
            h, w = data.draw(st.sampled_from([(h + 1, w), (h, w + 3), (1, 1), (w, h)]), label="size")
            arr = np.resize(arr, (h, w, *arr.shape[2:]))
        elif mutation == "mode":
            mode = data.draw(st.sampled_from(["RGB", "L", "I;16", "RGBA", "1"]), label="mode")
        if suffix == ".png" and mode == "P":
            label = arr.copy()
            if mutation == "structure" and label.size:
                label.reshape(-1)[0] = data.draw(st.sampled_from([7, 200, 254, 255]), label="unknown id")
            write_palette_png(path, label)
        else:
            Image.fromarray(np.ascontiguousarray(arr)).convert(mode).save(path, format="PNG" if suffix == ".png"
                                                                           else "JPEG" if mode in ("RGB", "L") else "PNG")
    else:  # a mutation that does not apply to this kind of file: truncate it
        path.write_bytes(raw[: len(raw) // 2])


def read_everything(reader_factory, root: Path, on_error: str) -> int:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        reader = reader_factory(root, on_error=on_error)
        if on_error == "raise":
            return sum(1 for i in range(len(reader)) if reader.load(i) is not None)
        return sum(1 for _ in reader.materialized())


@given(name=st.sampled_from(sorted(DATASETS)), data=st.data(), on_error=st.sampled_from(["raise", "skip"]))
@example(name="davis", data=None, on_error="raise").via("no mutation: the pristine copy reads")
@counted("readers")
def test_reader_on_a_corrupted_file(templates, name, data, on_error):
    template, files = templates[name]
    with tempfile.TemporaryDirectory(prefix=f"fuzz-{name}-") as tmp:
        root = Path(tmp) / name
        shutil.copytree(template, root)
        if data is None:
            assert read_everything(DATASETS[name][1], root, on_error) > 0
            return
        rel = data.draw(st.sampled_from(files), label="file")
        mutation = data.draw(st.sampled_from(MUTATIONS), label="mutation")
        corrupt_file(root / rel, mutation, data)
        try:
            read_everything(DATASETS[name][1], root, on_error)
        except Exception as exc:  # noqa: BLE001 - judged by the rule
            # the message names the file, a file of the dataset, or (the library's DataError) quotes the value
            quoted = ["'", '"'] if isinstance(exc, DataError) else []
            check_refusal(exc, [rel.name, rel.parent.name, str(root), *quoted], f"{name} reader, {mutation} {rel}")
            if on_error == "skip":
                assert isinstance(exc, (DataError, FileNotFoundError)), f"on_error='skip' raised {exc!r}"

"""Writers of tiny datasets in the exact layouts the official datasets are distributed in.

Plain functions (no pytest dependency) so that any test can build a dataset under ``tmp_path``:
``write_refcoco``, ``write_coco``, ``write_fss1000``, ``write_davis``, ``write_ref_davis``,
``write_youtube_vos``, ``write_ref_youtube_vos``, ``write_lvos``, ``write_mose``. Each returns a
dict with what it wrote (paths, expected masks / label maps) so tests can check decoded pixels.

Images are small JPEGs (lossy: compare their shape, not their pixels); masks and label maps are
PNGs (lossless; label maps are palette "P" PNGs with the DAVIS palette, as distributed).
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

CORRUPT_JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00 this is not a jpeg"


def davis_palette() -> list[int]:
    """The DAVIS / YouTube-VOS palette (bit-interleaved VOC colours), flat list of 768 ints."""
    palette = []
    for i in range(256):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        palette += [r, g, b]
    return palette


def write_jpeg(path: Path, size: tuple[int, int], seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, size=(*size, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr, mode="RGB").save(path, format="JPEG", quality=90)
    return path


def write_palette_png(path: Path, label: np.ndarray) -> Path:
    im = Image.fromarray(np.asarray(label, dtype=np.uint8), mode="P")
    im.putpalette(davis_palette())
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path)
    return path


def corrupt(path: Path) -> Path:
    """Overwrite a file with bytes that no decoder accepts."""
    path.write_bytes(CORRUPT_JPEG)
    return path


def rect_mask(size: tuple[int, int], y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    mask = np.zeros(size, dtype=bool)
    mask[y0:y1, x0:x1] = True
    return mask


def rect_polygon(y0: int, y1: int, x0: int, x1: int) -> list[float]:
    """COCO polygon whose pycocotools rasterisation is exactly rows y0..y1-1, cols x0..x1-1."""
    return [x0, y0, x1, y0, x1, y1, x0, y1]


def uncompressed_rle(mask: np.ndarray) -> dict[str, Any]:
    """COCO uncompressed RLE (column-major runs, starting with a run of zeros)."""
    flat = np.asarray(mask, dtype=np.uint8).flatten(order="F")
    counts, value, run = [], 0, 0
    for v in flat:
        if v == value:
            run += 1
        else:
            counts.append(run)
            value, run = int(v), 1
    counts.append(run)
    return {"size": list(mask.shape), "counts": counts}


def compressed_rle(mask: np.ndarray) -> dict[str, Any]:
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": list(mask.shape), "counts": rle["counts"].decode("ascii")}


# ------------------------------------------------------------------------------------ COCO family
def _coco_instances(image_dir: Path, prefix: str) -> dict[str, Any]:
    """Two images and four annotations covering every segmentation encoding."""
    size1, size2 = (12, 16), (10, 14)
    images = [
        {"id": 1, "file_name": f"{prefix}000000000001.jpg", "height": size1[0], "width": size1[1]},
        {"id": 2, "file_name": f"{prefix}000000000002.jpg", "height": size2[0], "width": size2[1]},
    ]
    for img in images:
        write_jpeg(image_dir / img["file_name"], (img["height"], img["width"]), seed=img["id"])
    # ann 101: one object drawn as two overlapping polygons -> union (XOR would clear the overlap)
    m101 = rect_mask(size1, 3, 9, 2, 8) | rect_mask(size1, 6, 11, 5, 12)
    m102 = rect_mask(size1, 1, 4, 10, 15)
    m103 = rect_mask(size2, 2, 8, 3, 6)
    m104 = rect_mask(size2, 0, 2, 0, 2)  # tiny (area 4)
    anns = [
        {
            "id": 101,
            "image_id": 1,
            "category_id": 1,
            "iscrowd": 0,
            "area": float(m101.sum()),
            "bbox": [2, 3, 10, 8],
            "segmentation": [rect_polygon(3, 9, 2, 8), rect_polygon(6, 11, 5, 12)],
        },
        {
            "id": 102,
            "image_id": 1,
            "category_id": 2,
            "iscrowd": 0,
            "area": float(m102.sum()),
            "bbox": [10, 1, 5, 3],
            "segmentation": compressed_rle(m102),
        },
        {
            "id": 103,
            "image_id": 2,
            "category_id": 1,
            "iscrowd": 1,
            "area": float(m103.sum()),
            "bbox": [3, 2, 3, 6],
            "segmentation": uncompressed_rle(m103),
        },
        {
            "id": 104,
            "image_id": 2,
            "category_id": 2,
            "iscrowd": 0,
            "area": float(m104.sum()),
            "bbox": [0, 0, 2, 2],
            "segmentation": [rect_polygon(0, 2, 0, 2)],
        },
    ]
    cats = [{"id": 1, "name": "person", "supercategory": "person"}, {"id": 2, "name": "dog", "supercategory": "animal"}]
    return {
        "images": images,
        "annotations": anns,
        "categories": cats,
        "masks": {101: m101, 102: m102, 103: m103, 104: m104},
    }


def write_coco(root: Path, split: str = "val2017") -> dict[str, Any]:
    """``<root>/annotations/instances_<split>.json`` + ``<root>/<split>/*.jpg``."""
    root = Path(root)
    data = _coco_instances(root / split, prefix="")
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    ann_file = root / "annotations" / f"instances_{split}.json"
    ann_file.write_text(json.dumps({k: data[k] for k in ("images", "annotations", "categories")}))
    return {"annotation_file": ann_file, "image_dir": root / split, **data}


REFCOCO_SPLIT_LISTS = {
    "unc": ("train", "val", "testA", "testB"),
    "umd": ("train", "val", "test"),
    "google": ("train", "val", "test"),
}


def write_refcoco(root: Path, dataset: str = "refcoco", split_by: str = "unc") -> dict[str, Any]:
    """refer layout: ``<root>/<dataset>/refs(<split_by>).p`` + ``instances.json`` and the images in
    refer's default ``<root>/images/mscoco/images/train2014``. Refs cycle through the splits."""
    root = Path(root)
    image_dir = root / "images" / "mscoco" / "images" / "train2014"
    data = _coco_instances(image_dir, prefix="COCO_train2014_")
    splits = REFCOCO_SPLIT_LISTS[split_by]
    refs = []
    for ref_id, ann_id in enumerate([101, 102, 103, 101]):
        ann = next(a for a in data["annotations"] if a["id"] == ann_id)
        sents = [
            {
                "sent_id": 10 * ref_id + j,
                "sent": f"object {ann_id} sentence {j}",
                "raw": f"Object {ann_id}, #{j}!",
                "tokens": ["object", str(ann_id), "sentence", str(j)],
            }
            for j in range(2 if ref_id == 0 else 1)
        ]
        refs.append(
            {
                "ref_id": ref_id,
                "ann_id": ann_id,
                "image_id": ann["image_id"],
                "split": splits[ref_id % len(splits)],
                "sentences": sents,
                "sent_ids": [s["sent_id"] for s in sents],
                "category_id": ann["category_id"],
                "file_name": f"COCO_train2014_{ann['image_id']:012d}_{ann_id}.jpg",
            }
        )
    folder = root / dataset
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f"refs({split_by}).p", "wb") as f:
        pickle.dump(refs, f, protocol=2)
    (folder / "instances.json").write_text(json.dumps({k: data[k] for k in ("images", "annotations", "categories")}))
    return {
        "refs": refs,
        "image_dir": image_dir,
        "refs_path": folder / f"refs({split_by}).p",
        "instances_path": folder / "instances.json",
        **data,
    }


# --------------------------------------------------------------------------------------- FSS-1000
def write_fss1000(
    root: Path,
    classes: Sequence[str] = ("bus", "swan", "ab_wheel"),
    images_per_class: int = 10,
    size: tuple[int, int] = (8, 10),
) -> dict[str, Any]:
    """``<root>/<class>/<n>.jpg`` + ``<n>.png`` (grey 0/255 masks with 127/128 border pixels)."""
    root = Path(root)
    masks = {}
    for c, name in enumerate(classes):
        for n in range(1, images_per_class + 1):
            write_jpeg(root / name / f"{n}.jpg", size, seed=100 * c + n)
            grey = np.zeros(size, dtype=np.uint8)
            grey[1 : 1 + n % 5 + 1, 2:7] = 255
            grey[0, 0], grey[0, 1] = 127, 128  # threshold is >= 128
            Image.fromarray(grey, mode="L").save(root / name / f"{n}.png")
            masks[(name, str(n))] = grey >= 128
    return {"classes": list(classes), "masks": masks}


# ------------------------------------------------------------------------------------ video family
def _object_label(size: tuple[int, int], objects: dict[int, int], t: int) -> np.ndarray:
    """Label map at frame t: object k (present from frame objects[k]) is a 2-row band moving right."""
    label = np.zeros(size, dtype=np.uint8)
    for k, start in objects.items():
        if t >= start:
            y = (2 * k) % max(size[0] - 1, 1)
            x = t % max(size[1] - 3, 1)
            label[y : y + 2, x : x + 3] = k
    return label


def write_davis(
    root: Path,
    videos: dict[str, dict[str, Any]] | None = None,
    size: tuple[int, int] = (8, 12),
    resolution: str = "480p",
) -> dict[str, Any]:
    """DAVIS-2017 layout. ``videos``: name -> {"split", "frames", "objects" {id: first frame}}.

    Semi-supervised ``Annotations``: all objects from frame 0 (every frame for train / val, first
    frame only for test-dev). ``Annotations_unsupervised``: the same plus, if given,
    ``unsup_objects`` {id: first frame} that may appear late."""
    root = Path(root)
    videos = videos or {
        "bear": {"split": "train", "frames": 3, "objects": {1: 0}},
        "dogs-jump": {"split": "val", "frames": 4, "objects": {1: 0, 2: 0}, "unsup_objects": {1: 0, 2: 0, 3: 2}},
        "aerobatics": {"split": "test-dev", "frames": 3, "objects": {1: 0, 2: 0}},
    }
    labels: dict[tuple[str, str, int], np.ndarray] = {}
    splits: dict[str, list[str]] = {}
    for name, spec in videos.items():
        splits.setdefault(spec["split"], []).append(name)
        for t in range(spec["frames"]):
            write_jpeg(root / "JPEGImages" / resolution / name / f"{t:05d}.jpg", size, seed=t)
            for folder, objects in (
                ("Annotations", spec["objects"]),
                ("Annotations_unsupervised", spec.get("unsup_objects", spec["objects"])),
            ):
                if spec["split"].startswith("test") and t > 0:
                    continue
                label = _object_label(size, objects, t)
                write_palette_png(root / folder / resolution / name / f"{t:05d}.png", label)
                labels[(folder, name, t)] = label
    (root / "ImageSets" / "2017").mkdir(parents=True, exist_ok=True)
    for split, names in splits.items():
        (root / "ImageSets" / "2017" / f"{split}.txt").write_text("".join(f"{n}\n" for n in names))
    return {"root": root, "videos": videos, "labels": labels, "splits": splits}


def write_ref_davis(root: Path) -> dict[str, Any]:
    """ReferFormer's ``data/ref-davis``: ``DAVIS/`` + ``davis_text_annotations/Davis17_annot*.txt``.

    Uses the misspelt video name ``clasic-car`` in the text files (the real files do) and a
    Latin-1 character in annotator 2's file."""
    root = Path(root)
    davis = write_davis(
        root / "DAVIS",
        videos={
            "classic-car": {"split": "val", "frames": 3, "objects": {1: 0, 2: 0}, "unsup_objects": {1: 0, 2: 0, 3: 1}},
            "bear": {"split": "train", "frames": 2, "objects": {1: 0}},
        },
    )
    text = root / "davis_text_annotations"
    text.mkdir(parents=True, exist_ok=True)
    lines = {
        "Davis17_annot1.txt": (
            'clasic-car 1 "a silver car"\n',
            'clasic-car 3 "a man walking in"\n',
            'bear 1 "a bear"\n',
        ),
        "Davis17_annot1_full_video.txt": ('clasic-car 1 "the car driving away"\n', 'bear 1 "brown bear walking"\n'),
        "Davis17_annot2.txt": ('clasic-car 1 "voiture argentée café"\n', 'bear 1 "the bear"\n'),
        "Davis17_annot2_full_video.txt": ('clasic-car 2 "a woman"\n', 'bear 1 "bear on rocks"\n'),
    }
    for name, content in lines.items():
        encoding = "latin-1" if "annot2" in name else "utf-8"
        (text / name).write_bytes("".join(content).encode(encoding))
    return {"root": root, "davis": davis, "text_root": text}


def _ytvos_video(
    root: Path,
    split: str,
    name: str,
    n_frames: int,
    objects: dict[int, int],
    size: tuple[int, int],
    dense: bool,
    categories: dict[int, str],
    all_frames: bool,
) -> dict[str, Any]:
    names = [f"{5 * t:05d}" for t in range(n_frames)]
    for t, stem in enumerate(names):
        write_jpeg(root / split / "JPEGImages" / name / f"{stem}.jpg", size, seed=t)
    if all_frames:
        for i in range(5 * (n_frames - 1) + 1):
            write_jpeg(root / f"{split}_all_frames" / "JPEGImages" / name / f"{i:05d}.jpg", size, seed=i)
    labels = {}
    for t, stem in enumerate(names):
        label = _object_label(size, objects, t)
        if dense or any(start == t for start in objects.values()):
            if not dense:  # valid: each object's mask only where it first appears
                label = np.where(np.isin(label, [k for k, s in objects.items() if s == t]), label, 0).astype(np.uint8)
            write_palette_png(root / split / "Annotations" / name / f"{stem}.png", label)
            labels[stem] = label
    meta = {"objects": {str(k): {"category": categories[k], "frames": names[start:]} for k, start in objects.items()}}
    return {"meta": meta, "labels": labels, "frame_names": names}


def write_youtube_vos(
    root: Path, split: str = "valid", size: tuple[int, int] = (8, 12), all_frames: bool = True
) -> dict[str, Any]:
    """YouTube-VOS layout: ``<split>/JPEGImages`` (every 5th frame: 00000, 00005, ...),
    ``<split>/Annotations`` (train: every frame; valid: where each object first appears),
    ``<split>/meta.json``, ``<split>_all_frames/JPEGImages``; always also a train split so that
    seen / unseen categories are defined. The valid video ``b`` has an object appearing late."""
    root = Path(root)
    out: dict[str, Any] = {"root": root, "videos": {}}
    specs = {
        "train": {"t1": (3, {1: 0, 2: 0}, {1: "person", 2: "dog"}), "t2": (2, {1: 0}, {1: "cat"})},
        "valid": {"a": (3, {1: 0}, {1: "dog"}), "b": (4, {1: 0, 2: 2}, {1: "person", 2: "zebra"})},
    }
    for sp in ("train", split) if split != "train" else ("train",):
        metas = {}
        for name, (n, objects, cats) in specs["train" if sp == "train" else "valid"].items():
            v = _ytvos_video(
                root,
                sp,
                name,
                n,
                objects,
                size,
                dense=sp == "train",
                categories=cats,
                all_frames=all_frames and sp != "train",
            )
            metas[name] = v["meta"]
            out["videos"][(sp, name)] = v
        (root / sp / "meta.json").write_text(json.dumps({"videos": metas}))
    return out


def write_ref_youtube_vos(root: Path, size: tuple[int, int] = (8, 12)) -> dict[str, Any]:
    """Ref-YouTube-VOS: ``meta_expressions/{train,valid,test}/meta_expressions.json``,
    ``train/{JPEGImages,Annotations,meta.json}``, ``valid/JPEGImages``. The valid expressions file
    also lists the test video ``vt`` (as the competition release does)."""
    root = Path(root)
    out: dict[str, Any] = {"root": root, "labels": {}}
    train = {"v1": (3, {1: 0, 2: 1}, {1: "person", 2: "skateboard"}), "v2": (2, {1: 0}, {1: "dog"})}
    metas, exps = {}, {}
    for name, (n, objects, cats) in train.items():
        v = _ytvos_video(root, "train", name, n, objects, size, dense=True, categories=cats, all_frames=False)
        metas[name] = v["meta"]
        out["labels"][name] = v["labels"]
        exps[name] = {
            "expressions": {
                str(i): {"exp": f"the {cats[k]} number {i}", "obj_id": str(k)} for i, k in enumerate(sorted(objects))
            },
            "frames": v["frame_names"],
        }
    (root / "train" / "meta.json").write_text(json.dumps({"videos": metas}))
    valid_exps, test_exps = {}, {}
    for name, n in (("va", 3), ("vt", 2)):
        names = [f"{5 * t:05d}" for t in range(n)]
        for t, stem in enumerate(names):
            write_jpeg(root / "valid" / "JPEGImages" / name / f"{stem}.jpg", size, seed=t)
            if name == "vt":
                write_jpeg(root / "test" / "JPEGImages" / name / f"{stem}.jpg", size, seed=t)
        entry = {
            "expressions": {"0": {"exp": f"a thing in {name}"}, "1": {"exp": f"another thing in {name}"}},
            "frames": names,
        }
        valid_exps[name] = entry
        if name == "vt":
            test_exps[name] = entry
    for split, data in (("train", exps), ("valid", valid_exps), ("test", test_exps)):
        (root / "meta_expressions" / split).mkdir(parents=True, exist_ok=True)
        (root / "meta_expressions" / split / "meta_expressions.json").write_text(json.dumps({"videos": data}))
    out["expressions"] = {"train": exps, "valid": valid_exps, "test": test_exps}
    return out


def _folder_vos(
    root: Path,
    split: str,
    videos: dict[str, tuple[int, dict[int, int]]],
    size: tuple[int, int],
    dense: bool,
    digits: int,
    step: int,
    first: int,
) -> dict[str, Any]:
    labels = {}
    for name, (n, objects) in videos.items():
        names = [f"{first + step * t:0{digits}d}" for t in range(n)]
        for t, stem in enumerate(names):
            write_jpeg(root / split / "JPEGImages" / name / f"{stem}.jpg", size, seed=t)
            label = _object_label(size, objects, t)
            if dense or any(start == t for start in objects.values()):
                if not dense:
                    label = np.where(np.isin(label, [k for k, s in objects.items() if s == t]), label, 0).astype(
                        np.uint8
                    )
                write_palette_png(root / split / "Annotations" / name / f"{stem}.png", label)
                labels[(name, stem)] = label
    return labels


def write_mose(root: Path, split: str = "valid", size: tuple[int, int] = (8, 12)) -> dict[str, Any]:
    """MOSE: ``<split>/JPEGImages/<video>/00000.jpg`` and ``<split>/Annotations`` (valid: first
    frame only; train: every frame)."""
    videos = {"m1": (3, {1: 0, 2: 0}), "m2": (2, {1: 0})}
    labels = _folder_vos(Path(root), split, videos, size, dense=split == "train", digits=5, step=1, first=0)
    return {"root": Path(root), "videos": videos, "labels": labels}


def write_lvos(root: Path, split: str = "valid", size: tuple[int, int] = (8, 12)) -> dict[str, Any]:
    """LVOS v1: ``<split>/JPEGImages/<video>/00000001.jpg`` (every 5th frame: 1, 6, 11, ...),
    ``<split>/Annotations`` (valid: where each object first appears) and ``<split>_meta.json`` with
    each object's ``frame_range``."""
    root = Path(root)
    videos = {"l1": (4, {1: 0, 2: 2})}
    labels = _folder_vos(root, split, videos, size, dense=split == "train", digits=8, step=5, first=1)
    meta = {
        "videos": {
            name: {
                "objects": {
                    str(k): {
                        "frame_range": {
                            "start": f"{1 + 5 * s:08d}",
                            "end": f"{1 + 5 * (n - 1):08d}",
                            "frame_nums": str(n - s),
                        }
                    }
                    for k, s in objects.items()
                }
            }
            for name, (n, objects) in videos.items()
        }
    }
    (root / f"{split}_meta.json").write_text(json.dumps(meta))
    return {"root": root, "videos": videos, "labels": labels}

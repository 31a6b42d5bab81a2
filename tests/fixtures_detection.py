"""Writers of tiny detection / video-instance datasets in the layouts they are distributed in, with the
library's synthetic scenes and videos as content: ``write_objects365`` (Objects365 v2) and
``write_ovis`` (OVIS, YouTube-VIS format). COCO detection reuses ``fixtures_layouts.write_coco``.

Each returns a dict with what it wrote and what a reader must give back (boxes, labels, label maps).
Images are JPEGs (lossy: compare shapes, not pixels); masks are exact RLEs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from fixtures_layouts import compressed_rle, uncompressed_rle
from PIL import Image

from unifusion_sam.data.synthetic import SHAPE_CLASSES, SyntheticConfig, sample_scene, sample_video
from unifusion_sam.data.synthetic.shapes import shape_box, shape_mask

# listed unsorted on purpose: labels are indices of the *sorted* ids (3 -> 0, 5 -> 1, 7 -> 2, 12 -> 3)
O365_CATEGORIES = [{"id": 7, "name": "Car"}, {"id": 3, "name": "Chair"}, {"id": 12, "name": "Street Lights"},
                   {"id": 5, "name": "Hat"}]
O365_LAYOUTS = ("file_name", "patch", "flat", "root")


def _save_jpeg(path: Path, image: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image, mode="RGB").save(path, format="JPEG", quality=90)
    return path


def mask_xywh(mask: np.ndarray) -> list[float]:
    """COCO ``[x, y, w, h]`` of the pixels of a mask (the tight box, in pixel-edge coordinates)."""
    ys, xs = np.nonzero(mask)
    return [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1)]


def o365_image_path(root: Path, split: str, file_name: str, layout: str) -> Path:
    """Where ``layout`` puts an image: the json path below ``images/<split>`` (``file_name``), the
    ``patchN`` archives unpacked in ``<split>/`` (``patch``, mmdetection), every image in ``images/``
    (``flat``, UniRef's download script) or the json path below the root (``root``)."""
    parts = file_name.split("/")
    return {
        "file_name": root / "images" / split / file_name,
        "patch": root / split / parts[-2] / parts[-1],
        "flat": root / "images" / parts[-1],
        "root": root / file_name,
    }[layout]


def write_objects365(root: Path, split: str = "train", layout: str = "file_name", json_dir: str = "",
                     size: tuple[int, int] = (48, 64)) -> dict[str, Any]:
    """``<root>/[<json_dir>/]zhiyuan_objv2_<split>.json`` + images placed by ``layout`` (see
    :func:`o365_image_path`). Three synthetic scenes, one box per shape (category by shape class), plus:
    image 10 has a crowd box, a degenerate box (w = 0.5), a box sticking out of the image (clipped)
    and a fractional one; image 30 has only a crowd and a degenerate box (no record)."""
    root = Path(root)
    h, w = size
    config = SyntheticConfig(seed=3, image_size=size, max_shapes=3)
    images, anns, expected = [], [], {}
    cat_of = {kind: O365_CATEGORIES[i % 4]["id"] for i, kind in enumerate(SHAPE_CLASSES)}
    label_of = {c: i for i, c in enumerate(sorted(c["id"] for c in O365_CATEGORIES))}
    ann_id = 1000
    for n, image_id in enumerate((10, 20, 30)):
        version = 1 if n % 2 == 0 else 2
        file_name = f"images/v{version}/patch{n + 4}/objects365_v{version}_{image_id:08d}.jpg"
        scene = sample_scene(np.random.default_rng(n), config)
        _save_jpeg(o365_image_path(root, split, file_name, layout), scene.image)
        images.append({"id": image_id, "file_name": file_name, "height": h, "width": w})
        kept = []  # (ann id, x0 y0 x1 y1, label) the reader must give back
        objects = [] if image_id == 30 else list(zip(scene.object_ids, scene.shapes))
        specs = [(mask_xywh(scene.mask(k)), 0, cat_of[shape.kind]) for k, shape in objects]
        specs += [([2, 2, 20, 20], 1, 3), ([5, 5, 0.5, 9], 0, 5)] if image_id != 20 else []  # crowd, degenerate
        if image_id == 10:  # sticking out of the image (clipped), fractional
            specs += [([-3, 40, 30, 20], 0, 12), ([10.5, 4.25, 20.0, 10.5], 0, 7)]
        for bbox, crowd, cat in specs:
            ann_id += 1
            anns.append({"id": ann_id, "image_id": image_id, "category_id": cat, "bbox": bbox,
                         "area": bbox[2] * bbox[3], "iscrowd": crowd, "isfake": 0, "isreflected": 0})
            x0, y0, x1, y1 = max(bbox[0], 0), max(bbox[1], 0), min(bbox[0] + bbox[2], w), min(bbox[1] + bbox[3], h)
            if not crowd and x1 - x0 > 1 and y1 - y0 > 1:
                kept.append((ann_id, [x0, y0, x1, y1], label_of[cat]))
        if kept:
            expected[image_id] = {"ann_ids": [a for a, _, _ in kept], "boxes": np.array([b for _, b, _ in kept], np.float32),
                                  "labels": np.array([lab for _, _, lab in kept], np.int64),
                                  "path": o365_image_path(root, split, file_name, layout)}
    anns = anns[::2] + anns[1::2]  # annotations of one image are not contiguous in the real files
    ann_file = root / json_dir / f"zhiyuan_objv2_{split}.json"
    ann_file.parent.mkdir(parents=True, exist_ok=True)
    ann_file.write_text(json.dumps({"images": images, "annotations": anns, "categories": O365_CATEGORIES}))
    return {"root": root, "annotation_file": ann_file, "expected": expected, "size": size}


def _amodal_mask(spec, k: int, t: int, h: int, w: int) -> np.ndarray | None:
    shape = spec.shape_at(k, t)
    if shape is None:
        return None
    mask = np.zeros((h, w), bool)
    y0, y1, x0, x1 = box = shape_box(shape, h, w)
    mask[y0:y1, x0:x1] = shape_mask(shape, box)
    return mask


def write_ovis(root: Path, split: str = "train", size: tuple[int, int] = (48, 64), num_frames: int = 6,
               json_dir: str = "") -> dict[str, Any]:
    """``<root>/[<json_dir>/]annotations_<split>.json`` + ``<root>/<split>/<video>/img_0000001.jpg``.

    Two synthetic videos (each with one object entering late). Each object's annotation holds its
    full (amodal) shape per frame -- masks of occluding objects overlap, as in OVIS -- so the reader's
    label map (later annotation ids painted last) equals ``VideoSpec.labels(t)``. Object ``k`` has
    annotation id ``100 * v + 2 * k`` (listed in reverse order); also per video a crowd annotation and
    one that is ``null`` / empty on every frame (no object), with ids between the real ones. Object 1's
    RLEs are compressed strings, the others' uncompressed count lists. ``valid`` has no annotations."""
    root = Path(root)
    h, w = size
    config = SyntheticConfig(seed=1, image_size=size, num_frames=num_frames, late_entry_prob=1.0,
                             max_video_objects=3)
    videos, anns, out = [], [], {}
    for v, folder in ((1, "0b2f5c1e"), (2, "9a7d33f0")):
        spec = sample_video(config, "train", v)
        names = [f"{folder}/img_{t + 1:07d}.jpg" for t in range(num_frames)]
        for t, name in enumerate(names):
            _save_jpeg(root / split / name, spec.render(t)[0])
        videos.append({"id": v, "file_names": names, "height": h, "width": w, "length": num_frames})
        video_anns = []
        for k in spec.object_ids:
            masks = [_amodal_mask(spec, k, t, h, w) for t in range(num_frames)]
            encode = compressed_rle if k == 1 else uncompressed_rle
            video_anns.append({
                "id": 100 * v + 2 * k, "video_id": v, "category_id": 1 + k % 3, "iscrowd": 0,
                "segmentations": [None if m is None else encode(m) for m in masks],
                "areas": [None if m is None else int(m.sum()) for m in masks],
                "bboxes": [None if m is None else mask_xywh(m) for m in masks],
                "height": h, "width": w, "length": num_frames,
            })
        empty = uncompressed_rle(np.zeros((h, w), bool))
        for ann_id, crowd, segms in ((100 * v + 3, 0, [None] * (num_frames - 1) + [empty]),
                                     (100 * v + 5, 1, [uncompressed_rle(spec.labels(0) > 0)] * num_frames)):
            video_anns.append({"id": ann_id, "video_id": v, "category_id": 1, "iscrowd": crowd,
                               "segmentations": segms, "areas": [None] * num_frames,
                               "bboxes": [None] * num_frames, "height": h, "width": w, "length": num_frames})
        anns += video_anns[::-1]
        amodal_total = [sum(int(m.sum()) for m in (_amodal_mask(spec, k, t, h, w) for k in spec.object_ids)
                            if m is not None) for t in range(num_frames)]
        labels = [spec.labels(t) for t in range(num_frames)]
        out[folder] = {"spec": spec, "labels": labels, "frames": [root / split / n for n in names],
                       "overlap": [total > int((lab > 0).sum()) for total, lab in zip(amodal_total, labels)]}
    data = {"info": {}, "licenses": [], "videos": videos,
            "categories": [{"id": 1, "name": "Person"}, {"id": 2, "name": "Bird"}, {"id": 3, "name": "Cat"}]}
    if split == "train":
        data["annotations"] = anns
    ann_file = root / json_dir / f"annotations_{split}.json"
    ann_file.parent.mkdir(parents=True, exist_ok=True)
    ann_file.write_text(json.dumps(data))
    return {"root": root, "annotation_file": ann_file, "videos": out}

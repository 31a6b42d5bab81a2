"""``unifusion-sam track``: follow objects through a video, a camera or a stream, frame by frame, writing as it goes.

What to follow, any mix: ``--mask`` (the first frame's objects: a palette PNG whose indices are the ids, or a
0/255 mask for one object), ``--text`` (a sentence, repeatable: one object each), ``--ref-image`` /
``--ref-mask`` pairs (one object shown by pictures taken elsewhere, found and then followed) and ``--add
FRAME:ID:KIND=VALUE`` for objects that join later (``mask=path.png``, ``text=a sentence``,
``examples=img.jpg+mask.png[,img2.jpg+mask2.png]``). Ids not given by a mask are the next free ones.

Outputs under ``--out-dir``, each written when its frame is done: ``masks/<frame>.png`` (palette PNGs, the
DAVIS layout), ``track.mp4`` (a fragmented MP4 of the overlays: playable however the run ends),
``overlays/<frame>.png`` unless ``--no-overlays``, and ``track.gif`` only with ``--gif`` (its thumbnails are
kept in memory until the end, so a source longer than ``--gif-max-frames`` is refused up front, and a live
stream always). Memory stays flat: one frame, the session's fixed-size state and the predictor's small cache.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from .. import visualize
from ..data.frames import read_label_file
from ..data.io import DataError, load_rgb, save_palette_png
from ..data.video import Mp4Writer, open_video_source
from ..loading import model_from_args
from .errors import CLIError

GIF_MAX_SIDE = 320


def add_track_arguments(trk: argparse.ArgumentParser) -> None:
    trk.add_argument("video", help="a folder of frames (sorted by name), a video file, a camera (/dev/video0, "
                     "camera:0) or a stream URL ffmpeg can open (rtsp://, http://)")
    trk.add_argument("--mask", type=Path, help="the first frame's objects: palette PNG (ids = objects) or 0/255")
    trk.add_argument("--text", action="append", default=[], help="a sentence describing an object (repeatable)")
    trk.add_argument("--ref-image", type=Path, action="append", default=[],
                     help="a picture of an object taken elsewhere (repeat for several of the same object)")
    trk.add_argument("--ref-mask", type=Path, action="append", default=[], help="its mask (one per --ref-image)")
    trk.add_argument("--add", action="append", default=[], metavar="FRAME:ID:KIND=VALUE",
                     help="an object joining on FRAME: mask=PATH, text=SENTENCE or examples=IMG+MASK[,IMG+MASK]")
    trk.add_argument("--out-dir", type=Path, default=None, help="where to write the outputs (default: ./<video>_track)")
    trk.add_argument("--sigma", type=float, default=None, help="object score threshold (default 0.3 text / 0.4 masks)")
    trk.add_argument("--max-short-side", type=int, default=480, help="downscale larger frames for inference (0 = never)")
    trk.add_argument("--max-frames", type=int, default=None, help="stop after this many frames (e.g. a live stream)")
    trk.add_argument("--fps", type=float, default=None, help="frame rate of the MP4 / GIF (default: the source's, else 8)")
    trk.add_argument("--no-overlays", action="store_true", help="do not write per-frame overlay PNGs")
    trk.add_argument("--no-mp4", action="store_true", help="do not write track.mp4")
    trk.add_argument("--gif", action="store_true", help="also write track.gif (kept in memory: short videos only)")
    trk.add_argument("--gif-max-frames", type=int, default=600, help="the longest video --gif accepts (default 600)")


def _image(path: Path) -> np.ndarray:
    try:
        return load_rgb(path)
    except DataError as exc:
        raise CLIError(str(exc)) from exc


def _examples(pairs: list[tuple[Path, Path]], what: str) -> list[tuple[np.ndarray, np.ndarray]]:
    out = []
    for image_path, mask_path in pairs:
        image, mask = _image(image_path), read_label_file(mask_path) != 0
        if mask.shape != image.shape[:2]:
            raise CLIError(f"{what}: mask {mask_path} is {mask.shape[1]}x{mask.shape[0]} but its image {image_path} is "
                           f"{image.shape[1]}x{image.shape[0]}")
        out.append((image, mask))
    return out


def parse_add(spec: str) -> tuple[int, int, str, object]:
    """``FRAME:ID:KIND=VALUE`` -> ``(frame, id, kind, reference)``; a malformed one is a ``CLIError`` naming it."""
    try:
        frame, obj, rest = spec.split(":", 2)
        kind, value = rest.split("=", 1)
        frame, obj = int(frame), int(obj)
    except ValueError:
        raise CLIError(f"--add {spec!r}: expected FRAME:ID:KIND=VALUE, e.g. 120:3:text=the red car") from None
    if frame < 0 or not 1 <= obj <= 255:
        raise CLIError(f"--add {spec!r}: the frame must be >= 0 and the id in 1..255")
    if kind == "mask":
        reference: object = read_label_file(value) != 0
    elif kind == "text":
        if not value.strip():
            raise CLIError(f"--add {spec!r}: the sentence is empty")
        reference = value
    elif kind == "examples":
        pairs = [tuple(Path(p) for p in pair.split("+")) for pair in value.split(",")]
        if any(len(p) != 2 for p in pairs):
            raise CLIError(f"--add {spec!r}: examples are IMAGE+MASK pairs separated by commas")
        reference = _examples(pairs, f"--add {spec!r}")
    else:
        raise CLIError(f"--add {spec!r}: KIND must be mask, text or examples, got {kind!r}")
    return frame, obj, kind, reference


def _objects(args) -> tuple[dict, dict, dict, dict, np.ndarray | None]:
    """(masks, texts, examples, new_objects) with their ids, and the first frame's label map."""
    first, masks = None, {}
    if args.mask is not None:
        first = read_label_file(args.mask)
        masks = {int(i): first == i for i in np.unique(first) if i != 0}
        if not masks:
            raise CLIError(f"--mask {args.mask} is empty: it marks no object")
    if len(args.ref_image) != len(args.ref_mask):
        raise CLIError(f"got {len(args.ref_image)} --ref-image but {len(args.ref_mask)} --ref-mask; give one mask per image")
    later = [parse_add(spec) for spec in args.add]
    taken = set(masks) | {obj for _, obj, _, _ in later}
    free = (i for i in range(1, 256) if i not in taken)
    texts = {next(free): t for t in args.text}
    examples = {next(free): _examples(list(zip(args.ref_image, args.ref_mask)), "--ref-image")} if args.ref_image else {}
    new_objects: dict[int, dict] = {}
    for frame, obj, _, reference in later:
        new_objects.setdefault(frame, {})[obj] = reference
    if not (masks or texts or examples or new_objects):
        raise CLIError("nothing to track: give --mask, --text, --ref-image/--ref-mask or --add")
    return masks, texts, examples, new_objects, first


def track(args: argparse.Namespace) -> list[Path]:
    masks, texts, examples, new_objects, first = _objects(args)
    source = open_video_source(args.video)  # checked now: a bad source fails before the model loads
    if args.gif and (source.num_frames is None and args.max_frames is None):
        raise CLIError(f"--gif keeps every frame in memory and {args.video} is a {source.kind} of unknown length: "
                       "use track.mp4, or give --max-frames")
    length = min(n for n in (source.num_frames, args.max_frames) if n is not None) if args.gif else None
    if args.gif and length > args.gif_max_frames:
        raise CLIError(f"--gif keeps every frame in memory and {args.video} has {length} frames, more than "
                       f"--gif-max-frames {args.gif_max_frames}: use track.mp4 (written as it goes)")
    name = Path(str(args.video).rstrip("/")).name or "video"
    out_dir = args.out_dir or Path(f"{Path(name).stem or name}_track")
    model = model_from_args(args)
    caption = "; ".join(texts.values()) or None
    fps = args.fps or source.fps or 8.0
    current: dict = {}

    def feed():
        for i, (frame_name, rgb) in enumerate(source.frames):
            if args.max_frames is not None and i >= args.max_frames:
                return
            if first is not None and i == 0 and first.shape != rgb.shape[:2]:
                raise CLIError(f"--mask {args.mask} is {first.shape[1]}x{first.shape[0]} but the first frame "
                               f"{frame_name} is {rgb.shape[1]}x{rgb.shape[0]}")
            current["name"], current["rgb"] = frame_name, rgb
            yield rgb

    results = model.track(feed(), text=texts or None, masks=masks or None, examples=examples or None,
                          new_objects=new_objects, sigma=args.sigma, max_short_side=args.max_short_side or None)
    mp4 = None if args.no_mp4 else Mp4Writer(out_dir / "track.mp4", fps)
    thumbs, done = [], 0
    try:
        for result in tqdm(results, desc="frames", unit="frame", total=source.num_frames):
            frame_name, rgb = current["name"], current["rgb"]
            save_palette_png(out_dir / "masks" / f"{frame_name}.png", result.label_map)
            picture = visualize.captioned_overlay(rgb, np.asarray(result.label_map, np.uint8), caption)
            if not args.no_overlays:
                visualize.save_png(Image.fromarray(picture), out_dir / "overlays" / f"{frame_name}.png")
            if mp4 is not None:
                mp4.write(picture)
            if args.gif:
                thumbs.append(visualize.thumbnail(picture, GIF_MAX_SIDE))
            done += 1
    except KeyboardInterrupt:
        print(f"\ninterrupted after {done} frames: masks/, overlays/ and track.mp4 hold every one of them",
              file=sys.stderr)
        raise
    finally:
        if mp4 is not None:
            mp4.close()
    if not done:
        raise CLIError(f"no frames in {args.video}")
    written = [out_dir / "masks"] + ([] if args.no_overlays else [out_dir / "overlays"])
    written += [] if mp4 is None else [mp4.path]
    if thumbs:
        written.append(visualize.save_gif(out_dir / "track.gif", thumbs, fps=fps))
    print(f"{done} frames tracked")
    return written

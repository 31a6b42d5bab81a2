"""``unifusion-sam``: segment an image or track objects through a video from a sentence, examples, masks or points.

    unifusion-sam segment photo.jpg --text "the dog on the left"             # the model `make demo` trained
    unifusion-sam segment photo.jpg --text "the dog on the left" --checkpoint me/unifusion-sam-vit-b \
        --sam vit_b --sam-checkpoint sam_vit_b_01ec64.pth
    unifusion-sam segment query.jpg --ref-image a.jpg --ref-mask a.png --ref-image b.jpg --ref-mask b.png ...
    unifusion-sam segment photo.jpg --point 120,80 ...
    unifusion-sam track frames/ --mask first_frame.png --out-dir out/        # a folder of frames
    unifusion-sam track clip.mp4 --text "the man in red"                      # a video file (unifusion-sam[video])
    unifusion-sam track rtsp://camera/stream --ref-image dog.jpg --ref-mask dog.png --max-frames 1000
    unifusion-sam track clip.mp4 --mask first.png --add "120:3:text=the red car" --add "200:4:mask=car4.png"
    unifusion-sam segment photo.jpg --text "the dog" --checkpoint out/uniref-r50   # a full UniRef++ model
    unifusion-sam convert-uniref UniRef++_R50.pth out/uniref-r50 [--text-encoder bert-base-uncased] [--push-to-hub ID]
    unifusion-sam demo [--checkpoint DIR_OR_HUB_ID] [--host 127.0.0.1] [--port 7860]  # web demo, unifusion-sam[demo]
    unifusion-sam export-onnx outputs/default exported/ [--int8]              # ONNX graphs, unifusion-sam[onnx]
    unifusion-sam segment photo.jpg --text "the dog" --onnx exported/         # the same on onnxruntime

``segment`` writes ``<stem>_mask.png`` (0/255) and ``<stem>_overlay.png``. ``track`` (:mod:`.track`) reads its
source frame by frame and writes as it goes: one palette PNG per frame (``masks/<frame>.png``, ids = objects),
``track.mp4`` (the overlays), per-frame overlay PNGs unless ``--no-overlays``, and ``track.gif`` only with
``--gif``; memory stays flat however long the video, and Ctrl-C leaves everything written so far readable.
Every command names its model the same way (:mod:`unifusion_sam.loading`): ``--checkpoint`` is a checkpoint
folder of any family, a training run's output folder or a Hub id, and defaults to ``outputs/default`` (``make
demo``'s run) when that exists. ``--checkpoint none`` runs an untrained adapter (``--adapter uniref-small``: an
untrained full model); ``--sam tiny`` is a small random SAM (for trying things out). A full UniRef++
checkpoint needs no ``--sam``. ``convert-uniref`` reads the authors' released checkpoint (tensors only,
nothing else is unpickled), maps every key strictly and writes this library's ``save_pretrained`` format.
``demo`` serves a web page (Gradio) with the same tasks; without ``--checkpoint`` it loads ``make demo``'s
``outputs/default`` (a run folder: ``adapter/`` + ``sam_<size>.safetensors``, or ``model/``), else the untrained
tiny SAM, and says so on the page. ``export-onnx`` writes a UniFusion-SAM model as ONNX graphs
(:mod:`unifusion_sam.sam.onnx`); ``--onnx DIR`` runs ``segment``, ``track`` or ``demo`` on such a folder with
onnxruntime.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from .. import visualize
from ..data.frames import read_label_file
from ..data.io import DataError, load_rgb
from ..loading import add_model_arguments, model_from_args
from .errors import CLIError
from .track import add_track_arguments, track

DEMO_HINT = 'the web demo needs gradio: pip install "unifusion-sam[demo]"'


# ----------------------------------------------------------------------------------------- parsing
def _point(text: str) -> tuple[float, float]:
    try:
        x, y = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"a point is 'x,y' in pixels, got {text!r}") from None
    return x, y


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="unifusion-sam", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    sub = parser.add_subparsers(dest="command", required=True, metavar="{segment,track,convert-uniref,demo,export-onnx}")
    default_device = "cuda" if _cuda() else "cpu"

    seg = sub.add_parser("segment", help="segment one image", description="Segment one image from a sentence, "
                         "K reference (image, mask) pairs, or points.")
    seg.add_argument("image", type=Path, help="the image to segment")
    seg.add_argument("--text", help="a sentence describing the object")
    seg.add_argument("--ref-image", type=Path, action="append", default=[], help="a reference image (repeat for K shots)")
    seg.add_argument("--ref-mask", type=Path, action="append", default=[],
                     help="the reference image's object mask (0/255 or palette PNG; one per --ref-image)")
    seg.add_argument("--point", type=_point, action="append", default=[], help="a foreground point x,y (repeatable)")
    seg.add_argument("--neg-point", type=_point, action="append", default=[], help="a background point x,y (repeatable)")
    seg.add_argument("--out-dir", type=Path, default=Path("."), help="where to write the outputs (default: .)")
    add_model_arguments(seg, default_device=default_device)

    trk = sub.add_parser("track", help="track objects through a video", description="Track objects through a "
                         "folder of frames, a video file, a camera or a stream, frame by frame, from first-frame "
                         "masks, sentences or examples; objects may join later (--add). Masks are written as "
                         "palette PNGs and an overlay MP4 as it goes.")
    add_track_arguments(trk)
    add_model_arguments(trk, default_device=default_device)

    conv = sub.add_parser("convert-uniref", help="convert the authors' UniRef++ checkpoint",
                          description="Convert an authors' UniRef++ checkpoint (.pth, detectron2 layout) into this "
                          "library's save_pretrained format (config.json + model.safetensors + model card).")
    conv.add_argument("checkpoint", type=Path, help="the authors' checkpoint, e.g. UniRef++_R50.pth")
    conv.add_argument("out_dir", type=Path, nargs="?", default=None, help="where to write the converted model")
    conv.add_argument("--text-encoder", default="bert-base-uncased",
                      help="id or folder of the text encoder's tokenizer and configuration (default bert-base-uncased, "
                           "as in the released checkpoints)")
    conv.add_argument("--push-to-hub", default=None, metavar="ID", help="also upload the converted model to this Hub repo")

    web = sub.add_parser("demo", help="serve the web demo (Gradio)", description="Serve a web page that segments "
                         "images from a sentence, examples or points and tracks objects through a video. Without "
                         "--checkpoint: outputs/default (make demo's run folder) when it exists, else the untrained "
                         "tiny SAM; --sam / --adapter alone mean --checkpoint none.")
    web.add_argument("--host", default="127.0.0.1", help="address to serve on (default 127.0.0.1: this machine only)")
    web.add_argument("--port", type=int, default=7860, help="port to serve on (default 7860)")
    web.add_argument("--demo-config", type=Path, default=None, metavar="JSON",
                     help="the demo's limits as a DemoConfig JSON file (queue, concurrency, upload size, pixels, frames)")
    add_model_arguments(web, default_device=default_device)

    exp = sub.add_parser("export-onnx", help="export a UniFusion-SAM model to ONNX graphs",
                         description="Export a UniFusion-SAM model (a checkpoint or run folder, or a Hub id) as ONNX "
                         "graphs (image, text, mask-reference encoders, fusion, prompt encoder, decoder) with "
                         "export_config.json, for onnxruntime (--onnx DIR, unifusion_sam.from_onnx).")
    add_model_arguments(exp, default_device="cpu", positional=True)
    exp.add_argument("out_dir", type=Path, help="the folder to write (new, empty, or an earlier export with --overwrite)")
    exp.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    precision = exp.add_mutually_exclusive_group()
    precision.add_argument("--fp16", action="store_true", help="float16 inside the graphs (for GPU providers)")
    precision.add_argument("--int8", action="store_true", help="int8 dynamic quantisation of the linear layers (CPU)")
    exp.add_argument("--overwrite", action="store_true", help="replace an earlier export in OUT_DIR")
    return parser


def _cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:  # noqa: BLE001 - a broken CUDA setup just means CPU
        return False


# ----------------------------------------------------------------------------------------- inputs
def _image(path: Path) -> np.ndarray:
    try:
        return load_rgb(path)
    except DataError as exc:
        raise CLIError(str(exc)) from exc


# ----------------------------------------------------------------------------------------- commands
def segment(args: argparse.Namespace) -> list[Path]:
    if len(args.ref_image) != len(args.ref_mask):
        raise CLIError(f"got {len(args.ref_image)} --ref-image but {len(args.ref_mask)} --ref-mask; give one mask "
                       "per reference image")
    if not (args.text or args.ref_image or args.point or args.neg_point):
        raise CLIError("nothing to segment: give --text, --ref-image/--ref-mask pairs, or --point")
    image = _image(args.image)
    kwargs: dict = {}
    if args.text:
        kwargs["text"] = args.text
    if args.ref_image:
        refs = [_image(p) for p in args.ref_image]
        masks = [read_label_file(p) != 0 for p in args.ref_mask]
        for p, r, m in zip(args.ref_mask, refs, masks):
            if m.shape != r.shape[:2]:
                raise CLIError(f"--ref-mask {p} is {m.shape[1]}x{m.shape[0]} but its image is {r.shape[1]}x{r.shape[0]}")
        kwargs.update(ref_images=refs, ref_masks=masks)
    points = list(args.point) + list(args.neg_point)
    if points:
        kwargs.update(point_coords=np.asarray(points, dtype=np.float64),
                      point_labels=np.asarray([1] * len(args.point) + [0] * len(args.neg_point)))
    model = model_from_args(args)
    prediction = model.predict(image, **kwargs)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    stem = args.image.stem
    mask_path = args.out_dir / f"{stem}_mask.png"
    visualize.save_png(Image.fromarray(prediction.mask.astype(np.uint8) * 255, mode="L"), mask_path)
    overlay_path = args.out_dir / f"{stem}_overlay.png"
    picture = visualize.captioned_overlay(image, np.asarray(prediction.mask).astype(np.uint8), args.text)
    if points:
        picture = visualize.draw_points(picture, np.asarray(points), kwargs["point_labels"])
    visualize.save_png(Image.fromarray(picture), overlay_path)
    print(f"score {prediction.score:.3f}, {int(prediction.mask.sum())} pixels")
    return [mask_path, overlay_path]


def convert(args: argparse.Namespace) -> list[Path]:
    from ..uniref.convert import convert_authors_checkpoint

    if args.out_dir is None and not args.push_to_hub:
        raise CLIError("give OUT_DIR, --push-to-hub ID, or both")
    model = convert_authors_checkpoint(args.checkpoint, args.out_dir, text_encoder=args.text_encoder,
                                       push_to_hub=args.push_to_hub)
    c = model.config
    print(f"converted {args.checkpoint}: UniRef++ {c.backbone}, {c.enc_layers}+{c.dec_layers} layers, {c.num_queries} "
          f"queries, text encoder {c.text.model_name_or_path if c.text else 'none'}")
    if args.push_to_hub:
        print(f"uploaded to {args.push_to_hub}")
    return [args.out_dir] if args.out_dir is not None else []


def demo(args: argparse.Namespace) -> list[Path]:
    import importlib.util

    if importlib.util.find_spec("gradio") is None:
        raise CLIError(DEMO_HINT)
    from ..demo.app import launch
    from ..demo.config import DemoConfig
    from ..demo.loading import load_demo_model

    config = DemoConfig.load(args.demo_config) if getattr(args, "demo_config", None) else DemoConfig()
    served = load_demo_model(args, config)
    print(f"model: {served.description}" + (f"\nnote: {served.notice}" if served.notice else ""))
    launch(served, host=args.host, port=args.port, config=config)
    return []


def export(args: argparse.Namespace) -> list[Path]:
    import importlib.util

    if importlib.util.find_spec("onnx") is None:
        raise CLIError('ONNX export needs the onnx extra: pip install "unifusion-sam[onnx]"')
    from ..sam.onnx.export import export_onnx

    model = model_from_args(args)
    folder = export_onnx(model, args.out_dir, opset=args.opset, fp16=args.fp16, int8=args.int8, overwrite=args.overwrite)
    import json

    checks = json.loads((folder / "export_config.json").read_text())["export_check_max_abs_diff"]
    print("largest difference from PyTorch per graph (float32, before any --fp16/--int8): "
          + ", ".join(f"{k} {v:.1e}" for k, v in checks.items()))
    return [folder]


# ----------------------------------------------------------------------------------------- entry point
def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``unifusion-sam`` and ``python -m unifusion_sam``; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        written = {"segment": segment, "track": track, "convert-uniref": convert, "demo": demo,
                   "export-onnx": export}[args.command](args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (CLIError, DataError, FileNotFoundError, FileExistsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (ValueError, TypeError) as exc:  # bad option values the model rejects (sizes, a missing --sam, ...)
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for path in written:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

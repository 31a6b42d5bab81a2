"""onnxruntime against PyTorch eager on this CPU: time per ``predict(text)`` and per tracking step, ratios in
one run, and the held-out metrics of the exported model beside PyTorch's (float32 and ``--int8``).

For each model it exports float32 (and int8) graphs to a temp folder, then times, with the same thread
count for both runtimes (``--threads``, default torch's):

- ``predict(text)``: one call on a new image (image encoder, text encoder, fusion, decoder);
- a tracking step with 1 and with 4 objects: the mean time per frame of ``track`` over a synthetic video
  after the first frame (image encoder, the previous frame's mask references, fusion, decoder).

Each timing is the median of ``--rounds`` rounds in which the runtimes take turns.

Models: the default run's (``--run``, default ``outputs/default`` when it exists, else the untrained
``sam-lite0`` adapter) and a ViT-B SAM at 512 with random weights (``--vit-b``, ``sam-vit-b`` adapter).
Goal: onnxruntime at most 0.8x PyTorch's time per tracking step. With ``--metrics`` the run's held-out
metrics are computed through the evaluation runner (:func:`~unifusion_sam.evaluation.synthetic.evaluate_synthetic`)
for PyTorch, the float32 export (goal: equal to 0.001) and the int8 export (goal: within 0.01).

    python benchmarks/onnx_speed.py --vit-b --metrics --json onnx_speed.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from unifusion_sam.data.synthetic import SyntheticConfig, sample_video
from unifusion_sam.evaluation.synthetic import evaluate_synthetic
from unifusion_sam.loading import find_checkpoint, load_model
from unifusion_sam.sam import build_sam, wrap_sam
from unifusion_sam.sam.onnx import export_onnx, from_onnx
from unifusion_sam.training.config import RunConfig


def video(size: int, frames: int, objects: int, seed: int = 0) -> tuple[list[np.ndarray], dict[int, np.ndarray]]:
    """A synthetic video of ``frames`` frames at ``size`` x ``size`` and first-frame masks of ``objects`` objects."""
    config = SyntheticConfig(seed=seed, image_size=(size, size), num_frames=frames, late_entry_prob=0.0,
                             min_video_objects=objects, max_video_objects=objects)
    spec = sample_video(config, "heldout", 0)
    first = spec.labels(0)
    ids = [int(i) for i in np.unique(first) if i][:objects]
    return [spec.render(t)[0] for t in range(frames)], {k + 1: first == i for k, i in enumerate(ids)}


def time_predict(model, images: list[np.ndarray], sentence: str) -> float:
    """Median seconds of one ``predict(image, text=...)`` on a new image (after a warm-up call; the predictor
    caches encoded frames by content, so each image is encoded)."""
    model.predict(images[0], text=sentence)
    times = []
    for image in images[1:]:
        tic = time.perf_counter()
        model.predict(image, text=sentence)
        times.append(time.perf_counter() - tic)
    return statistics.median(times)


def shifted(frames: list[np.ndarray], masks: dict, shift: int) -> tuple[list[np.ndarray], dict]:
    """The video rolled by ``shift`` pixels: other content for the frame cache, the same work."""
    return ([np.ascontiguousarray(np.roll(f, shift, axis=1)) for f in frames],
            {k: np.roll(m, shift, axis=1) for k, m in masks.items()})


def time_track(model, frames: list[np.ndarray], masks: dict) -> float:
    """Mean seconds per frame of ``track`` after the first frame (a warm-up pass on other frames first: encoded
    frames are cached by content, and these must be encoded)."""
    list(model.track([np.ascontiguousarray(f[::-1]) for f in frames[:3]], masks={k: m[::-1] for k, m in masks.items()}))
    stamps = []
    for _ in model.track(frames, masks=masks):
        stamps.append(time.perf_counter())
    return (stamps[-1] - stamps[0]) / (len(stamps) - 1)


def timings(runtimes: dict, images: list[np.ndarray], clips: dict, rounds: int) -> dict:
    """Per runtime, the median over ``rounds`` rounds of each timing. The runtimes take turns within a round
    (so a slow spell of a shared machine falls on all of them), and each round tracks the clips shifted by
    another offset (new frames to encode)."""
    samples: dict = {label: {} for label in runtimes}
    for r in range(rounds):
        for label, runtime in runtimes.items():
            with torch.no_grad():
                got = {"predict_text_s": time_predict(runtime, [np.roll(i, 7 * r, axis=1) for i in images],
                                                      "the small red circle"),
                       **{f"track_{k}_objects_s": time_track(runtime, *shifted(*clips[k], 7 * r)) for k in clips}}
            for key, value in got.items():
                samples[label].setdefault(key, []).append(value)
    return {label: {k: statistics.median(v) for k, v in got.items()} for label, got in samples.items()}


def heldout(run: Path | None) -> tuple[SyntheticConfig, int, int]:
    """The run's held-out split (``run_config.json``, else the recipe defaults): config, images, videos."""
    defaults = {f.name: f.default for f in dataclasses.fields(RunConfig)}
    data = {}
    if run is not None and (run / "run_config.json").is_file():
        data = yaml.safe_load((run / "run_config.json").read_text()) or {}
    get = {k: data.get(k, defaults[k]) for k in ("eval_seed", "synthetic_image_size", "eval_samples", "eval_videos")}
    size = int(get["synthetic_image_size"])
    return SyntheticConfig(seed=int(get["eval_seed"]), image_size=(size, size)), int(get["eval_samples"]), int(get["eval_videos"])


def measure(name: str, model, work: Path, args, int8: bool, run: Path | None) -> dict:
    print(f"\n== {name}", flush=True)
    exported = {"float32": export_onnx(model, work / name)}
    if int8:
        exported["int8"] = export_onnx(model, work / f"{name}-int8", int8=True)
    runtimes = {"pytorch": model, **{f"onnx {k}": from_onnx(p, device="cpu", threads=args.threads)
                                     for k, p in exported.items()}}
    size = args.size
    images = [video(size, 2, 1, seed=s)[0][0] for s in range(args.repeats + 1)]
    clips = {k: video(size, args.frames, k) for k in (1, 4)}
    row: dict = {"model": name, "image_size": model.image_size, "threads": args.threads, "rounds": args.rounds}
    for label, got in timings(runtimes, images, clips, args.rounds).items():
        row[label] = got
        print(f"{label:>13}: " + ", ".join(f"{k} {v * 1000:.1f} ms" for k, v in got.items()), flush=True)
    for label in runtimes:
        if label != "pytorch":
            row[f"{label} / pytorch"] = {k: row[label][k] / row["pytorch"][k] for k in row["pytorch"]}
            print(f"{label} / pytorch: " + ", ".join(f"{k} {v:.2f}x" for k, v in row[f"{label} / pytorch"].items()))
    if args.metrics:
        config, n_images, n_videos = heldout(run)
        if args.eval_samples is not None:
            n_images = n_videos = args.eval_samples
        row["metrics"] = {"images": n_images, "videos": n_videos}
        for label, runtime in runtimes.items():
            row["metrics"][label] = evaluate_synthetic(runtime, config, n_images=n_images, n_videos=n_videos)
            print(f"{label:>13}: " + ", ".join(f"{k} {v:.4f}" for k, v in row["metrics"][label].items()), flush=True)
        for label in runtimes:
            if label != "pytorch":
                row["metrics"][f"{label} - pytorch (max abs)"] = max(
                    abs(row["metrics"][label][k] - row["metrics"]["pytorch"][k]) for k in row["metrics"]["pytorch"])
    return row


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, default=Path("outputs/default"),
                        help="the default run (its model and held-out split); the untrained sam-lite0 when missing")
    parser.add_argument("--vit-b", action="store_true", help="also a ViT-B SAM at 512 with random weights")
    parser.add_argument("--metrics", action="store_true", help="held-out metrics of PyTorch, float32 and int8 exports")
    parser.add_argument("--eval-samples", type=int, default=None, help="images and videos to score (default: the run's)")
    parser.add_argument("--frames", type=int, default=16, help="frames of each timed video")
    parser.add_argument("--repeats", type=int, default=8, help="timed predict calls")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of every timing; the medians are reported")
    parser.add_argument("--vit-b-rounds", type=int, default=2, help="rounds for the ViT-B model (seconds a step)")
    parser.add_argument("--size", type=int, default=128, help="side of the synthetic test images")
    parser.add_argument("--threads", type=int, default=None, help="threads for both runtimes (default: torch's)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    args.threads = args.threads or torch.get_num_threads()
    torch.set_num_threads(args.threads)
    import platform

    report = {"machine": platform.processor() or platform.machine(), "cpu": _cpu_name(), "threads": args.threads,
              "torch": torch.__version__, "rows": []}
    import onnxruntime

    report["onnxruntime"] = onnxruntime.__version__
    run = args.run if find_checkpoint(args.run) is not None else None
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if run is not None:
            model = load_model(run, device="cpu")
            name = f"default run ({run})"
        else:
            torch.manual_seed(0)
            model = wrap_sam(build_sam("lite0"), adapter="sam-lite0").eval()
            name = "untrained sam-lite0 (no default run)"
        report["rows"].append(measure("default", model, work, args, int8=True, run=run) | {"what": name})
        if args.vit_b:
            torch.manual_seed(0)
            vit = wrap_sam(build_sam("vit_b", image_size=512), adapter="sam-vit-b").eval()
            args_vit = argparse.Namespace(**{**vars(args), "metrics": False, "rounds": args.vit_b_rounds})
            report["rows"].append(measure("vit_b-512", vit, work, args_vit, int8=False, run=None)
                                  | {"what": "ViT-B SAM at 512, random weights"})
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return report


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


if __name__ == "__main__":
    main(sys.argv[1:])

#!/usr/bin/env python
"""Run a model over a video segmentation benchmark, write its results in the official layout, and score them.

    # run the model, write <results>/<video>/<frame>.png, score (DAVIS-2017 val)
    python eval/evaluate_vos.py --benchmark davis2017 --root data/DAVIS --results out/davis_val \
        --out out/davis_val.json --checkpoint me/unifusion-sam-vit-b --sam vit_b --sam-checkpoint sam_vit_b_01ec64.pth
    # several processes (videos split between them)
    accelerate launch --num_processes 2 eval/evaluate_vos.py --benchmark youtube_vos --year 2019 ...
    # score results that already exist (no --checkpoint)
    python eval/evaluate_vos.py --benchmark davis2017 --root data/DAVIS --results out/davis_val --out s.json

Benchmarks: davis2017, youtube_vos (--year 2018/2019), lvos, mose (semi-supervised VOS: objects from the
dataset's masks; objects appearing late join when their mask is given); ref_youtube_vos, ref_davis17
(referring VOS: sentences from the expression files). Sigma presets: DAVIS 0.3, YouTube-VOS / MOSE 0.4,
LVOS 0.5, referring 0.3 (--sigma overrides). DAVIS-2017 train/val and Ref-DAVIS17 are scored here;
splits without public ground truth (YouTube-VOS / MOSE / LVOS valid, Ref-YouTube-VOS, DAVIS test-dev) get
a submission zip for the evaluation server instead. The JSON holds fractions, not percent.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from unifusion_sam.evaluation import (
    VIDEO_BENCHMARKS,
    check_text_option,
    evaluate_video_benchmark,
    open_reader,
    score_video_results,
    write_json,
)
from unifusion_sam.evaluation.distributed import default_state, process_device
from unifusion_sam.loading import add_model_arguments, model_from_args
from unifusion_sam.metrics import format_davis_table

BENCHMARKS = tuple(VIDEO_BENCHMARKS)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--benchmark", choices=BENCHMARKS, required=True)
    parser.add_argument("--root", type=Path, required=True,
                        help="dataset root (DAVIS: holds Annotations/, ImageSets/; Ref-DAVIS17: holds DAVIS/ and "
                             "davis_text_annotations/; YouTube-VOS / LVOS / MOSE: holds <split>/)")
    parser.add_argument("--results", type=Path, required=True,
                        help="folder of the results: written with --checkpoint, read without")
    parser.add_argument("--out", type=Path, required=True, help="JSON file to write the scores to")
    parser.add_argument("--split", default=None, help="dataset split (default: val for DAVIS, valid for the others)")
    parser.add_argument("--year", type=int, choices=(2018, 2019), default=2019, help="YouTube-VOS year (default: 2019)")
    parser.add_argument("--resolution", default="480p", help="DAVIS resolution (default: 480p)")
    parser.add_argument("--all-frames", action="store_true",
                        help="YouTube-VOS: run on <split>_all_frames, write only the evaluated frames")
    parser.add_argument("--sigma", type=float, default=None, help="object score threshold (default: benchmark preset)")
    parser.add_argument("--max-short-side", type=int, default=480,
                        help="frames with a longer short side are downscaled for inference (default: 480; 0 = never)")
    parser.add_argument("--zip", type=Path, default=None,
                        help="submission zip path for splits without public ground truth (default: <results>.zip)")
    parser.add_argument("--text", default=None, help=argparse.SUPPRESS)  # only to reject it with a clear message
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.add_argument("--quiet", action="store_true", help="do not print the table")
    add_model_arguments(parser)
    return parser


def produce_results(args: argparse.Namespace, state) -> dict | None:
    """Run the model (``--checkpoint``) over the benchmark, or score the results that exist."""
    common = dict(split=args.split, year=args.year, resolution=args.resolution, zip_path=args.zip, state=state,
                  progress=not args.no_progress)
    if args.checkpoint is None:
        return score_video_results(args.benchmark, args.root, args.results, **common)
    reader = open_reader(args.benchmark, args.root, args.split, year=args.year, resolution=args.resolution,
                         all_frames=args.all_frames)  # before the model: bad paths fail fast
    model = model_from_args(args, device=process_device(args.device, state))
    return evaluate_video_benchmark(
        model, args.benchmark, args.root, args.results, all_frames=args.all_frames, sigma=args.sigma,
        max_short_side=args.max_short_side or None, reader=reader, **common,
    )


def format_summary(summary: dict) -> str:
    if not summary.get("scored"):
        return summary["note"]
    lines = [f"{summary['benchmark']} {summary['split']} ({summary['num_videos']} videos, "
             f"{summary.get('num_objects', '?')} objects)"]
    if "per_annotation" in summary:
        lines.append("mean over the expression sets:")
        lines.append(format_davis_table(summary, per_object=False))
        for name, s in summary["per_annotation"].items():
            lines += ["", f"{name} ({s['num_objects']} objects):", format_davis_table(s, per_object=False)]
        return "\n".join(lines)
    lines.append(format_davis_table(summary))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.checkpoint is None and args.sam is not None:
        parser.error("--sam needs --checkpoint (give a checkpoint to run a model, neither to score results)")
    try:
        check_text_option(args.benchmark, args.text)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    state = default_state(cpu=args.device == "cpu" if args.device else None)
    try:
        summary = produce_results(args, state)
    except (ValueError, FileNotFoundError) as exc:  # DataError is a ValueError
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if summary is None:  # not the main process
        return 0
    if args.checkpoint is not None:
        summary.update(checkpoint=str(args.checkpoint), sam=str(args.sam), num_processes=state.num_processes)
    summary.setdefault("resolution", args.resolution)
    write_json(args.out, summary)
    if not args.quiet:
        print(format_summary(summary))
        print(f"\nscores written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

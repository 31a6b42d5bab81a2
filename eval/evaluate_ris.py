#!/usr/bin/env python
"""Run a model over a RefCOCO / RefCOCO+ / RefCOCOg split and score it (oIoU, mIoU, Prec@0.5..0.9).

    python eval/evaluate_ris.py --benchmark refcoco --split val --root data/refer \
        --image-dir data/coco/train2014 --checkpoint me/unifusion-sam-vit-b --sam vit_b \
        --sam-checkpoint sam_vit_b_01ec64.pth --out out/refcoco_val.json
    accelerate launch --num_processes 2 eval/evaluate_ris.py ...   # sentences split between processes

Masks are compared at the original image resolution. The JSON holds fractions; the table prints percent.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from unifusion_sam.evaluation import (
    RIS_BENCHMARKS,
    evaluate_ris,
    format_ris_table,
    open_ris_reader,
)
from unifusion_sam.evaluation.distributed import default_state, process_device, write_json
from unifusion_sam.loading import add_model_arguments, model_from_args


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--benchmark", choices=RIS_BENCHMARKS, required=True)
    parser.add_argument("--split", required=True, help="val, testA, testB (RefCOCO/+), val, test (RefCOCOg umd)")
    parser.add_argument("--root", type=Path, required=True, help="refer data folder holding refcoco/, refcoco+/, refcocog/")
    parser.add_argument("--image-dir", type=Path, default=None,
                        help="COCO train2014 images (default: <root>/images/mscoco/images/train2014 or <root>/train2014)")
    parser.add_argument("--split-by", default=None, help="unc, umd or google (default: unc; umd for RefCOCOg)")
    parser.add_argument("--out", type=Path, required=True, help="JSON file to write the scores to")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.add_argument("--quiet", action="store_true", help="do not print the table")
    add_model_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    state = default_state(cpu=args.device == "cpu" if args.device else None)
    try:
        reader = open_ris_reader(args.root, args.benchmark, args.split, image_dir=args.image_dir,
                                 split_by=args.split_by)  # before the model: bad paths fail fast
        model = model_from_args(args, device=process_device(args.device, state))
        summary = evaluate_ris(model, args.root, reader=reader, state=state, progress=not args.no_progress)
    except (ValueError, FileNotFoundError) as exc:  # DataError is a ValueError
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if summary is None:  # not the main process
        return 0
    summary.update(checkpoint=str(args.checkpoint), sam=str(args.sam), num_processes=state.num_processes)
    write_json(args.out, summary)
    if not args.quiet:
        print(f"{args.benchmark} {args.split} ({summary['num_sentences']} sentences), percent:")
        print(format_ris_table(summary))
        print(f"\nscores written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python
"""Run a model over seeded FSS-1000 K-shot episodes and score it (per-class foreground mIoU, FB-IoU).

    python eval/evaluate_fss.py --root data/FSS-1000 --shot 1 --checkpoint outputs/vit_b \
        --out out/fss_1shot.json             # a run folder, checkpoint folder or Hub id (+ --sam for an adapter)
    accelerate launch --num_processes 2 eval/evaluate_fss.py ...   # episodes split between processes

By default every image of each of the 240 test classes is the query once (2400 episodes); the supports
come from a generator seeded with --episode-seed. The JSON holds fractions; the table prints percent.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from unifusion_sam.data.readers import FSS1000_SPLITS
from unifusion_sam.evaluation import (
    evaluate_fss,
    format_fss_table,
    open_fss_reader,
)
from unifusion_sam.evaluation.distributed import default_state, process_device, write_json
from unifusion_sam.loading import add_model_arguments, model_from_args


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--root", type=Path, required=True, help="FSS-1000 folder holding the class folders")
    parser.add_argument("--shot", type=int, default=1, help="support pairs per episode (1 or 5; default 1)")
    parser.add_argument("--split", choices=FSS1000_SPLITS, default="test", help="class split (default: test)")
    parser.add_argument("--split-file", type=Path, default=None, help="text file of class names replacing the split")
    parser.add_argument("--episodes-per-class", type=int, default=None,
                        help="queries per class (default: every image once)")
    parser.add_argument("--episode-seed", type=int, default=0, help="seed of the episode draws (default: 0)")
    parser.add_argument("--out", type=Path, required=True, help="JSON file to write the scores to")
    parser.add_argument("--per-class", action="store_true", help="also print one line per class")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.add_argument("--quiet", action="store_true", help="do not print the table")
    add_model_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    state = default_state(cpu=args.device == "cpu" if args.device else None)
    try:
        reader = open_fss_reader(args.root, shot=args.shot, split=args.split, episodes_per_class=args.episodes_per_class,
                                 seed=args.episode_seed, split_file=args.split_file)  # before the model: fail fast
        model = model_from_args(args, device=process_device(args.device, state))
        summary = evaluate_fss(model, args.root, reader=reader, state=state, progress=not args.no_progress)
    except (ValueError, FileNotFoundError) as exc:  # DataError is a ValueError
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if summary is None:  # not the main process
        return 0
    summary.update(checkpoint=str(args.checkpoint), sam=str(args.sam), num_processes=state.num_processes)
    write_json(args.out, summary)
    if not args.quiet:
        print(f"FSS-1000 {args.split} {args.shot}-shot, percent:")
        print(format_fss_table(summary, per_class=args.per_class))
        print(f"\nscores written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

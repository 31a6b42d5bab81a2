#!/usr/bin/env python
"""Score semi-supervised VOS results (palette PNGs) like the official DAVIS-2017 tool.

    python eval/evaluate_vos.py --benchmark davis2017 --root data/DAVIS --results out/davis_val \
        --out out/davis_val.json [--split val] [--resolution 480p]

Writes a JSON with ``J&F-Mean``, ``J-Mean``, ``J-Recall``, ``J-Decay``, ``F-Mean``, ``F-Recall``,
``F-Decay`` (fractions, not percent) and ``per_object`` scores, and prints a table. All the logic
lives in :mod:`unifusion_sam.metrics`; this script only parses arguments and writes files.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from unifusion_sam.data.io import DataError
from unifusion_sam.metrics import format_davis_table, score_davis_results

BENCHMARKS = ("davis2017",)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--benchmark", choices=BENCHMARKS, required=True)
    parser.add_argument("--root", type=Path, required=True, help="dataset root (DAVIS: holds Annotations/, ImageSets/)")
    parser.add_argument("--results", type=Path, required=True, help="folder of <video>/<frame>.png results")
    parser.add_argument("--out", type=Path, required=True, help="JSON file to write the scores to")
    parser.add_argument("--split", default="val", help="DAVIS ImageSets/2017/<split>.txt (default: val)")
    parser.add_argument("--resolution", default="480p", help="DAVIS annotation resolution (default: 480p)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.add_argument("--quiet", action="store_true", help="do not print the table")
    # Model options (e.g. --checkpoint) go here; see produce_results().
    return parser


def produce_results(args: argparse.Namespace) -> Path:
    """The folder of result PNGs to score.

    Today results must already exist. A ``--checkpoint`` option would run the model over the split here,
    write ``<results>/<video>/<frame>.png`` palette PNGs, and return ``args.results``.
    """
    return args.results


def score(args: argparse.Namespace, results: Path) -> dict:
    if args.benchmark == "davis2017":
        return score_davis_results(
            args.root, results, split=args.split, resolution=args.resolution, progress=not args.no_progress
        )
    raise ValueError(f"unsupported benchmark {args.benchmark!r}")  # argparse choices make this unreachable


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        results = produce_results(args)
        summary = score(args, results)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    summary = {
        "benchmark": args.benchmark,
        "split": args.split,
        "resolution": args.resolution,
        "results": str(results),
        **summary,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(args.out.name + ".tmp")
    tmp.write_text(json.dumps(summary, indent=2) + "\n")
    tmp.replace(args.out)
    if not args.quiet:
        print(f"{args.benchmark} {args.split} ({summary['num_videos']} videos, {summary['num_objects']} objects)")
        print(format_davis_table(summary))
        print(f"\nscores written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

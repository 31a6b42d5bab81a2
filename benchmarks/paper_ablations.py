"""The paper's reference ablations rerun on a finished run: Table 9 and Table 7 of UniRef++.

- Table 9 (mask references for propagation): VOS J&F when every frame's decode gets the *first*
  reference and the *previous* frame's mask (the default), the first only, or the previous only;
- Table 7 (references for RVOS): J&F with the sentence alone on every frame, or the sentence plus the
  mask references (the default: the first confident frame + the previous frame).

Scored on the run's held-out synthetic videos exactly as the recipes' ``evaluate_synthetic`` scores
them (:func:`unifusion_sam.evaluation.synthetic.score_videos`; VOS ``sigma="davis"``, DAVIS protocol; RVOS
one track per expression, ``sigma="rvos"``), so the defaults reproduce the run's ``metrics.json``
``vos_jf`` / ``rvos_jf`` (up to CPU float rounding: ``outputs/default`` gives its VOS exactly and its RVOS
within 2e-5 on one thread). A run folder of either family: ``adapter/`` + ``sam_<size>.safetensors``
(UniFusion-SAM, ``outputs/default``) or ``model/`` (the full UniRef++, ``outputs/uniref_default``).
The held-out split (``eval_seed``, ``synthetic_image_size``, ``eval_videos``) is read from the run's own
``run_config.json`` (written by both recipes), else from ``--config`` or the recipe's default config.
Tables print J&F in percent; ``--json`` writes fractions::

    {"vos": {"first+previous": J&F, "first": J&F, "previous": J&F},
     "rvos": {"language": J&F, "language+mask": J&F}}

    python benchmarks/paper_ablations.py --run outputs/default [--json PATH] [--videos N]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import torch
import yaml

from unifusion_sam.data.synthetic import SyntheticConfig
from unifusion_sam.evaluation.synthetic import score_videos
from unifusion_sam.families import family_of_model
from unifusion_sam.loading import load_model
from unifusion_sam.training.config import RunConfig

VOS_SETTINGS = ("first+previous", "first", "previous")  # Table 9 rows (mask_refs)
RVOS_SETTINGS = ("language", "language+mask")  # Table 7 rows (rvos_refs)
RECIPE_CONFIGS = Path(__file__).resolve().parents[1] / "recipes" / "configs"
DEFAULT_CONFIGS = {"sam": RECIPE_CONFIGS / "default.yaml", "uniref": RECIPE_CONFIGS / "uniref_default.yaml"}
# the paper's UniRef++-R50 numbers (Table 9: Youtube-VOS 2018 G; Table 7: Ref-Youtube-VOS J&F), for the trend
PAPER_VOS = {"first+previous": 81.9, "first": 76.6, "previous": 80.0}
PAPER_RVOS = {"language": 60.4, "language+mask": 61.5}


def load_run(run: str | Path, *, sam: str | None = None, device: str = "cpu"):
    """``(model, family name)`` of a finished run folder (the core loader picks the family: ``model/`` is a full
    UniRef++ run, ``adapter/`` + its ``sam_<size>.safetensors`` a UniFusion-SAM run; ``sam`` overrides the
    run's SAM)."""
    model = load_model(run, device=device, sam=sam)
    return model, family_of_model(model).name


def heldout_split(config_path: str | Path) -> tuple[SyntheticConfig, int, dict]:
    """The held-out synthetic config the recipe evaluates on (``eval_seed``, square ``synthetic_image_size``)
    and ``eval_videos``, from a run's ``run_config.json`` or a recipe config YAML (missing keys: the
    recipes' defaults); also the raw mapping."""
    with open(config_path) as fh:
        data = yaml.safe_load(fh) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{config_path}: a recipe config must be a mapping, got {type(data).__name__}")
    defaults = {f.name: f.default for f in dataclasses.fields(RunConfig)}
    seed, size, videos = (data.get(k, defaults[k]) for k in ("eval_seed", "synthetic_image_size", "eval_videos"))
    return SyntheticConfig(seed=int(seed), image_size=(int(size), int(size))), int(videos), data


def run_split(run: str | Path, family: str, config: Path | None = None) -> tuple[Path, SyntheticConfig, int, dict]:
    """``(config path, held-out config, eval_videos, raw mapping)`` of a run: from ``config`` when given, else
    the run's own ``run_config.json``, else the family's default recipe config."""
    own = Path(run) / "run_config.json"
    path = config or (own if own.is_file() else DEFAULT_CONFIGS[family])
    return (path, *heldout_split(path))


def write_json(path: Path | None, data: dict) -> None:
    """Write ``data`` to ``path`` (folders made as needed); nothing for ``None``."""
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, indent=2) + "\n")


def run_ablations(model, config: SyntheticConfig, n_videos: int, *, progress: bool = True) -> dict:
    """Both tables' J&F (fractions): ``{"vos": {mask_refs: J&F}, "rvos": {rvos_refs: J&F}}``. The default
    setting (first+previous, language+mask) is scored once, for VOS and RVOS together."""
    default = score_videos(model, config, n_videos=n_videos, progress=progress)
    vos = {"first+previous": default["vos_jf"]}
    for setting in VOS_SETTINGS[1:]:
        vos[setting] = score_videos(model, config, n_videos=n_videos, mask_refs=setting, tasks=("vos",),
                                    progress=progress)["vos_jf"]
    language = score_videos(model, config, n_videos=n_videos, rvos_refs="language", tasks=("rvos",),
                            progress=progress)["rvos_jf"]
    return {"vos": {k: vos[k] for k in VOS_SETTINGS}, "rvos": {"language": language, "language+mask": default["rvos_jf"]}}


def format_tables(results: dict, n_videos: int) -> str:
    """Table 9 and Table 7 as text (J&F in percent, with the paper's UniRef++-R50 numbers beside them)."""
    tick = {True: "x", False: " "}
    lines = [f"Table 9: mask references for propagation (VOS J&F %, {n_videos} held-out synthetic videos)",
             f"  {'first':>5} {'previous':>8} {'J&F':>6}   paper (Youtube-VOS G)"]
    for setting in ("first", "previous", "first+previous"):
        parts = setting.split("+")
        note = "  <- default" if setting == "first+previous" else ""
        lines.append(f"  {tick['first' in parts]:>5} {tick['previous' in parts]:>8} "
                     f"{100 * results['vos'][setting]:>6.1f}   {PAPER_VOS[setting]:>5.1f}{note}")
    lines += ["", f"Table 7: references for RVOS (J&F %, {n_videos} held-out synthetic videos, every expression)",
              f"  {'reference':<16} {'J&F':>6}   paper (Ref-Youtube-VOS J&F)"]
    for setting, name in (("language", "language"), ("language+mask", "language + mask")):
        note = "  <- default" if setting == "language+mask" else ""
        lines.append(f"  {name:<16} {100 * results['rvos'][setting]:>6.1f}   {PAPER_RVOS[setting]:>5.1f}{note}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", default="outputs/default", help="a finished run's output folder (either family)")
    parser.add_argument("--json", type=Path, default=None, help="write the J&F (fractions) here")
    parser.add_argument("--videos", type=int, default=None, help="held-out videos (default: the config's eval_videos)")
    parser.add_argument("--config", type=Path, default=None,
                        help="the recipe config the run used (default: the run's run_config.json, else the family's "
                             "recipes/configs/*default.yaml)")
    parser.add_argument("--sam", default=None, help="the run's SAM: size name or weights (default: its sam_*.safetensors)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default 1: the small default models run fastest on one thread on "
                             "a shared machine; raise it on an idle many-core one)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    if args.videos is not None and args.videos < 1:
        parser.error(f"--videos must be >= 1, got {args.videos}")
    if args.threads < 1:
        parser.error(f"--threads must be >= 1, got {args.threads}")
    torch.set_num_threads(args.threads)
    try:
        model, family = load_run(args.run, sam=args.sam, device=args.device)
    except FileNotFoundError as exc:
        raise SystemExit(f"{exc}; run the recipe (make demo) first") from exc
    own = Path(args.run) / "run_config.json"
    config_path, config, n_videos, raw = run_split(args.run, family, args.config)
    n_videos = args.videos or n_videos
    print(f"{args.run} ({family}); held-out split from {config_path}: seed {config.seed}, "
          f"{config.image_size[0]} px, {n_videos} videos", file=sys.stderr)
    if config_path != own and Path(str(raw.get("output_dir", ""))).resolve() != Path(args.run).resolve():
        print(f"note: {config_path} is the config of {raw.get('output_dir')!r}, not of {args.run}; pass --config "
              "if the run used another seed or image size", file=sys.stderr)
    results = run_ablations(model, config, n_videos, progress=not args.no_progress)
    print(format_tables(results, n_videos))
    write_json(args.json, results)
    return results


if __name__ == "__main__":
    main()

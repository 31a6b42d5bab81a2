"""The video benchmarks the eval runner knows: how to read them, sigma presets, how they are scored.

| benchmark | task | sigma | scored locally | otherwise |
| --- | --- | --- | --- | --- |
| ``davis2017`` | VOS | 0.3 | train / val (official semi-supervised protocol) | test-dev zip (``davis`` layout) |
| ``youtube_vos`` (2018 / 2019) | VOS | 0.4 | train (DAVIS protocol) | valid / test zip (``youtube``) |
| ``lvos`` | VOS | 0.5 | train (DAVIS protocol) | valid / test zip (``youtube``) |
| ``mose`` | VOS | 0.4 | train (DAVIS protocol) | valid / test zip (``davis``) |
| ``ref_youtube_vos`` | RVOS | 0.3 | never (no public ground truth) | zip (``ref_youtube_vos``) |
| ``ref_davis17`` | RVOS | 0.3 | always (unsupervised protocol, mean of 4 sets) | |

:func:`evaluate_video_benchmark` runs a model and writes + scores; :func:`score_video_results`
scores (or zips) results that already exist.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..data.io import DataError
from ..data.readers import DAVIS2017, LVOS, MOSE, RefDAVIS17, RefYouTubeVOS, YouTubeVOS
from ..data.writers import make_submission_zip
from ..inference.session import resolve_sigma
from ..metrics import davis_summary, score_davis_results
from ..metrics.davis import SUMMARY_KEYS
from .distributed import Gather, default_state, share
from .rvos import REF_DAVIS_SETS, run_rvos, score_ref_davis_video
from .vos import VideoOutcome, run_vos, score_davis_layout, score_dense_video


@dataclass(frozen=True)
class VideoBenchmark:
    name: str
    task: str  # "vos" or "rvos"
    sigma: str  # preset name of resolve_sigma
    default_split: str
    zip_layout: str | None
    title: str


VIDEO_BENCHMARKS: dict[str, VideoBenchmark] = {
    "davis2017": VideoBenchmark("davis2017", "vos", "davis", "val", "davis", "DAVIS-2017"),
    "youtube_vos": VideoBenchmark("youtube_vos", "vos", "youtube_vos", "valid", "youtube", "YouTube-VOS"),
    "lvos": VideoBenchmark("lvos", "vos", "lvos", "valid", "youtube", "LVOS"),
    "mose": VideoBenchmark("mose", "vos", "mose", "valid", "davis", "MOSE"),
    "ref_youtube_vos": VideoBenchmark("ref_youtube_vos", "rvos", "rvos", "valid", "ref_youtube_vos", "Ref-YouTube-VOS"),
    "ref_davis17": VideoBenchmark("ref_davis17", "rvos", "rvos", "val", None, "Ref-DAVIS17"),
}


def check_text_option(benchmark: str, text: str | None) -> None:
    """A sentence makes no sense for a benchmark run: raise a ``ValueError`` that says why."""
    if text is None:
        return
    spec = VIDEO_BENCHMARKS[benchmark]
    if spec.task == "vos":
        raise ValueError(
            f"--text was given for {benchmark}, a semi-supervised VOS benchmark: its objects come from the "
            "dataset's first-frame masks, not from a sentence. For referring VOS use --benchmark ref_youtube_vos "
            "or ref_davis17; to track your own video from a sentence use `unifusion-sam track --text`.")
    raise ValueError(f"--text was given for {benchmark}: its sentences come from the dataset's expression files; "
                     "to track your own video from a sentence use `unifusion-sam track --text`.")


def open_reader(benchmark: str, root: str | os.PathLike, split: str | None = None, *, year: int = 2019,
                resolution: str = "480p", all_frames: bool = False):
    """The dataset reader of ``benchmark`` (raises :class:`DataError` naming a missing root / file)."""
    spec = VIDEO_BENCHMARKS[benchmark]
    split = split or spec.default_split
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{spec.title} root not found (or not a folder): {root}")
    if benchmark == "davis2017":
        return DAVIS2017(root, split, resolution=resolution)
    if benchmark == "youtube_vos":
        return YouTubeVOS(root, split, year=year, all_frames=all_frames)
    if benchmark == "lvos":
        return LVOS(root, split)
    if benchmark == "mose":
        return MOSE(root, split)
    if benchmark == "ref_youtube_vos":
        return RefYouTubeVOS(root, split)
    return RefDAVIS17(root, split, resolution=resolution)


def scoring_mode(benchmark: str, split: str) -> str | None:
    """``"davis"``, ``"dense"``, ``"ref_davis"`` or ``None`` (no public ground truth: zip for the server)."""
    if benchmark == "davis2017":
        return "davis" if split in ("train", "val") else None
    if benchmark == "ref_davis17":
        return "ref_davis"
    if benchmark in ("youtube_vos", "lvos", "mose"):
        return "dense" if split == "train" else None
    return None


def default_zip_path(results: str | os.PathLike) -> Path:
    results = Path(results)
    return results.with_name(results.name + ".zip")


def evaluate_video_benchmark(
    model,
    benchmark: str,
    root: str | os.PathLike,
    results: str | os.PathLike,
    *,
    split: str | None = None,
    year: int = 2019,
    resolution: str = "480p",
    all_frames: bool = False,
    sigma: float | str | None = None,
    max_short_side: int | None = 480,
    zip_path: str | os.PathLike | None = None,
    text: str | None = None,
    reader=None,
    state=None,
    gather: Gather | None = None,
    progress: bool = True,
) -> dict | None:
    """Run ``model`` over a benchmark, write its results under ``results`` and score them (see module table).

    ``reader``: the benchmark's reader when already opened (:func:`open_reader` with the same options).
    Returns the summary on the main process (``None`` on the others): the DAVIS statistics
    (``J&F-Mean`` ... as fractions) when scored, else ``submission_zip`` and a ``note``.
    """
    if benchmark not in VIDEO_BENCHMARKS:
        raise ValueError(f"unknown benchmark {benchmark!r}; choose one of {sorted(VIDEO_BENCHMARKS)}")
    check_text_option(benchmark, text)
    spec = VIDEO_BENCHMARKS[benchmark]
    split = split or spec.default_split
    sigma_value = resolve_sigma(spec.sigma if sigma is None else sigma)
    if reader is None:
        reader = open_reader(benchmark, root, split, year=year, resolution=resolution, all_frames=all_frames)
    mode = scoring_mode(benchmark, split)
    state = state or default_state()
    common = dict(sigma=sigma_value, max_short_side=max_short_side, state=state, gather=gather, progress=progress)
    if spec.task == "vos":
        score_fn = None
        if mode == "davis":
            def score_fn(record):
                return score_davis_layout(root, record.name, results, resolution)
        elif mode == "dense":
            def score_fn(record):
                return score_dense_video(record, results)
        outcomes = run_vos(model, reader, results, score=score_fn, keep_eval_frames=all_frames, **common)
    else:
        outcomes = run_rvos(model, reader, results, benchmark=benchmark, score=mode == "ref_davis", **common)
    if outcomes is None:
        return None
    summary = summarise(spec, mode, outcomes, results, zip_path)
    summary.update(split=split, sigma=sigma_value, max_short_side=max_short_side,
                   num_frames=sum(o.num_frames for o in outcomes), num_written=sum(o.num_written for o in outcomes))
    return summary


def summarise(spec: VideoBenchmark, mode: str | None, outcomes: list[VideoOutcome], results: str | os.PathLike,
              zip_path: str | os.PathLike | None = None) -> dict:
    """Combine the gathered per-video outcomes into the benchmark summary (and zip when not scored)."""
    head = {"benchmark": spec.name, "results": str(results), "num_videos": len(outcomes),
            "videos": [o.video for o in outcomes]}
    if mode in ("davis", "dense"):
        summary = davis_summary([obj for o in outcomes for obj in o.scores["davis"]])
        return {**head, "scored": True, "protocol": "davis2017-semi-supervised", **summary}
    if mode == "ref_davis":
        sets = {}
        for k in range(len(REF_DAVIS_SETS)):
            objects = [obj for o in outcomes for obj in o.scores[f"anno_{k}"]]
            if objects:
                sets[f"anno_{k}"] = davis_summary(objects)
        if not sets:
            raise DataError(f"no ground-truth object to score in {results}")
        means = {key: float(np.mean([s[key] for s in sets.values()])) for key in SUMMARY_KEYS}
        return {**head, "scored": True, "protocol": "davis2017-unsupervised, mean over the expression sets",
                **means, "per_annotation": sets}
    target = Path(zip_path) if zip_path is not None else default_zip_path(results)
    zipped = make_submission_zip(results, target, layout=spec.zip_layout)
    return {**head, "scored": False, "submission_zip": str(zipped),
            "note": f"{spec.title} has no public ground truth for this split: upload {zipped} to the "
                    "benchmark's evaluation server to get its scores"}


def score_video_results(
    benchmark: str,
    root: str | os.PathLike,
    results: str | os.PathLike,
    *,
    split: str | None = None,
    year: int = 2019,
    resolution: str = "480p",
    zip_path: str | os.PathLike | None = None,
    state=None,
    gather: Gather | None = None,
    progress: bool = True,
) -> dict | None:
    """Score (or zip, when there is no public ground truth) results that are already on disk."""
    spec = VIDEO_BENCHMARKS[benchmark]
    split = split or spec.default_split
    mode = scoring_mode(benchmark, split)
    if not Path(results).is_dir():
        raise DataError(f"results folder not found: {results}")
    if mode == "davis":
        summary = score_davis_results(root, results, split=split, resolution=resolution, progress=progress)
        return {"benchmark": benchmark, "results": str(results), "scored": True,
                "protocol": "davis2017-semi-supervised", "split": split, **summary}
    state = state or default_state()
    if mode is None:
        if not Path(root).is_dir():
            raise DataError(f"{spec.title} root not found (or not a folder): {root}")
        if not state.is_main_process:
            return None
        source = Path(results) / "Annotations" if (Path(results) / "Annotations").is_dir() else Path(results)
        present = [VideoOutcome(p.name, 0, 0) for p in sorted(source.iterdir()) if p.is_dir()]
        return {**summarise(spec, None, present, results, zip_path), "split": split}
    reader = open_reader(benchmark, root, split, year=year, resolution=resolution)

    def one(index: int) -> VideoOutcome:
        record = reader[index]
        if mode == "dense":
            return VideoOutcome(record.name, len(record), 0, {"davis": score_dense_video(record, results)})
        return VideoOutcome(record.name, len(record), 0,
                            score_ref_davis_video(record.name, reader.davis.root, results, reader.davis.resolution))

    outcomes = share(range(len(reader)), state, one, gather=gather, progress=progress, desc="videos", unit="video")
    if outcomes is None:
        return None
    return {**summarise(spec, mode, outcomes, results, zip_path), "split": split}

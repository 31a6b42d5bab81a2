"""Running a model of any family over evaluation data and scoring it (the logic behind ``eval/*.py`` and the
recipes' held-out evaluation); models are used only through ``predict`` / ``track``.

* :mod:`.synthetic` -- the held-out synthetic split every training run is scored on
  (:func:`evaluate_synthetic`, :func:`score_videos`);
* :mod:`.video_datasets` -- the video datasets (DAVIS-2017, YouTube-VOS, LVOS, MOSE, Ref-YouTube-VOS,
  Ref-DAVIS17): :func:`evaluate_video_benchmark`, :func:`score_video_results`;
* :mod:`.vos` / :mod:`.rvos` -- tracking the videos of a reader and writing the official result layouts;
* :mod:`.davis_unsupervised` -- the DAVIS unsupervised protocol (Ref-DAVIS17);
* :mod:`.ris` -- RefCOCO / + / g (:func:`evaluate_ris`); :mod:`.fss` -- FSS-1000 (:func:`evaluate_fss`);
* :mod:`.distributed` -- splitting work across ``accelerate launch`` processes and gathering it.

Which model to run is the front end's business (:mod:`unifusion_sam.loading`).
"""

from .davis_unsupervised import score_unsupervised_video
from .distributed import gather_lists, share, split_items, write_json
from .fss import evaluate_fss, format_fss_table, open_fss_reader, run_fss
from .ris import RIS_BENCHMARKS, evaluate_ris, format_ris_table, open_ris_reader, run_ris
from .rvos import run_rvos
from .synthetic import evaluate_synthetic, score_videos
from .video_datasets import (
    VIDEO_BENCHMARKS,
    check_text_option,
    evaluate_video_benchmark,
    open_reader,
    score_video_results,
)
from .vos import VideoOutcome, run_vos, track_video, write_vos_video

__all__ = [
    "RIS_BENCHMARKS",
    "VIDEO_BENCHMARKS",
    "VideoOutcome",
    "check_text_option",
    "evaluate_fss",
    "evaluate_ris",
    "evaluate_synthetic",
    "evaluate_video_benchmark",
    "format_fss_table",
    "format_ris_table",
    "gather_lists",
    "open_fss_reader",
    "open_reader",
    "open_ris_reader",
    "run_fss",
    "run_ris",
    "run_rvos",
    "run_vos",
    "score_unsupervised_video",
    "score_video_results",
    "score_videos",
    "share",
    "split_items",
    "track_video",
    "write_json",
    "write_vos_video",
]

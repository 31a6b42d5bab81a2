"""Evaluation metrics of the library, matching the official tools (the conventions: the docs'
evaluation guide, ``docs/guide/evaluation.md``).

* :mod:`.region` -- J (IoU, DAVIS ``db_eval_iou``);
* :mod:`.boundary` -- F (DAVIS ``seg2bmap`` / ``f_measure``);
* :mod:`.davis` -- DAVIS-2017 per-object Mean / Recall / Decay and the dataset summary;
* :mod:`.vos_meter` -- :class:`VOSMeter`, an online accumulator of video label maps;
* :mod:`.davis_scoring` -- scoring a folder of palette PNGs against a DAVIS root;
* :mod:`.youtube` -- YouTube-VOS / LVOS overall score;
* :mod:`.ris` -- :class:`RISMeter` (oIoU, mIoU, Prec@X);
* :mod:`.fss` -- :class:`FSSMeter` (FSS-1000 per-class mIoU, FB-IoU).
"""

from .boundary import (
    DEFAULT_BOUND_TH,
    boundary_f,
    boundary_precision_recall,
    boundary_radius,
    dilate_disk,
    disk,
    seg2bmap,
)
from .davis import (
    ObjectScores,
    clean_ground_truth,
    count_objects,
    davis_summary,
    db_statistics,
    frame_scores,
    object_statistics,
)
from .davis_scoring import format_davis_table, read_davis_video_list, score_davis_results
from .fss import FSSMeter
from .region import intersection_union, jaccard
from .ris import RIS_THRESHOLDS, RISMeter
from .vos_meter import VOSMeter
from .youtube import youtube_vos_overall

__all__ = [
    "DEFAULT_BOUND_TH",
    "RIS_THRESHOLDS",
    "FSSMeter",
    "ObjectScores",
    "RISMeter",
    "VOSMeter",
    "boundary_f",
    "boundary_precision_recall",
    "boundary_radius",
    "clean_ground_truth",
    "count_objects",
    "davis_summary",
    "db_statistics",
    "dilate_disk",
    "disk",
    "format_davis_table",
    "frame_scores",
    "intersection_union",
    "jaccard",
    "object_statistics",
    "read_davis_video_list",
    "score_davis_results",
    "seg2bmap",
    "youtube_vos_overall",
]

"""Readers of the standard datasets, in the layouts they are distributed in.

Every reader is a sized, indexable, iterable collection of lazily built records (paths, not
pixels) with a validated ``split`` and an ``on_error`` policy (``"raise"`` or ``"skip"``); see
:mod:`unifusion_sam.data.readers._common` for the exact policy. :func:`materialize` (or
``reader.load(i)`` / ``reader.materialized()``) turns a record into arrays, checking that masks and
label maps agree with their images and objects.
"""

from ._common import VOID_LABEL, Reader, load_video_annotation, load_video_frame, materialize
from .coco import COCO_SPLITS, COCODetection, COCOInstances, InstanceRecord, decode_coco_segmentation
from .davis import DAVIS2017, DAVIS_SPLITS, RefDAVIS17, read_ref_davis_file
from .fss1000 import FSS1000, FSS1000_SPLITS, fss1000_split_classes
from .hf import HFSegmentation
from .objects365 import OBJECTS365_IMAGE_LAYOUTS, OBJECTS365_SPLITS, Objects365, objects365_image_path
from .ovis import OVIS, OVIS_SPLITS, RLELabelMap
from .ref_youtube_vos import REF_YOUTUBE_VOS_SPLITS, RefYouTubeVOS
from .refcoco import REFCOCO_DATASETS, REFCOCO_SPLITS, RefCOCO, load_refs_pickle
from .youtube_vos import LVOS, MOSE, YOUTUBE_VOS_SPLITS, VOSFolder, YouTubeVOS

__all__ = [
    "COCO_SPLITS",
    "DAVIS_SPLITS",
    "FSS1000_SPLITS",
    "OBJECTS365_IMAGE_LAYOUTS",
    "OBJECTS365_SPLITS",
    "OVIS_SPLITS",
    "REFCOCO_DATASETS",
    "REFCOCO_SPLITS",
    "REF_YOUTUBE_VOS_SPLITS",
    "VOID_LABEL",
    "YOUTUBE_VOS_SPLITS",
    "COCODetection",
    "COCOInstances",
    "DAVIS2017",
    "FSS1000",
    "HFSegmentation",
    "InstanceRecord",
    "LVOS",
    "MOSE",
    "OVIS",
    "Objects365",
    "RLELabelMap",
    "RefCOCO",
    "RefDAVIS17",
    "RefYouTubeVOS",
    "Reader",
    "VOSFolder",
    "YouTubeVOS",
    "decode_coco_segmentation",
    "fss1000_split_classes",
    "load_refs_pickle",
    "load_video_annotation",
    "load_video_frame",
    "materialize",
    "objects365_image_path",
    "read_ref_davis_file",
]

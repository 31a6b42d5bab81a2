"""The full UniRef++ model behind the inference interface shared with UniFusion-SAM.

:class:`UniRefSegmenter` is :class:`~unifusion_sam.uniref.modeling.model.UniRefModel` plus the stages of
:class:`~unifusion_sam.interface.ReferenceSegmenter`, so ``predict`` / ``track`` are the same code for
both families. The authors' inference protocol:

- test-time sizes per task (RIS 800 / 1333, few-shot 480 / 768, video 480 / 1333, ``config.*_sizes``);
- RIS / FSS: NMS (IoU ``nms_threshold``, 0.7) over the queries' boxes, then the top-1 query; its mask
  is upsampled x4 (bilinear), thresholded at ``mask_threshold`` and resized (nearest) to the image;
- video: the top-1 query (no NMS); VOS masks come at stride 1 through CondInst's aligned bilinear
  upsampling, RVOS masks are upsampled x4 bilinearly; probabilities are resized to the frame;
- K-shot references are averaged as the authors do: tokens of all shots concatenated, the pooled
  condition the mean of the shots' own pooled features.

Point and box prompts are a SAM-family feature: giving them here is a clear error.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.ops import batched_nms, box_convert

from ..encoders.text import TextFeatures, TextReferenceEncoder
from ..fusion.unifusion import ReferenceTokens
from ..inference.mixin import ReferenceInferenceMixin
from ..interface import TASKS, Decoded, MaskReference, MaskResult, ObjectQuery, PreparedImage, Prompts
from .batch import UniRefBatch
from .checkpoint import UniRefCheckpointMixin
from .losses.criterion import LayerOutput
from .modeling.config import UniRefConfig, load_uniref_preset
from .modeling.layers import aligned_bilinear
from .modeling.model import Detections, FrameFeatures, UniRefModel, layer_outputs
from .transforms import padding_mask, prepare_image, prepare_mask

UNIREF_NO_ONNX = ("the full UniRef++ model has no ONNX exporter: its per-frame decode (the two-stage Deformable-DETR "
                  "transformer with multi-scale deformable sampling, the per-frame top-k query selection and the "
                  "dynamic-convolution mask head) is not split into exportable graphs yet; ONNX export covers "
                  "UniFusion-SAM models. Run UniRef++ with PyTorch")


class UniRefSegmenter(UniRefCheckpointMixin, ReferenceInferenceMixin, UniRefModel):
    """UniRef++ with ``predict`` / ``track`` / ``save_pretrained`` / ``from_pretrained``; see the module docstring."""

    family = "uniref"
    keep_last_seen = True  # the authors' video loop keeps an invisible object's last previous reference
    # encoded frames kept by the predictor (a 480p frame's features are ~50 MB); more frames held make a
    # long video's peak memory creep up (benchmarks/uniref_video.py). To track one clip several times
    # (one track per expression), hold it: ``with model.predictor.cache.holding(len(frames)): ...``
    frame_cache_size = 4
    frame_cache_bytes = 512 << 20

    def encoder_version(self) -> float:
        return 0.0  # nothing trains at inference: cached frame features stay valid

    def export_onnx(self, out_dir, **options):
        """Not available: ONNX export covers UniFusion-SAM models (``unifusion_sam.sam.onnx``)."""
        raise ValueError(UNIREF_NO_ONNX)

    # ------------------------------------------------------------------ images and masks
    def _sizes(self, task: str):
        if task not in TASKS:
            raise ValueError(f"task must be one of {list(TASKS)}, got {task!r}")
        return {"ris": self.config.image_sizes, "fss": self.config.fss_sizes, "video": self.config.video_sizes}[task]

    def prepare_image(self, rgb: np.ndarray, task: str, pad_to: tuple[int, int] | None = None) -> PreparedImage:
        sizes = self._sizes(task)
        return prepare_image(rgb, sizes.min_size, sizes.max_size, self.pixel_mean.view(3), self.pixel_std.view(3),
                             self.config.size_divisibility, pad_to, self.device)

    def prepare_mask(self, mask: np.ndarray, prepared: PreparedImage) -> torch.Tensor:
        return prepare_mask(mask, prepared)

    def encode_frame(self, prepared: PreparedImage) -> FrameFeatures:
        return self.encode_images(prepared.pixels, padding_mask(prepared), [prepared.input_size])

    def encode_masks(self, frames: Sequence[FrameFeatures], prepared: Sequence[PreparedImage], masks: torch.Tensor) -> MaskReference:
        """``R`` masks ``[R, Hp, Wp]`` on one frame (``frames`` of length 1) or one frame each."""
        if len(frames) not in (1, masks.shape[0]):
            raise ValueError(f"{masks.shape[0]} masks for {len(frames)} frames: give one frame or one per mask")
        sizes = {tuple(f.pixels.shape[-2:]) for f in frames}
        if len(sizes) != 1:
            raise ValueError(f"reference frames must share one padded size, got {sorted(sizes)}")
        return self.encode_mask_reference(FrameFeatures.cat(list(frames)), masks.to(self.device))

    # ------------------------------------------------------------------ training
    def forward(self, batch: UniRefBatch) -> tuple[list[LayerOutput], tuple[torch.Tensor, torch.Tensor]]:
        """The training forward of a collated :class:`~unifusion_sam.uniref.batch.UniRefBatch` (``B``
        samples): backbone on the images and their reference frames, each sample's sentence and / or mask
        references fused by UniFusion, the transformer, and every decoder layer's outputs with their SimOTA
        matches (:func:`~unifusion_sam.uniref.modeling.model.layer_outputs`). Detection samples (no references) skip
        fusion. Returns (layers, (proposal logits ``[B, Q, K]``, proposal boxes ``[B, Q, 4]``))."""
        frame = self.encode_images(batch.pixels, batch.padding, batch.image_sizes)
        lang = mask = None
        if batch.ref_owner or any(batch.texts):
            present = [t for t in batch.texts if t]
            text = self.encode_text(present) if present else None
            refs = None
            if batch.ref_owner:
                ref_frame = self.encode_images(batch.ref_pixels, batch.ref_padding, batch.ref_sizes)
                refs = self.encode_mask_reference(ref_frame, batch.ref_masks)
            objects, row = [], 0
            for i, sentence in enumerate(batch.texts):
                words = None
                if sentence:
                    words = TextFeatures(text.words[row : row + 1], text.padding_mask[row : row + 1],
                                         text.pooled[row : row + 1])
                    row += 1
                masks = [refs[j] for j, owner in enumerate(batch.ref_owner) if owner == i]
                objects.append(ObjectQuery(text=words, masks=masks))
            lang, mask = self.references(objects)
        det = self.detect(self.fuse(frame, lang, mask), frame)
        return layer_outputs(self, det, frame, batch.targets, vos=batch.vos)

    # ------------------------------------------------------------------ decoding
    def references(self, objects: Sequence[ObjectQuery]) -> tuple[ReferenceTokens | None, list[ReferenceTokens] | None]:
        """Batch the objects' references: language tokens ``[N, L, C]`` and, per level, mask tokens
        ``[N, T_l, C]`` (objects without one are fully padded and contribute nothing)."""
        n = len(objects)
        lang = None
        texts = [o.text for o in objects]
        if any(t is not None for t in texts):
            present = [t for t in texts if t is not None]
            c, length = present[0].words.shape[-1], max(t.words.shape[1] for t in present)
            ref = present[0].words
            words = ref.new_zeros(n, length, c)
            padding = torch.ones(n, length, dtype=torch.bool, device=ref.device)
            pooled = ref.new_zeros(n, c)
            for i, t in enumerate(texts):
                if t is not None:
                    words[i, : t.words.shape[1]] = t.words[0]
                    padding[i, : t.words.shape[1]] = t.padding_mask[0]
                    pooled[i] = t.pooled[0]
            lang = ReferenceTokens(words, words, padding, pooled)
        mask = None
        if any(o.masks for o in objects):
            rows = []
            for o in objects:
                if o.masks:
                    rows.append(MaskReference([ReferenceTokens.cat(list(lv)) for lv in zip(*(m.levels for m in o.masks))]))
                else:
                    rows.append(None)
            template = next(r for r in rows if r is not None)
            empty = MaskReference([ReferenceTokens(lv.keys[:, :1] * 0, lv.values[:, :1] * 0,
                                                   torch.ones(1, 1, dtype=torch.bool, device=lv.keys.device),
                                                   lv.pooled * 0 if lv.pooled is not None else None)
                                   for lv in template.levels])
            mask = MaskReference.stack([r if r is not None else empty for r in rows]).levels
        return lang, mask

    def decode_objects(self, frame: FrameFeatures, prepared: PreparedImage, objects: Sequence[ObjectQuery], *, task: str,
                       tracking: bool = False, prompts: Prompts | None = None) -> Decoded:
        """All ``N`` objects on one frame in one batched forward -> logits ``[N, 1, Hp, Wp]`` of each
        object's chosen query and its score (sigmoid of its class logit)."""
        if prompts is not None:
            raise ValueError("point and box prompts are a feature of the SAM family; the full UniRef++ model "
                             "segments from sentences and mask references only")
        return self.run_objects(frame, objects, task)[0]

    def run_objects(self, frame: FrameFeatures, objects: Sequence[ObjectQuery], task: str,
                    topk: torch.Tensor | None = None) -> tuple[Decoded, Detections, FrameFeatures]:
        """:meth:`decode_objects` returning also the detections and the per-object frame rows; ``topk``
        ``[N, Q]`` forces the two-stage proposal selection (diagnosis, see ``reference_check``)."""
        self._sizes(task)
        n = len(objects)
        if n == 0:
            raise ValueError("decode_objects needs at least one object")
        rows = frame.expand(n) if len(frame) == 1 else frame
        lang, mask = self.references(objects)
        det = self.detect(self.fuse(rows, lang, mask), rows, topk=topk)
        index, scores = self.choose_queries(det, task)
        features = self.mask_features_of(det, rows)
        logits = self.mask_logits(features, det, rows, index[:, None])  # [N, 1, Hp/4, Wp/4]
        upsampled = []
        for i, o in enumerate(objects):
            vos = task == "video" and o.text is None  # the authors' VOS masks: stride 1 (aligned bilinear)
            upsampled.append(aligned_bilinear(logits[i : i + 1], 4) if vos else
                             F.interpolate(logits[i : i + 1], scale_factor=4, mode="bilinear", align_corners=False))
        rows_i = torch.arange(n, device=self.device)
        decoded = Decoded(torch.cat(upsampled), scores, {"boxes": det.boxes[rows_i, index], "query": index})
        return decoded, det, rows

    def choose_queries(self, det: Detections, task: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Each image's chosen query ``[N]`` and its score ``[N]``: video takes the top-1 score; RIS / FSS
        first run NMS (IoU ``nms_threshold``) over the queries' boxes, as the authors do."""
        probs = det.logits.sigmoid()  # [N, Q, K]
        scores, labels = probs.max(-1)  # [N, Q]
        chosen = []
        for i in range(scores.shape[0]):
            if task == "video":
                chosen.append(int(scores[i].argmax()))
            else:
                keep = batched_nms(box_convert(det.boxes[i], "cxcywh", "xyxy"), scores[i], labels[i],
                                   self.config.nms_threshold)
                chosen.append(int(keep[scores[i][keep].argmax()]))
        index = torch.tensor(chosen, device=scores.device)
        return index, scores[torch.arange(len(chosen), device=scores.device), index]

    def postprocess(self, decoded: Decoded, prepared: PreparedImage, task: str) -> MaskResult:
        """Crop the padding, then to the original size: RIS / FSS masks are thresholded at the network's
        resolution and resized nearest (the authors'), video probabilities are resized bilinearly."""
        h, w = prepared.input_size
        H, W = prepared.original_size
        logits = decoded.logits[:, 0, :h, :w]  # [N, h, w]
        probs = logits.sigmoid()
        boxes = box_convert(decoded.extras["boxes"], "cxcywh", "xyxy") * logits.new_tensor([w, h, w, h])
        boxes = (boxes * logits.new_tensor([W / w, H / h, W / w, H / h]))
        boxes = torch.stack([boxes[:, 0].clamp(0, W), boxes[:, 1].clamp(0, H), boxes[:, 2].clamp(0, W),
                             boxes[:, 3].clamp(0, H)], dim=1)
        resize = (h, w) != (H, W)
        if task == "video":
            full = F.interpolate(probs[:, None], size=(H, W), mode="bilinear", align_corners=False)[:, 0] if resize else probs
            return MaskResult(full, full > self.config.mask_threshold, None, boxes)
        binary = (probs > self.config.mask_threshold).float()
        if resize:
            binary = F.interpolate(binary[:, None], size=(H, W), mode="nearest")[:, 0]
            probs = F.interpolate(probs[:, None], size=(H, W), mode="bilinear", align_corners=False)[:, 0]
            logits = F.interpolate(logits[:, None], size=(H, W), mode="bilinear", align_corners=False)[:, 0]
        return MaskResult(probs, binary > 0.5, logits, boxes)


def build_uniref(config: UniRefConfig | str | None = None, text_encoder: TextReferenceEncoder | None = None, **overrides):
    """A :class:`~unifusion_sam.uniref.segmenter.UniRefSegmenter` from a config or preset name
    (``"uniref-r50"``, ``"uniref-swin-l"``, ``"uniref-small"``; default ``uniref-small``), random
    weights, in eval mode. ``overrides`` replace config fields (nested sections take dicts)."""
    if config is None:
        config = "uniref-small"
    if isinstance(config, str):
        config = load_uniref_preset(config)
    elif not isinstance(config, UniRefConfig):
        raise TypeError(f"config must be a UniRefConfig or a preset name, got {type(config).__name__}")
    if overrides:
        data = config.to_dict()
        for key, value in overrides.items():
            if key not in data:
                raise ValueError(f"unknown UniRef++ option {key!r}; valid options: {sorted(data)}")
            data[key] = {**data[key], **value} if isinstance(value, dict) and isinstance(data[key], dict) else value
        config = UniRefConfig.from_dict(data)
    return UniRefSegmenter(config, text_encoder=text_encoder).eval()

"""The full UniRef++ network: backbone, UniFusion on four levels, two-stage Deformable DETR, dynamic masks.

Stateless, with named stages (shapes for ``B`` images of padded size ``Hp x Wp``, ``C = hidden_dim``):

- :meth:`UniRefModel.encode_images`: normalised padded pixels -> :class:`FrameFeatures` (input
  projections of res3 / res4 / res5 and the stride-64 level, their padding masks and sine encodings,
  and the stride-4 backbone feature for the mask branch);
- :meth:`encode_text` (the shared text encoder) and :meth:`encode_mask_reference` (the shared mask
  encoder on a reference frame's four levels: keys = that frame's projected features, values = mask
  features, pooled condition = the mean of its valid keys);
- :meth:`fuse`: the one shared UniFusion on every level, language and mask branches summed;
- :meth:`detect`: the transformer and the class / box / controller heads of the last decoder layer;
- :meth:`mask_logits`: the dynamic mask head on stride-4 mask features.

:class:`~unifusion_sam.uniref.segmenter.UniRefSegmenter` adds the inference interface shared with
UniFusion-SAM; :func:`~unifusion_sam.uniref.convert.convert_authors_state_dict` loads the authors'
checkpoints.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ...encoders.mask import MaskReferenceEncoder
from ...encoders.text import TextFeatures, TextReferenceEncoder
from ...fusion.unifusion import ReferenceTokens, UniFusion
from ...interface import MaskReference
from .backbones import build_backbone
from .config import UniRefConfig
from .heads import MaskFeatures, dynamic_masks
from .layers import MLP, aligned_bilinear, inverse_sigmoid, resize_padding, sine_position_embedding
from .transformer import DeformableTransformer, TransformerOutput


@dataclass
class FrameFeatures:
    """Images through the backbone: ``pixels`` ``[B, 3, Hp, Wp]`` (normalised, padded), ``srcs`` / ``pos``
    four ``[B, C, h_l, w_l]`` maps (strides 8, 16, 32, 64), ``paddings`` four ``[B, h_l, w_l]`` bool,
    ``res2`` ``[B, C_res2, Hp/4, Wp/4]``, ``image_sizes`` the unpadded (h, w) of each image."""

    pixels: torch.Tensor
    srcs: list[torch.Tensor]
    paddings: list[torch.Tensor]
    pos: list[torch.Tensor]
    res2: torch.Tensor
    image_sizes: list[tuple[int, int]]

    def __len__(self) -> int:
        return int(self.pixels.shape[0])

    def expand(self, n: int) -> FrameFeatures:
        """The one image repeated ``n`` times, as views (no copies): one row per object of a frame."""
        if len(self) != 1:
            raise ValueError(f"expand needs the features of one image, got {len(self)}")
        return FrameFeatures(self.pixels.expand(n, -1, -1, -1), [s.expand(n, -1, -1, -1) for s in self.srcs],
                             [p.expand(n, -1, -1) for p in self.paddings], [p.expand(n, -1, -1, -1) for p in self.pos],
                             self.res2.expand(n, -1, -1, -1), self.image_sizes * n)

    @classmethod
    def cat(cls, frames: list[FrameFeatures]) -> FrameFeatures:
        if len(frames) == 1:
            return frames[0]
        return cls(torch.cat([f.pixels for f in frames]), [torch.cat(s) for s in zip(*(f.srcs for f in frames))],
                   [torch.cat(p) for p in zip(*(f.paddings for f in frames))],
                   [torch.cat(p) for p in zip(*(f.pos for f in frames))], torch.cat([f.res2 for f in frames]),
                   [s for f in frames for s in f.image_sizes])


@dataclass
class Detections:
    """Last-decoder-layer outputs for ``B`` fused images: ``logits`` ``[B, Q, K]``, ``boxes`` ``[B, Q, 4]``
    (sigmoid cxcywh of the unpadded image), ``reference_points`` ``[B, Q, 2]`` (the last layer's input
    box centres), ``params`` ``[B, Q, P]`` dynamic mask parameters, ``ious`` ``[B, Q, 1]`` or ``None``;
    ``transformer`` the full :class:`TransformerOutput` (every layer, memory, proposals); ``srcs`` the
    fused levels the transformer received."""

    logits: torch.Tensor
    boxes: torch.Tensor
    reference_points: torch.Tensor
    params: torch.Tensor
    ious: torch.Tensor | None
    transformer: TransformerOutput
    srcs: list[torch.Tensor]


class UniRefModel(nn.Module):
    """The full UniRef++ network (see the module docstring). Build it with
    :func:`~unifusion_sam.uniref.segmenter.build_uniref`."""

    def __init__(self, config: UniRefConfig, text_encoder: TextReferenceEncoder | None = None) -> None:
        super().__init__()
        self.config = config
        c = config.hidden_dim
        self.backbone = build_backbone(config.backbone)
        channels = self.backbone.channels
        proj = [nn.Sequential(nn.Conv2d(ch, c, kernel_size=1), nn.GroupNorm(32, c)) for ch in channels[1:]]
        proj.append(nn.Sequential(nn.Conv2d(channels[-1], c, kernel_size=3, stride=2, padding=1), nn.GroupNorm(32, c)))
        self.input_proj = nn.ModuleList(proj)
        self.transformer = DeformableTransformer(
            c, config.num_heads, config.enc_layers, config.dec_layers, config.ffn_dim, config.dropout, 4,
            config.enc_points, config.dec_points, config.num_queries, config.deformable_backend)
        self.query_embed = nn.Embedding(config.num_queries, c)
        heads = config.dec_layers + 1  # one per decoder layer + the two-stage proposal head (last)
        self.class_embed = nn.ModuleList(nn.Linear(c, config.num_classes) for _ in range(heads))
        self.bbox_embed = nn.ModuleList(MLP(c, c, 4, 3) for _ in range(heads))
        self.iou_head = nn.ModuleList(nn.Linear(c, 1) for _ in range(config.dec_layers)) if config.iou_branch else None
        self.controller = MLP(c, c, config.num_dynamic_params, 3)
        self.mask_features = MaskFeatures(c, channels[0], config.mask_dim)
        self.fusion = UniFusion(config.fusion)
        self.mask_encoder = MaskReferenceEncoder(config.mask)
        self.text_encoder = None
        if config.text is not None:
            self.text_encoder = text_encoder if text_encoder is not None else TextReferenceEncoder(config.text)
        self.register_buffer("pixel_mean", torch.tensor(config.pixel_mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(config.pixel_std).view(1, 3, 1, 1), persistent=False)
        self._reset_heads()

    def _reset_heads(self) -> None:
        """Deformable DETR's head initialisation (prior 0.01 class bias, zero last box layer)."""
        bias = -math.log((1 - 0.01) / 0.01)
        for head in self.class_embed:
            nn.init.constant_(head.bias, bias)
        for head in self.bbox_embed:
            nn.init.zeros_(head.layers[-1].weight)
            nn.init.zeros_(head.layers[-1].bias)
        if self.iou_head is not None:
            for head in self.iou_head:
                nn.init.constant_(head.bias, bias)
        for proj in self.input_proj:
            nn.init.xavier_uniform_(proj[0].weight)
            nn.init.zeros_(proj[0].bias)
        for layer in self.controller.layers:
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)

    @property
    def device(self) -> torch.device:
        return self.query_embed.weight.device

    def train(self, mode: bool = True) -> UniRefModel:
        super().train(mode)
        if self.text_encoder is not None:
            self.text_encoder.train(mode)
        return self

    # ------------------------------------------------------------------ stages
    def encode_images(self, pixels: torch.Tensor, padding: torch.Tensor, image_sizes: list[tuple[int, int]]) -> FrameFeatures:
        """``pixels`` ``[B, 3, Hp, Wp]`` normalised and zero-padded (Hp, Wp multiples of 32), ``padding``
        ``[B, Hp, Wp]`` bool (True = pad) -> :class:`FrameFeatures`."""
        if pixels.dim() != 4 or pixels.shape[1] != 3:
            raise ValueError(f"pixels must be [B, 3, H, W], got {tuple(pixels.shape)}")
        div = self.config.size_divisibility
        if pixels.shape[-2] % div or pixels.shape[-1] % div:
            raise ValueError(f"padded size must be a multiple of {div}, got {tuple(pixels.shape[-2:])}")
        feats = self.backbone(pixels)
        srcs, paddings, pos = [], [], []
        for level, feat in enumerate(feats[1:]):
            srcs.append(self.input_proj[level](feat))
            paddings.append(resize_padding(padding, feat.shape[-2:]))
        srcs.append(self.input_proj[3](feats[-1]))
        paddings.append(resize_padding(paddings[0], srcs[-1].shape[-2:]))  # the authors resize the stride-8 mask
        num_feats = self.config.hidden_dim // 2
        pos = [sine_position_embedding(p, num_feats).to(s.dtype) for p, s in zip(paddings, srcs)]
        return FrameFeatures(pixels, srcs, paddings, pos, feats[0], list(image_sizes))

    def encode_text(self, texts: list[str]) -> TextFeatures:
        """Sentences -> words ``[B, L, C]`` (resizer output), padding ``[B, L]``, pooled ``[B, C]``."""
        if self.text_encoder is None:
            raise ValueError("this model has no text encoder (config.text is None); it cannot take sentences")
        return self.text_encoder(texts)

    def encode_mask_reference(self, frame: FrameFeatures, masks: torch.Tensor) -> MaskReference:
        """``R`` masks ``[R, Hp, Wp]`` (0/1, zero in the padding) on the ``R`` images of ``frame`` (or on
        its one image) -> per level keys / values ``[R, h_l * w_l, C]``, padding and pooled ``[R, C]``."""
        r = masks.shape[0]
        if len(frame) not in (1, r):
            raise ValueError(f"{r} masks for {len(frame)} reference images: give one image or one per mask")
        if len(frame) != r:
            frame = frame.expand(r)
        if masks.shape[-2:] != frame.pixels.shape[-2:]:
            raise ValueError(f"masks must be [R, {frame.pixels.shape[-2]}, {frame.pixels.shape[-1]}] (the padded "
                             f"image size), got {tuple(masks.shape)}")
        values = self.mask_encoder(frame.pixels, masks.to(frame.pixels.dtype), frame.srcs, normalized=True)
        levels = []
        for src, pad, value in zip(frame.srcs, frame.paddings, values):
            keys = src.flatten(2).transpose(1, 2)  # [R, h*w, C]
            pad = pad.flatten(1)
            valid = (~pad).to(keys.dtype)[..., None]
            pooled = (keys * valid).sum(1) / valid.sum(1)
            levels.append(ReferenceTokens(keys, value.flatten(2).transpose(1, 2), pad if pad.any() else None, pooled))
        return MaskReference(levels)

    def fuse(self, frame: FrameFeatures, lang: ReferenceTokens | None, mask: list[ReferenceTokens] | None) -> list[torch.Tensor]:
        """UniFusion on each of the four levels of ``frame`` (``B`` rows; ``lang`` ``[B, L, C]`` tokens,
        ``mask`` one :class:`ReferenceTokens` per level) -> fused ``[B, C, h_l, w_l]`` maps."""
        if lang is None and mask is None:
            return list(frame.srcs)
        return [self.fusion(src, lang=lang, mask=None if mask is None else mask[level])
                for level, src in enumerate(frame.srcs)]

    def detect(self, srcs: list[torch.Tensor], frame: FrameFeatures, topk: torch.Tensor | None = None) -> Detections:
        """The transformer on fused ``srcs`` and the heads of the last decoder layer (``topk`` ``[B, Q]``
        forces the proposal selection)."""
        out = self.transformer(srcs, frame.paddings, frame.pos, self.query_embed.weight, self.class_embed,
                               self.bbox_embed, topk=topk)
        last = out.hs.shape[0] - 1
        before = out.inter_references[last - 1] if last > 0 else out.init_reference
        logits = self.class_embed[last](out.hs[last])
        boxes = out.inter_references[last]  # = sigmoid(bbox_embed(hs) + inverse_sigmoid(before)), computed once
        ious = self.iou_head[last](out.hs[last]) if self.iou_head is not None else None
        params = self.controller(out.hs[last])
        return Detections(logits, boxes, before[..., :2], params, ious, out, srcs)

    def mask_features_of(self, det: Detections, frame: FrameFeatures) -> torch.Tensor:
        """Stride-4 mask features ``[B, mask_dim, Hp/4, Wp/4]`` from the encoder memory and ``res2`` (when the
        rows are one frame repeated, its ``res2`` projection runs once and broadcasts)."""
        memory, shapes = det.transformer.memory, det.transformer.shapes
        b, _, c = memory.shape
        levels, start = [], 0
        for h, w in shapes[:3]:
            levels.append(memory[:, start : start + h * w].transpose(1, 2).reshape(b, c, h, w))
            start += h * w
        res2 = frame.res2
        if res2.shape[0] > 1 and res2.stride(0) == 0:  # FrameFeatures.expand: the same image in every row
            res2 = res2[:1]
        return self.mask_features(levels, res2)

    def mask_logits(self, features: torch.Tensor, det: Detections, frame: FrameFeatures,
                    queries: torch.Tensor | None = None) -> torch.Tensor:
        """Dynamic-head mask logits at stride 4: every query ``[B, Q, Hp/4, Wp/4]``, or the queries
        ``queries`` ``[B, k]`` picks -> ``[B, k, Hp/4, Wp/4]``."""
        b, q = det.params.shape[:2]
        if queries is None:
            queries = torch.arange(q, device=det.params.device).expand(b, q)
        k = queries.shape[1]
        rows = torch.arange(b, device=queries.device)[:, None].expand(b, k)
        scale = torch.tensor([[w, h] for h, w in frame.image_sizes], dtype=features.dtype, device=features.device)
        centres = det.reference_points[rows, queries] * scale[:, None, :]  # [B, k, 2] pixels
        logits = dynamic_masks(features, rows.reshape(-1), centres.reshape(-1, 2), det.params[rows, queries].reshape(b * k, -1),
                               self.config.dynamic_channels)
        return logits.view(b, k, *logits.shape[-2:])


def layer_outputs(model: UniRefModel, det: Detections, frame: FrameFeatures, targets, vos: bool = False):
    """Training outputs of every decoder layer, as the authors' ``coco_forward`` makes them: class logits,
    boxes (refined from the previous layer's box, gradients flowing through it: look forward twice),
    SimOTA matches, and the mask logits of the matched queries only (``[M, h, w]``: stride 4, or stride 1
    through aligned bilinear upsampling for VOS). Returns (layers, (proposal logits, proposal boxes))."""
    from ..losses.criterion import LayerOutput
    from ..losses.matcher import simota_match

    out = det.transformer
    features = model.mask_features_of(det, frame)
    scale = torch.tensor([[w, h] for h, w in frame.image_sizes], dtype=features.dtype, device=features.device)
    layers = []
    for level in range(out.hs.shape[0]):
        hs = out.hs[level]
        reference = out.init_reference if level == 0 else out.inter_references[level - 1]
        ref = inverse_sigmoid(reference)
        logits = model.class_embed[level](hs)
        boxes = (model.bbox_embed[level](hs) + ref).sigmoid()
        params = model.controller(hs)
        indices = [simota_match(logits[i], boxes[i], t.labels, t.boxes) for i, t in enumerate(targets)]
        owner = torch.cat([torch.full_like(q, i) for i, (q, _) in enumerate(indices)])
        query = torch.cat([q for q, _ in indices])
        centres = ref.sigmoid()[owner, query, :2] * scale[owner]
        masks = dynamic_masks(features, owner, centres, params[owner, query], model.config.dynamic_channels)
        if vos:
            masks = aligned_bilinear(masks[:, None], 4)[:, 0]
        layers.append(LayerOutput(logits, boxes, indices, masks))
    return layers, (out.enc_class, out.enc_coord_unact.sigmoid())

"""UniFusion-SAM: a frozen SAM with reference encoders, UniFusion on its image embedding, and its mask decoder.

The network is stateless and has named stages (``encode_image``, ``encode_text``,
``encode_mask_reference``, ``fuse``, ``decode``) plus a batched training ``forward``; it implements
:class:`~unifusion_sam.interface.ReferenceSegmenter`, so stateful inference (image caches, video
state) is the shared :class:`~unifusion_sam.inference.predictor.ReferencePredictor` and video session.
Wrapping never copies SAM's weights: the backend uses the model's own modules. The same network wraps
SAM 1 and SAM 2; what differs (SAM 2's high-resolution decoder inputs, its preprocessing and object
score) stays in the backend (:mod:`unifusion_sam.sam.backends`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ...encoders.mask import MaskReferenceEncoder
from ...encoders.text import TextFeatures, TextReferenceEncoder
from ...fusion.unifusion import ReferenceTokens, UniFusion
from ...inference.mixin import ReferenceInferenceMixin
from ...interface import Decoded, MaskReference, MaskResult, ObjectQuery, PreparedImage, Prompts
from ..backends import make_backend
from ..references import References, group_references, mean_by_owner, object_masks, object_text, stack_text
from .batch import SamBatch, SamOutput
from .checkpoint import CheckpointMixin
from .config import UniFusionSamConfig
from .grounding import TextPointHead, positive_point_embedding


class UniFusionSam(CheckpointMixin, ReferenceInferenceMixin, nn.Module):
    """UniFusion-SAM network. Build it with :func:`wrap_sam`.

    Mask references are :class:`~unifusion_sam.interface.MaskReference` with one level (keys = the
    reference's SAM embedding, values = mask features, ``[R, h*w, C]``) and a ``prototype`` ``[R, C]``
    (mask-weighted mean of the value features, the plain mean when the mask is empty) that becomes the
    extra decoder token.
    """

    family = "sam"

    def __init__(self, sam: nn.Module, config: UniFusionSamConfig, text_encoder: TextReferenceEncoder | None = None):
        super().__init__()
        self.config = config
        self.sam = sam
        self.backend = make_backend(sam)
        if self.backend.embedding_size[0] * 16 != self.backend.image_size:
            raise ValueError(f"unexpected SAM geometry: input {self.backend.image_size}, grid {self.backend.embedding_size}")
        c = config.fusion.dim
        self.fusion = UniFusion(config.fusion)
        self.mask_encoder = MaskReferenceEncoder(config.mask)
        self.text_encoder = None
        if config.text is not None:
            self.text_encoder = text_encoder if text_encoder is not None else TextReferenceEncoder(config.text)
        self.text_token = nn.Linear(c, 256) if config.text is not None else None
        self.mask_token = nn.Linear(c, 256)
        self.text_point = None
        if config.text_point:  # starts from SAM's own positive-point label embedding
            self.text_point = TextPointHead(c, label=positive_point_embedding(self.backend.prompt_encoder, c))
        self._predictor = None
        self.transform = self.backend.transform()
        from .lora import apply_lora  # local import: peft is only needed when LoRA is on

        self.lora_enabled = config.lora.enabled
        if self.lora_enabled:
            apply_lora(self.backend, config.lora)
        self.to(next(sam.parameters()).device)  # the new adapter parts follow the SAM's device
        self.set_trainable()

    # ------------------------------------------------------------------ parameters and modes
    def set_trainable(self) -> None:
        """Freeze the image and prompt encoders; adapters (and the mask decoder per config) train. Decoder
        parts that belong to encoding an image (SAM 2's ``conv_s0`` / ``conv_s1``) stay frozen."""
        self.sam.requires_grad_(False)
        for name, p in self.backend.image_encoder.named_parameters():
            p.requires_grad_(self.lora_enabled and "lora_" in name)
        self.backend.mask_decoder.requires_grad_(self.config.train_mask_decoder)
        for part in self.backend.encoder_side_decoder_parts:
            getattr(self.backend.mask_decoder, part).requires_grad_(False)
        for module in (self.fusion, self.mask_encoder, self.mask_token, self.text_token, self.text_point):
            if module is not None:
                module.requires_grad_(True)
        if self.text_encoder is not None:
            self.text_encoder.proj.requires_grad_(True)
            if self.text_encoder.frozen or not self.config.text.trainable:  # a passed-in encoder follows the config
                self.text_encoder.freeze()
            else:
                self.text_encoder.backbone.requires_grad_(True)

    def train(self, mode: bool = True) -> UniFusionSam:
        super().train(mode)
        self.backend.image_encoder.eval()  # frozen: SAM's encoders always run in inference mode
        self.backend.prompt_encoder.eval()
        if self.text_encoder is not None:
            self.text_encoder.train(mode)
        return self

    @property
    def device(self) -> torch.device:
        return self.mask_token.weight.device

    def encoder_version(self) -> float:
        """A fingerprint of the trainable image-encoder weights (LoRA): cached embeddings are only valid
        for the version they were computed with. Constant (0.0) when the encoder is fully frozen."""
        if not self.lora_enabled:
            return 0.0
        with torch.no_grad():
            return float(sum(p.double().abs().sum() + p.double().sum() for n, p in
                             self.backend.image_encoder.named_parameters() if "lora_" in n))

    @property
    def image_size(self) -> int:
        return self.backend.image_size

    def num_parameters(self) -> tuple[int, int]:
        """(trainable, total) parameter counts, counting SAM's frozen weights in the total."""
        params = {id(p): p for p in self.parameters()}
        total = sum(p.numel() for p in params.values())
        trainable = sum(p.numel() for p in params.values() if p.requires_grad)
        return trainable, total

    def print_trainable_parameters(self) -> None:
        """Print ``trainable params: X || all params: Y || trainable%: Z`` like peft."""
        trainable, total = self.num_parameters()
        print(f"trainable params: {trainable:,d} || all params: {total:,d} || trainable%: {100 * trainable / total:.4f}")

    def export_onnx(self, out_dir, **options):
        """Write this model as ONNX graphs to ``out_dir`` (see :func:`unifusion_sam.sam.onnx.export.export_onnx`
        for ``opset``, ``fp16``, ``int8``, ``overwrite``); load them with ``unifusion_sam.from_onnx``."""
        from ..onnx.export import export_onnx

        return export_onnx(self, out_dir, **options)

    # ------------------------------------------------------------------ named stages
    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        """``[B, 3, S, S]`` normalised, padded images -> frame features ``[B, D, h, w]`` (frozen encoder): SAM's
        image embedding (D = 256), for SAM 2 with the decoder's high-resolution maps folded in
        (D = ``backend.feature_channels``; see :mod:`unifusion_sam.sam.backends.sam2`). Every stage below takes these."""
        if pixels.dim() != 4 or pixels.shape[1:] != (3, self.image_size, self.image_size):
            raise ValueError(f"pixels must be [B, 3, {self.image_size}, {self.image_size}], got {tuple(pixels.shape)}")
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.lora_enabled):
            return self.backend.encode_image(pixels)

    def encode_text(self, texts: list[str]) -> TextFeatures:
        """Sentences -> word features ``[B, L, C]``, padding mask ``[B, L]``, pooled ``[B, C]``."""
        if self.text_encoder is None:
            raise ValueError("this adapter has no text encoder (config.text is None); it cannot take sentences")
        return self.text_encoder(texts)

    def encode_mask_reference(
        self, units: torch.Tensor, masks: torch.Tensor, embeddings: torch.Tensor
    ) -> MaskReference:
        """References ``units`` ``[R, 3, S, S]`` in [0, 1], ``masks`` ``[R, S, S]`` binary, and their frame
        features ``[R, D, h, w]`` (:meth:`encode_image`) -> tokens (keys = the SAM embeddings, values = mask features)."""
        embeddings = self.backend.image_embedding(embeddings)  # [R, 256, h, w]
        if self.config.reference_pool > 1:  # tokens on the pooled grid [R, 256, h / p, w / p]
            embeddings = F.avg_pool2d(embeddings, self.config.reference_pool)
        (values,) = self.mask_encoder(units, masks, [embeddings])  # [R, C, h, w]
        grid = (int(values.shape[-2]), int(values.shape[-1]))
        small = F.adaptive_avg_pool2d(masks.to(values.dtype)[:, None], grid)  # [R, 1, h, w]
        area = small.sum(dim=(2, 3))  # [R, 1]
        weighted = (values * small).sum(dim=(2, 3)) / area.clamp(min=1e-6)
        prototype = torch.where(area > 1e-6, weighted, values.mean(dim=(2, 3)))
        return MaskReference([ReferenceTokens.from_maps(embeddings, values)], prototype)

    def fuse(
        self, embeddings: torch.Tensor, lang: ReferenceTokens | None, mask: ReferenceTokens | None,
        tracking: torch.Tensor | None = None, pe: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """UniFusion on the image embedding ``[B, 256, h, w]``. For the samples whose mask references
        are earlier frames of their video (``tracking`` ``[B]`` bool), SAM's positional encoding of the
        grid (``pe`` ``[1, 256, h, w]``, :meth:`SamBackend.dense_pe` when not given) goes along for the
        locality prior (``fusion.mask_pos_logit``); the others get zeros, which leave their attention
        exactly as without the prior. With ``config.reference_pool`` p > 1 the references' keys get the
        encoding average-pooled to their grid ``[., 256, h / p, w / p]``."""
        pos = lang_pos = None
        wants_lang_pos = lang is not None and self.fusion.lang_pos_proj is not None
        wants_pos = mask is not None and self.fusion.pos_proj is not None
        if wants_lang_pos or wants_pos:
            pe = (self.backend.dense_pe() if pe is None else pe).to(embeddings.dtype)  # computed once
        if wants_lang_pos:
            lang_pos = pe  # [1, ...]: every sentence's queries know where they are (fusion.lang_pos)
        if wants_pos:
            if tracking is None or not bool(tracking.any()):
                pos = torch.zeros_like(pe)
            elif bool(tracking.all()):
                pos = pe  # [1, ...]: projected once for all samples (every object of a video frame)
            else:
                pos = pe * tracking.to(device=pe.device, dtype=pe.dtype)[:, None, None, None]
        key_pos = None
        if pos is not None and self.config.reference_pool > 1:  # the references' (pooled) grid
            key_pos = F.avg_pool2d(pos, self.config.reference_pool)
        return self.fusion(embeddings, lang=lang, mask=mask, pos=pos, lang_pos=lang_pos, key_pos=key_pos)

    def reference_token(
        self, text_pooled: torch.Tensor | None, has_text: torch.Tensor | None,
        mask_pooled: torch.Tensor | None, has_mask: torch.Tensor | None,
    ) -> torch.Tensor | None:
        """The extra sparse prompt token ``[B, 256]`` from the pooled references (``None`` if there are none)."""
        token = None
        if text_pooled is not None and self.text_token is not None:
            token = self.text_token(text_pooled) * has_text[:, None].to(text_pooled.dtype)
        if mask_pooled is not None:
            m = self.mask_token(mask_pooled) * has_mask[:, None].to(mask_pooled.dtype)
            token = m if token is None else token + m
        return token

    def decode(
        self,
        embeddings: torch.Tensor,
        ref_token: torch.Tensor | None = None,
        has_ref: torch.Tensor | None = None,
        point_coords: torch.Tensor | None = None,
        point_labels: torch.Tensor | None = None,
        boxes: torch.Tensor | None = None,
        pe: torch.Tensor | None = None,
        extras=None,
        point_token: torch.Tensor | None = None,
        has_point: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """SAM's decoder on (fused) embeddings ``[B, 256, h, w]``; the reference token ``[B, 256]`` is
        appended to the sparse prompts of the samples where ``has_ref`` ``[B]`` is True, and the text point
        ``point_token`` ``[B, 256]`` to those where ``has_point`` is. ``pe``: SAM's grid encoding
        ``[1, 256, h, w]`` if the caller has it; ``extras``: ``backend.decoder_inputs`` of the frame
        features (SAM 2's high-resolution maps, passed through unchanged). Returns logits
        ``[B, 1, 4h, 4w]`` and object scores ``[B]``."""
        b = embeddings.shape[0]
        if pe is None:
            pe = self.backend.dense_pe()
        with torch.no_grad():  # the prompt encoder is frozen and has nothing to learn from these prompts
            sparse, dense = self.backend.embed_prompts(point_coords, point_labels, boxes, b)
        if ref_token is None and point_token is None:
            logits, score = self.backend.decode(embeddings, sparse, dense, pe, extras)
            return logits, score[:, 0]
        extra = [(t, flags) for t, flags in ((ref_token, has_ref), (point_token, has_point)) if t is not None]
        extra = [(t, torch.ones(b, dtype=torch.bool, device=embeddings.device) if f is None else f) for t, f in extra]
        # samples decode in groups that append the same extra tokens (with none: SAM's own prediction)
        code = sum(f.long() << k for k, (_, f) in enumerate(extra))
        logits = embeddings.new_zeros(b, 1, *(4 * s for s in embeddings.shape[-2:]))
        scores = embeddings.new_zeros(b)
        for value in code.unique().tolist():
            idx = torch.nonzero(code == value).flatten()
            sp = torch.cat([sparse[idx]] + [t[idx, None, :].to(sparse.dtype) for k, (t, _) in enumerate(extra)
                                             if value >> k & 1], dim=1)
            group = extras if idx.numel() == b else self.backend.take(extras, idx)
            # a sample with a reference gets the single-mask output the adapter trains (no SAM 2 fallback)
            lg, score = self.backend.decode(embeddings[idx], sp, dense[idx], pe, group, fallback=value == 0)
            logits = logits.index_copy(0, idx, lg)
            scores = scores.index_copy(0, idx, score[:, 0])
        return logits, scores

    def text_references(self, texts: list[str | None]) -> References:
        """Encode the sentences of a batch (``None`` = no sentence) into padded language references."""
        rows = [i for i, t in enumerate(texts) if t is not None]
        if not rows:
            return References()
        feats = self.encode_text([texts[i] for i in rows])
        words: list[torch.Tensor | None] = [None] * len(texts)
        pooled: list[torch.Tensor | None] = [None] * len(texts)
        for j, i in enumerate(rows):
            valid = ~feats.padding_mask[j]
            words[i], pooled[i] = feats.words[j][valid], feats.pooled[j]
        return stack_text(words, pooled)

    def mask_references(self, ref: MaskReference, owner: torch.Tensor, batch: int) -> References:
        """Group encoded mask references by owning sample: tokens ``[B, K*h*w, C]`` and prototypes ``[B, C]``
        (with ``ref.local``, each token says whether it takes the locality prior)."""
        mask = group_references(ref.levels[0].keys, ref.levels[0].values, owner, batch, ref.local)
        pooled, has = mean_by_owner(ref.prototype, owner, batch)
        return References(mask=mask, mask_pooled=pooled, has_mask=has)

    def segment(
        self,
        embeddings: torch.Tensor,
        refs: References,
        point_coords: torch.Tensor | None = None,
        point_labels: torch.Tensor | None = None,
        boxes: torch.Tensor | None = None,
    ) -> SamOutput:
        """Fuse the references into the image embedding of the frame features ``[B, D, h, w]`` and decode
        masks and scores (SAM 2's high-resolution maps go to the decoder as they are)."""
        pe = self.backend.dense_pe()  # [1, 256, h, w], once for fusion and every decoder group
        extras = self.backend.decoder_inputs(embeddings)
        fused = self.fuse(self.backend.image_embedding(embeddings), refs.lang, refs.mask, refs.tracking, pe)
        token = self.reference_token(refs.text_pooled, refs.has_text, refs.mask_pooled, refs.has_mask)
        point = heat = None
        if self.text_point is not None and refs.text_pooled is not None:
            point, heat = self.text_point(fused, pe.to(fused.dtype), refs.text_pooled)
        logits, scores = self.decode(fused, token, refs.has_any(), point_coords, point_labels, boxes, pe, extras,
                                     point, refs.has_text if point is not None else None)
        return SamOutput(logits=logits, scores=scores, point_heat=heat, has_point=refs.has_text if heat is not None else None)

    # ------------------------------------------------------------------ training forward
    def forward(self, batch: SamBatch) -> SamOutput:
        """Mask logits and object scores for a batch of mixed RIS / FSS / VOS / RVOS samples."""
        batch.validate()
        b = batch.batch_size
        emb = batch.embeddings if batch.embeddings is not None else self.encode_image(batch.pixels)
        refs = self.text_references(batch.texts)
        if batch.num_refs:
            ref_emb = batch.ref_embeddings
            if ref_emb is None:
                ref_emb = self.encode_image(batch.ref_pixels)
            encoded = self.encode_mask_reference(batch.ref_units, batch.ref_masks, ref_emb)
            encoded.local = batch.ref_local
            masks = self.mask_references(encoded, batch.ref_owner.to(emb.device), b)
            refs.mask, refs.mask_pooled, refs.has_mask = masks.mask, masks.mask_pooled, masks.has_mask
            refs.tracking = batch.tracking
        return self.segment(emb, refs, batch.point_coords, batch.point_labels, batch.boxes)

    # ------------------------------------------------------------------ the shared inference interface
    def prepare_image(self, rgb: np.ndarray, task: str = "ris", pad_to: tuple[int, int] | None = None) -> PreparedImage:
        """SAM's resize-longest-side, normalise and square padding (the same for every task)."""
        return self.transform.image(rgb, self.device)

    def prepare_mask(self, mask: np.ndarray, prepared: PreparedImage) -> torch.Tensor:
        """``H x W`` bool at the prepared image's original size -> ``[S, S]`` float 0/1."""
        return self.transform.mask(mask, self.device)[0]

    def encode_frame(self, prepared: PreparedImage) -> torch.Tensor:
        """The frozen image encoder: frame features ``[1, D, h, w]`` (:meth:`encode_image`)."""
        return self.encode_image(prepared.pixels)

    def encode_masks(self, frames: Sequence[torch.Tensor], prepared: Sequence[PreparedImage], masks: torch.Tensor) -> MaskReference:
        """``R`` masks ``[R, S, S]`` on one encoded frame (broadcast) or on one frame each."""
        r = masks.shape[0]
        if len(frames) not in (1, r) or len(prepared) != len(frames):
            raise ValueError(f"{r} masks for {len(frames)} frames: give one frame or one per mask")
        units = torch.cat([p.unit for p in prepared]).expand(r, -1, -1, -1)
        embeddings = torch.cat(list(frames)).expand(r, -1, -1, -1)
        return self.encode_mask_reference(units, masks, embeddings)

    def decode_objects(self, frame: torch.Tensor, prepared: PreparedImage, objects: Sequence[ObjectQuery], *,
                       task: str = "ris", tracking: bool = False, prompts: Prompts | None = None) -> Decoded:
        """All objects (or, with prompts only, one sample) on one frame ``[1, D, h, w]`` in one batched
        forward: SAM low-res logits ``[N, 1, 4h, 4w]`` and object scores ``[N]``."""
        n = max(len(objects), 1)
        refs = object_text(objects)
        found = object_masks(objects, tracking, frame.device)
        if found is not None:
            encoded, owner, tracking_rows = found
            if bool(encoded.local.all()) or not bool(encoded.local.any()):  # one kind only: every query alike
                encoded.local = None
            masks = self.mask_references(encoded, owner, n)
            refs.mask, refs.mask_pooled, refs.has_mask = masks.mask, masks.mask_pooled, masks.has_mask
            refs.tracking = tracking_rows
        coords = labels = boxes = None
        if prompts is not None:
            size = prepared.original_size
            if prompts.points is not None:
                coords = torch.as_tensor(self.transform.coords(prompts.points, size), dtype=torch.float,
                                         device=self.device)[None].expand(n, -1, -1)
                labels = torch.as_tensor(prompts.labels, dtype=torch.int, device=self.device)[None].expand(n, -1)
            if prompts.box is not None:
                boxes = torch.as_tensor(self.transform.boxes(prompts.box[None], size), dtype=torch.float,
                                        device=self.device).expand(n, -1)
        out = self.segment(frame.expand(n, -1, -1, -1), refs, coords, labels, boxes)
        return Decoded(out.logits, out.scores)

    def postprocess(self, decoded: Decoded, prepared: PreparedImage, task: str = "ris") -> MaskResult:
        """Low-res logits -> logits, probabilities and masks (logit > 0) at the original size."""
        full = self.transform.postprocess(decoded.logits, prepared.input_size, prepared.original_size)[:, 0]
        return MaskResult(full.sigmoid(), full > 0.0, full)

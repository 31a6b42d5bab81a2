"""UniFusion-SAM: a frozen SAM with reference encoders, UniFusion on its image embedding, and its mask decoder.

The network is stateless and has named stages (``encode_image``, ``encode_text``,
``encode_mask_reference``, ``fuse``, ``decode``) plus a batched training ``forward``; stateful
inference (image caches, video state) lives in :class:`~unifusion_sam.sam.predictor.ReferencePredictor`
and the video session. Wrapping never copies SAM's weights: the backend uses the model's own modules.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..encoders.mask import MaskReferenceEncoder
from ..encoders.text import TextFeatures, TextReferenceEncoder
from ..fusion.unifusion import ReferenceTokens, UniFusion
from .backends import make_backend
from .batch import References, SamBatch, SamOutput, group_references, mean_by_owner, stack_text
from .checkpoint import CheckpointMixin
from .config import UniFusionSamConfig


@dataclass
class MaskReference:
    """Encoded mask references: ``tokens`` keys/values ``[R, h*w, C]`` and ``prototype`` ``[R, C]``
    (mask-weighted mean of the value features, the plain mean when the mask is empty)."""

    tokens: ReferenceTokens
    prototype: torch.Tensor


class UniFusionSam(CheckpointMixin, nn.Module):
    """UniFusion-SAM network. Build it with :func:`wrap_sam`."""

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
        self._predictor = None
        from .lora import apply_lora  # local import: peft is only needed when LoRA is on

        self.lora_enabled = config.lora.enabled
        if self.lora_enabled:
            apply_lora(self.backend, config.lora)
        self.to(next(sam.parameters()).device)  # the new adapter parts follow the SAM's device
        self.set_trainable()

    # ------------------------------------------------------------------ parameters and modes
    def set_trainable(self) -> None:
        """Freeze the image and prompt encoders; adapters (and the mask decoder per config) train."""
        self.sam.requires_grad_(False)
        for name, p in self.backend.image_encoder.named_parameters():
            p.requires_grad_(self.lora_enabled and "lora_" in name)
        self.backend.mask_decoder.requires_grad_(self.config.train_mask_decoder)
        for module in (self.fusion, self.mask_encoder, self.mask_token, self.text_token):
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

    # ------------------------------------------------------------------ inference conveniences
    @property
    def predictor(self):
        """The stateful :class:`ReferencePredictor` (embedding cache, current image) of this model."""
        if self._predictor is None:
            from .predictor import ReferencePredictor

            self._predictor = ReferencePredictor(self)
        return self._predictor

    def set_image(self, image) -> None:
        """Encode ``image`` once for the following ``predict(None, ...)`` calls (like ``SamPredictor``)."""
        self.predictor.set_image(image)

    def predict(self, image=None, **kwargs):
        """Segment from references and/or prompts; see :meth:`ReferencePredictor.predict`.

        ``model.predict(image, text="the dog on the left")``,
        ``model.predict(image, ref_images=[img0], ref_masks=[m0])`` (K pairs = K-shot),
        ``model.predict(image, point_coords=[[x, y]], point_labels=[1])``.
        Returns a :class:`Prediction` with ``.mask`` (H x W bool), ``.score`` and ``.logits``.
        """
        return self.predictor.predict(image, **kwargs)

    def track(
        self,
        frames,
        *,
        text=None,
        masks=None,
        new_objects=None,
        sigma: float | str | None = None,
        max_short_side: int | None = None,
    ):
        """Track objects through ``frames`` (any iterable of ``H x W x 3`` uint8 frames), online.

        ``masks``: {object id: first-frame mask} (VOS); ``text``: a sentence (RVOS, object id 1) or
        {object id: sentence}; ``new_objects``: {frame index: {object id: mask}} for objects that
        appear later. ``sigma`` defaults to 0.3 with text and 0.4 otherwise. Yields
        :class:`~unifusion_sam.video.session.FrameResult` (``.masks``, ``.scores``, ``.label_map``).
        """
        from ..video.session import VideoSession

        if text is None and not masks and not new_objects:
            raise ValueError("track needs text, masks or new_objects to know what to follow")
        if sigma is None:
            sigma = 0.3 if text is not None else 0.4
        session = VideoSession(self, sigma=sigma, max_short_side=max_short_side)
        if text is not None:
            for obj_id, sentence in (text.items() if isinstance(text, dict) else [(1, text)]):
                session.add_text_object(obj_id, sentence)
        for obj_id, mask in (masks or {}).items():
            session.add_object(obj_id, mask)
        yield from session.run(frames, new_objects)

    # ------------------------------------------------------------------ named stages
    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        """``[B, 3, S, S]`` normalised, padded images -> ``[B, 256, h, w]`` embeddings (frozen encoder)."""
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
        """References ``units`` ``[R, 3, S, S]`` in [0, 1], ``masks`` ``[R, S, S]`` binary, and their SAM
        ``embeddings`` ``[R, 256, h, w]`` -> tokens (keys = embeddings, values = mask features)."""
        (values,) = self.mask_encoder(units, masks, [embeddings])  # [R, C, h, w]
        small = F.adaptive_avg_pool2d(masks.to(values.dtype)[:, None], values.shape[-2:])  # [R, 1, h, w]
        area = small.sum(dim=(2, 3))  # [R, 1]
        weighted = (values * small).sum(dim=(2, 3)) / area.clamp(min=1e-6)
        prototype = torch.where(area > 1e-6, weighted, values.mean(dim=(2, 3)))
        return MaskReference(ReferenceTokens.from_maps(embeddings, values), prototype)

    def fuse(
        self, embeddings: torch.Tensor, lang: ReferenceTokens | None, mask: ReferenceTokens | None,
        tracking: torch.Tensor | None = None, pe: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """UniFusion on the image embedding ``[B, 256, h, w]``. For the samples whose mask references
        are earlier frames of their video (``tracking`` ``[B]`` bool), SAM's positional encoding of the
        grid (``pe`` ``[1, 256, h, w]``, :meth:`SamBackend.dense_pe` when not given) goes along for the
        locality prior (``fusion.mask_pos_logit``); the others get zeros, which leave their attention
        exactly as without the prior."""
        pos = None
        if mask is not None and self.fusion.pos_proj is not None:
            pe = (self.backend.dense_pe() if pe is None else pe).to(embeddings.dtype)
            if tracking is None or not bool(tracking.any()):
                pos = torch.zeros_like(pe)
            elif bool(tracking.all()):
                pos = pe  # [1, ...]: projected once for all samples (every object of a video frame)
            else:
                pos = pe * tracking.to(device=pe.device, dtype=pe.dtype)[:, None, None, None]
        return self.fusion(embeddings, lang=lang, mask=mask, pos=pos)

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
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """SAM's decoder on (fused) embeddings ``[B, 256, h, w]``; the reference token ``[B, 256]`` is
        appended to the sparse prompts of the samples where ``has_ref`` ``[B]`` is True. ``pe``: SAM's
        grid encoding ``[1, 256, h, w]`` if the caller has it. Returns logits ``[B, 1, 4h, 4w]`` and scores ``[B]``."""
        b = embeddings.shape[0]
        if pe is None:
            pe = self.backend.dense_pe()
        with torch.no_grad():  # the prompt encoder is frozen and has nothing to learn from these prompts
            sparse, dense = self.backend.embed_prompts(point_coords, point_labels, boxes, b)
        if ref_token is None:
            logits, iou = self.backend.decode(embeddings, sparse, dense, pe)
            return logits, iou[:, 0]
        if has_ref is None:
            has_ref = torch.ones(b, dtype=torch.bool, device=embeddings.device)
        logits = embeddings.new_zeros(b, 1, *(4 * s for s in embeddings.shape[-2:]))
        scores = embeddings.new_zeros(b)
        for flag in (True, False):  # samples with and without the extra token decode as two groups
            idx = torch.nonzero(has_ref == flag).flatten()
            if idx.numel() == 0:
                continue
            sp = sparse[idx]
            if flag:
                sp = torch.cat([sp, ref_token[idx, None, :].to(sp.dtype)], dim=1)
            lg, iou = self.backend.decode(embeddings[idx], sp, dense[idx], pe)
            logits = logits.index_copy(0, idx, lg)
            scores = scores.index_copy(0, idx, iou[:, 0])
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
        """Group encoded mask references by owning sample: tokens ``[B, K*h*w, C]`` and prototypes ``[B, C]``."""
        mask = group_references(ref.tokens.keys, ref.tokens.values, owner, batch)
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
        """Fuse the references into ``embeddings`` ``[B, 256, h, w]`` and decode masks and scores."""
        pe = self.backend.dense_pe()  # [1, 256, h, w], once for fusion and every decoder group
        fused = self.fuse(embeddings, refs.lang, refs.mask, refs.tracking, pe)
        token = self.reference_token(refs.text_pooled, refs.has_text, refs.mask_pooled, refs.has_mask)
        logits, scores = self.decode(fused, token, refs.has_any(), point_coords, point_labels, boxes, pe)
        return SamOutput(logits=logits, scores=scores)

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
            masks = self.mask_references(encoded, batch.ref_owner.to(emb.device), b)
            refs.mask, refs.mask_pooled, refs.has_mask = masks.mask, masks.mask_pooled, masks.has_mask
            refs.tracking = batch.tracking
        return self.segment(emb, refs, batch.point_coords, batch.point_labels, batch.boxes)

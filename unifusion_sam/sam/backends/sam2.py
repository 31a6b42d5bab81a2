"""SAM 2 behind the backend interface: Meta's ``sam2`` ``SAM2Base`` and ``transformers.Sam2Model``.

Both do what SAM 2's image predictors do (``SAM2ImagePredictor``, ``Sam2Model.forward``), calling the
model's own modules:

- **Image.** The image encoder (Hiera + FPN neck), the mask decoder's ``conv_s0`` / ``conv_s1`` on the
  stride-4 and stride-8 maps (precomputed once per image, as SAM 2 does), and the image-mode
  no-memory embedding added to the stride-16 embedding. UniFusion works on that embedding
  ``[B, 256, h, w]``; the two high-resolution maps go to the decoder unchanged.
- **Frame features.** ``encode_image`` returns them as one tensor ``[B, 1024, h, w]``: channels 0..255 the
  embedding, 256..511 the stride-8 map ``[B, 64, 2h, 2w]`` and 512..1023 the stride-4 map
  ``[B, 32, 4h, 4w]``, both folded onto the stride-16 grid with ``pixel_unshuffle`` (a permutation, so
  :meth:`decoder_inputs` unfolds them exactly). So every cache and batch of the library (the predictor's
  embedding cache, the training embedding cache, ``SamBatch.embeddings``, a video session's frames)
  stays one tensor, and a frame broadcast to N objects (``expand``) unfolds its maps once.
- **Prompts.** Each implementation's own layout: Meta's predictor puts a box first as two corner points
  (labels 2, 3), then the points, then a padding point; ``Sam2Model`` puts the points first and pads an
  empty prompt with a ``-1`` point.
- **Layout.** The decoder gets each map in the memory layout SAM 2's own image path gives it (the
  embedding channels-last, as the ``[HW, B, C]`` token layout permuted back; the high-resolution maps as
  the convolutions leave them), recorded when an image is encoded: the same values in another layout
  round differently in the decoder, and with it the results are bit-identical to SAM 2's predictors.
- **Decoder.** The model's own mask decoder with ``multimask_output=False``. Without a reference it does
  what SAM 2's predictors do: in eval mode it falls back to the best multimask output when the single
  mask is unstable. With a reference token (``fallback=False``) it always gives the single-mask token's
  output, the one the adapter trains (the multimask tokens never see a reference). The object score is
  ``sigmoid`` of SAM 2's object-score head (the predicted IoU for a Meta decoder built without one).
- **Frozen.** ``conv_s0`` / ``conv_s1`` belong to encoding the image: they stay frozen even when the mask
  decoder trains, and are not part of an adapter.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from ..specs import sam2_size_name
from .base import SamBackend, hf_prompt_embeddings, to_batch
from .high_res import EMBED_DIM, pack_high_res, unpack_high_res
from .transforms import SAM2_MEAN, SAM2_STD, Sam2Transform


@contextmanager
def _single_mask_token(decoder: nn.Module, fallback: bool) -> Iterator[None]:
    """Without ``fallback``, SAM 2's decoder gives the single-mask token's output even in eval mode (its
    ``dynamic_multimask_via_stability`` switch is off for the call and restored after)."""
    saved = decoder.dynamic_multimask_via_stability
    if not fallback:
        decoder.dynamic_multimask_via_stability = False
    try:
        yield
    finally:
        decoder.dynamic_multimask_via_stability = saved


class _Sam2Backend(SamBackend):
    """What both SAM 2 implementations share: the frame-feature layout, statistics and preprocessing."""

    flavour = "meta"
    encoder_side_decoder_parts = ("conv_s0", "conv_s1")
    high_res = True  # the decoder takes the stride-4 / stride-8 maps
    _layouts: list[torch.memory_format] | None = None  # of [s4, s8, embedding], recorded by _pack

    @property
    def feature_channels(self) -> int:
        # stride 8: C/4 channels x 2 x 2, stride 4: C/8 channels x 4 x 4
        return EMBED_DIM * 4 if self.high_res else EMBED_DIM

    @property
    def pixel_mean(self) -> torch.Tensor:
        return torch.tensor(SAM2_MEAN) * 255.0

    @property
    def pixel_std(self) -> torch.Tensor:
        return torch.tensor(SAM2_STD) * 255.0

    def transform(self) -> Sam2Transform:
        return Sam2Transform(self.image_size, self.flavour)

    def _pack(self, maps: list[torch.Tensor]) -> torch.Tensor:
        """``[s4 [B, 32, 4h, 4w], s8 [B, 64, 2h, 2w], embedding [B, 256, h, w]]`` -> ``[B, 1024, h, w]``."""
        self._layouts = [torch.channels_last if m.stride(1) == 1 else torch.contiguous_format for m in maps]
        if not self.high_res:
            return maps[-1]
        return pack_high_res(*maps)

    def image_embedding(self, features: torch.Tensor) -> torch.Tensor:
        return features[:, :EMBED_DIM]

    def decoder_inputs(self, features: torch.Tensor) -> list[torch.Tensor] | None:
        """``[s4 [B', 32, 4h, 4w], s8 [B', 64, 2h, 2w]]``; ``B' = 1`` when ``features`` is one frame expanded
        to a batch (the decoder broadcasts it), else ``B``."""
        return unpack_high_res(features) if self.high_res else None

    def as_encoded(self, embeddings: torch.Tensor, extras: list[torch.Tensor] | None):
        """The decoder inputs in the memory layouts SAM 2's image path gives them (see the module docstring)."""
        if self._layouts is None:
            return embeddings, extras
        embeddings = embeddings.contiguous(memory_format=self._layouts[-1])
        if extras is not None:
            extras = [t.contiguous(memory_format=f) for t, f in zip(extras, self._layouts)]
        return embeddings, extras


class MetaSam2Backend(_Sam2Backend):
    """Meta ``sam2`` ``SAM2Base`` (``build_sam2(...)``, ``build_sam("sam2_hiera_t")``), in image mode."""

    family = "meta_sam2"

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model, model.image_encoder, model.sam_prompt_encoder, model.sam_mask_decoder)
        self.high_res = bool(model.use_high_res_features_in_sam)
        if not self.high_res:
            self.encoder_side_decoder_parts = ()

    @property
    def image_size(self) -> int:
        return int(self.model.image_size)

    def size_name(self) -> str:
        trunk = getattr(self.image_encoder, "trunk", None)
        if trunk is None or not hasattr(trunk, "stage_ends"):
            return f"sam2_custom-{type(self.image_encoder).__name__}"
        ends = [-1, *trunk.stage_ends]
        stages = tuple(b - a for a, b in zip(ends[:-1], ends[1:]))
        return sam2_size_name(int(trunk.patch_embed.proj.out_channels), int(trunk.blocks[0].attn.num_heads), stages)

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        """``SAM2ImagePredictor.set_image_batch`` on normalised pixels, packed (see the module docstring)."""
        m = self.model
        _, feats, _, sizes = m._prepare_backbone_features(m.forward_image(pixels))
        if m.directly_add_no_mem_embed:
            feats[-1] = feats[-1] + m.no_mem_embed
        b = pixels.shape[0]
        return self._pack([f.permute(1, 2, 0).view(b, -1, *size) for f, size in zip(feats, sizes)])

    def embed_prompts(self, coords, labels, boxes, batch: int):
        """``SAM2ImagePredictor._predict``'s prompt layout: box corners (labels 2, 3) before the points."""
        points = None if coords is None else (coords, labels)
        if boxes is not None:
            corners = boxes.reshape(-1, 2, 2)
            corner_labels = torch.tensor([[2, 3]], dtype=torch.int, device=boxes.device).repeat(boxes.size(0), 1)
            if points is None:
                points = (corners, corner_labels)
            else:
                points = (torch.cat([corners, points[0]], dim=1), torch.cat([corner_labels, points[1]], dim=1))
        sparse, dense = self.prompt_encoder(points=points, boxes=None, masks=None)
        return to_batch(sparse, dense, batch)

    def dense_pe(self) -> torch.Tensor:
        return self.prompt_encoder.get_dense_pe()

    def decode(self, embeddings, sparse, dense, pe=None, extras=None, fallback=True):
        embeddings, extras = self.as_encoded(embeddings, extras)
        with _single_mask_token(self.mask_decoder, fallback):
            masks, iou, _, object_logits = self.mask_decoder(
                image_embeddings=embeddings,
                image_pe=self.dense_pe() if pe is None else pe,
                sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense,
                multimask_output=False,
                repeat_image=False,
                high_res_features=extras,
            )
        return masks, (object_logits.sigmoid() if self.mask_decoder.pred_obj_scores else iou)


class HFSam2Backend(_Sam2Backend):
    """``transformers.Sam2Model`` (``Sam2Model.from_pretrained("facebook/sam2-hiera-tiny")``)."""

    family = "hf_sam2"
    flavour = "hf"

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model, model.vision_encoder, model.prompt_encoder, model.mask_decoder)

    @property
    def image_size(self) -> int:
        size = self.model.config.prompt_encoder_config.image_size
        return int(size if isinstance(size, int) else size[0])

    def size_name(self) -> str:
        cfg = self.model.config.vision_config.backbone_config
        return sam2_size_name(int(cfg.hidden_size), int(cfg.num_attention_heads), tuple(cfg.blocks_per_stage))

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        """The image part of ``Sam2Model.forward`` (``get_image_features`` + no-memory embedding), packed."""
        feats = self.model.get_image_features(pixels, return_dict=True).fpn_hidden_states
        feats[-1] = feats[-1] + self.model.no_memory_embedding
        b = pixels.shape[0]
        sizes = self.model.backbone_feature_sizes
        return self._pack([f.permute(1, 2, 0).view(b, -1, *size) for f, size in zip(feats, sizes)])

    def embed_prompts(self, coords, labels, boxes, batch: int):
        """``Sam2Model.forward``'s prompt layout: points, then the box; no prompt = one ``-1`` point."""
        if coords is None and boxes is None:
            device = self.prompt_encoder.no_mask_embed.weight.device
            coords = torch.zeros(batch, 1, 2, device=device)
            labels = -torch.ones(batch, 1, dtype=torch.int32, device=device)
        return hf_prompt_embeddings(self.prompt_encoder, coords, labels, boxes, batch)

    def dense_pe(self) -> torch.Tensor:
        return self.model.get_image_wide_positional_embeddings()

    def decode(self, embeddings, sparse, dense, pe=None, extras=None, fallback=True):
        embeddings, extras = self.as_encoded(embeddings, extras)
        b = embeddings.shape[0]
        pos = (self.dense_pe() if pe is None else pe).repeat(b, 1, 1, 1)
        with _single_mask_token(self.mask_decoder, fallback):
            masks, _, _, object_logits = self.mask_decoder(
                image_embeddings=embeddings,
                image_positional_embeddings=pos,
                sparse_prompt_embeddings=sparse[:, None],
                dense_prompt_embeddings=dense,
                multimask_output=False,
                high_resolution_features=extras,
            )
        return masks[:, 0], object_logits[:, 0].sigmoid()


def make_sam2_backend(model: nn.Module) -> SamBackend | None:
    """The backend of a Meta ``SAM2Base`` or a ``transformers.Sam2Model``; ``None`` for any other model.
    Neither library is imported for a model that is not theirs."""
    modules = [cls.__module__ for cls in type(model).__mro__]
    if any(m.startswith("sam2.") for m in modules):
        from sam2.modeling.sam2_base import SAM2Base

        if isinstance(model, SAM2Base):
            return MetaSam2Backend(model)
    if any(m.startswith("transformers.models.sam2.") for m in modules):
        from transformers import Sam2Model

        if isinstance(model, Sam2Model):
            return HFSam2Backend(model)
    return None

"""SAM 1 behind the backend interface (:class:`~.base.SamBackend`, which gives the shapes): Meta's
``segment_anything`` ``Sam`` (:class:`MetaSamBackend`) and ``transformers.SamModel`` (:class:`HFSamBackend`).
"""

from __future__ import annotations

import torch
from torch import nn

from .base import SamBackend, hf_prompt_embeddings, to_batch
from .high_res import EMBED_DIM, PACKED_CHANNELS, decode_batch, unpack_high_res


class MetaSamBackend(SamBackend):
    """``segment_anything.modeling.Sam``. With a :class:`~.high_res.HighResMaskDecoder` (the ``lite0_hr``
    stand-in) the image encoder's features are packed ``[B, 1024, h, w]`` (the embedding and the stride-8 /
    stride-4 maps, :mod:`.high_res`) and the maps go into the decoder's upscaling, as in SAM 2."""

    family = "meta"

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model, model.image_encoder, model.prompt_encoder, model.mask_decoder)
        self.high_res = bool(getattr(model.mask_decoder, "high_res", False))

    @property
    def feature_channels(self) -> int:
        return PACKED_CHANNELS if self.high_res else EMBED_DIM

    def image_embedding(self, features: torch.Tensor) -> torch.Tensor:
        return features[:, :EMBED_DIM] if self.high_res else features

    def decoder_inputs(self, features: torch.Tensor) -> list[torch.Tensor] | None:
        """``[s4 [B', 32, 4h, 4w], s8 [B', 64, 2h, 2w]]`` for a high-resolution decoder, else ``None``."""
        return unpack_high_res(features) if self.high_res else None

    @property
    def image_size(self) -> int:
        return int(self.image_encoder.img_size)

    @property
    def pixel_mean(self) -> torch.Tensor:
        return self.model.pixel_mean.view(3)

    @property
    def pixel_std(self) -> torch.Tensor:
        return self.model.pixel_std.view(3)

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.image_encoder(pixels)

    def embed_prompts(self, coords, labels, boxes, batch: int):
        points = None if coords is None else (coords, labels)
        sparse, dense = self.prompt_encoder(points=points, boxes=boxes, masks=None)
        return to_batch(sparse, dense, batch)

    def dense_pe(self) -> torch.Tensor:
        return self.prompt_encoder.get_dense_pe()

    def decode(self, embeddings, sparse, dense, pe=None, extras=None, fallback=True):
        """Batched form of ``MaskDecoder.predict_masks`` (one prompt set per image, single-mask output);
        the score is the predicted IoU."""
        if self.high_res and extras is None:
            raise ValueError("this SAM's decoder takes high-resolution maps: pass extras=backend.decoder_inputs(features)")
        pos = (self.dense_pe() if pe is None else pe).expand(embeddings.shape[0], -1, -1, -1)
        masks, iou = decode_batch(self.mask_decoder, embeddings, pos, sparse, dense, extras if self.high_res else None)
        return masks[:, 0:1], iou[:, 0:1]


class HFSamBackend(SamBackend):
    """``transformers.SamModel``."""

    family = "hf"
    # ImageNet statistics on the 0..255 scale: what SamImageProcessor applies (rescale 1/255, then normalise).
    _MEAN = (123.675, 116.28, 103.53)
    _STD = (58.395, 57.12, 57.375)

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model, model.vision_encoder, model.prompt_encoder, model.mask_decoder)

    @property
    def image_size(self) -> int:
        size = self.model.config.vision_config.image_size
        return int(size if isinstance(size, int) else size[0])

    @property
    def pixel_mean(self) -> torch.Tensor:
        return torch.tensor(self._MEAN)

    @property
    def pixel_std(self) -> torch.Tensor:
        return torch.tensor(self._STD)

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.image_encoder(pixels).last_hidden_state

    def embed_prompts(self, coords, labels, boxes, batch: int):
        return hf_prompt_embeddings(self.prompt_encoder, coords, labels, boxes, batch)

    def dense_pe(self) -> torch.Tensor:
        return self.model.get_image_wide_positional_embeddings()

    def decode(self, embeddings, sparse, dense, pe=None, extras=None, fallback=True):
        """``SamMaskDecoder`` with one prompt set per image, single-mask output; the score is the predicted IoU."""
        b = embeddings.shape[0]
        pos = (self.dense_pe() if pe is None else pe).repeat(b, 1, 1, 1)
        masks, iou = self.mask_decoder(
            image_embeddings=embeddings,
            image_positional_embeddings=pos,
            sparse_prompt_embeddings=sparse[:, None] if sparse.shape[1] else None,
            dense_prompt_embeddings=dense,
            multimask_output=False,
        )
        return masks[:, 0], iou[:, 0]

"""One interface over the two SAM implementations: Meta's ``segment_anything`` and ``transformers.SamModel``.

A backend exposes SAM's three parts without copying any weight: ``image_encoder``, ``prompt_encoder``
and ``mask_decoder`` are the wrapped model's own modules. Shapes (S = input size, h = w = S / 16):

- ``encode_image(pixels [B, 3, S, S]) -> [B, 256, h, w]``
- ``embed_prompts(coords [B, N, 2] | None, labels [B, N] | None, boxes [B, 4] | None, batch)``
  ``-> sparse [B, N', 256], dense [B, 256, h, w]`` (coordinates in SAM's input frame)
- ``decode(embeddings [B, 256, h, w], sparse [B, N, 256], dense [B, 256, h, w])``
  ``-> logits [B, 1, 4h, 4w], iou [B, 1]`` (single-mask output, ``multimask_output=False``)
"""

from __future__ import annotations

import torch
from torch import nn


class SamBackend:
    """Base class; see the module docstring for the shapes."""

    family: str = "?"
    lora_prefix: str = ""

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    image_encoder: nn.Module
    prompt_encoder: nn.Module
    mask_decoder: nn.Module

    @property
    def image_size(self) -> int:
        raise NotImplementedError

    @property
    def embedding_size(self) -> tuple[int, int]:
        raise NotImplementedError

    @property
    def pixel_mean(self) -> torch.Tensor:
        raise NotImplementedError

    @property
    def pixel_std(self) -> torch.Tensor:
        raise NotImplementedError

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def embed_prompts(self, coords, labels, boxes, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def decode(self, embeddings, sparse, dense, pe=None) -> tuple[torch.Tensor, torch.Tensor]:
        """``pe``: :meth:`dense_pe` when the caller has it already (else it is computed here)."""
        raise NotImplementedError

    def dense_pe(self) -> torch.Tensor:
        """SAM's positional encoding of the embedding grid, ``[1, 256, h, w]``."""
        raise NotImplementedError


class MetaSamBackend(SamBackend):
    """``segment_anything.modeling.Sam``."""

    family = "meta"

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model)
        self.image_encoder = model.image_encoder
        self.prompt_encoder = model.prompt_encoder
        self.mask_decoder = model.mask_decoder

    @property
    def image_size(self) -> int:
        return int(self.image_encoder.img_size)

    @property
    def embedding_size(self) -> tuple[int, int]:
        return tuple(self.prompt_encoder.image_embedding_size)

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
        if sparse.shape[0] != batch:
            sparse = sparse.expand(batch, -1, -1)
            dense = dense.expand(batch, -1, -1, -1)
        return sparse, dense

    def dense_pe(self) -> torch.Tensor:
        return self.prompt_encoder.get_dense_pe()

    def decode(self, embeddings, sparse, dense, pe=None):
        """Batched form of ``MaskDecoder.predict_masks`` (one prompt set per image, single-mask output)."""
        dec = self.mask_decoder
        b = embeddings.shape[0]
        output_tokens = torch.cat([dec.iou_token.weight, dec.mask_tokens.weight], dim=0)
        tokens = torch.cat([output_tokens[None].expand(b, -1, -1), sparse], dim=1)
        src = embeddings + dense
        pos = (self.dense_pe() if pe is None else pe).expand(b, -1, -1, -1)
        _, c, h, w = src.shape
        hs, src = dec.transformer(src, pos, tokens)
        iou_out, mask_out = hs[:, 0, :], hs[:, 1 : 1 + dec.num_mask_tokens, :]
        upscaled = dec.output_upscaling(src.transpose(1, 2).reshape(b, c, h, w))
        hyper = torch.stack([mlp(mask_out[:, i, :]) for i, mlp in enumerate(dec.output_hypernetworks_mlps)], dim=1)
        _, c2, h2, w2 = upscaled.shape
        masks = (hyper @ upscaled.view(b, c2, h2 * w2)).view(b, -1, h2, w2)
        iou = dec.iou_prediction_head(iou_out)
        return masks[:, 0:1], iou[:, 0:1]


class HFSamBackend(SamBackend):
    """``transformers.SamModel``."""

    family = "hf"
    # ImageNet statistics on the 0..255 scale: what SamImageProcessor applies (rescale 1/255, then normalise).
    _MEAN = (123.675, 116.28, 103.53)
    _STD = (58.395, 57.12, 57.375)

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model)
        self.image_encoder = model.vision_encoder
        self.prompt_encoder = model.prompt_encoder
        self.mask_decoder = model.mask_decoder

    @property
    def image_size(self) -> int:
        size = self.model.config.vision_config.image_size
        return int(size if isinstance(size, int) else size[0])

    @property
    def embedding_size(self) -> tuple[int, int]:
        return tuple(self.prompt_encoder.image_embedding_size)

    @property
    def pixel_mean(self) -> torch.Tensor:
        return torch.tensor(self._MEAN)

    @property
    def pixel_std(self) -> torch.Tensor:
        return torch.tensor(self._STD)

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.image_encoder(pixels).last_hidden_state

    def embed_prompts(self, coords, labels, boxes, batch: int):
        sparse, dense = self.prompt_encoder(
            input_points=None if coords is None else coords[:, None],
            input_labels=None if labels is None else labels[:, None],
            input_boxes=None if boxes is None else boxes[:, None],
            input_masks=None,
        )
        if sparse is None:
            sparse = dense.new_zeros(batch, 0, dense.shape[1])
        else:
            sparse = sparse[:, 0]
        if dense.shape[0] != batch:
            dense = dense.expand(batch, -1, -1, -1)
        return sparse, dense

    def dense_pe(self) -> torch.Tensor:
        return self.model.get_image_wide_positional_embeddings()

    def decode(self, embeddings, sparse, dense, pe=None):
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


def make_backend(model: nn.Module) -> SamBackend:
    """Pick the backend for a Meta ``Sam`` or a ``transformers.SamModel``; anything else is a TypeError."""
    try:
        from segment_anything.modeling import Sam
    except ImportError:  # pragma: no cover
        Sam = ()
    if isinstance(model, Sam):
        return MetaSamBackend(model)
    try:
        from transformers import SamModel
    except ImportError:  # pragma: no cover
        SamModel = ()
    if isinstance(model, SamModel):
        return HFSamBackend(model)
    raise TypeError(
        "wrap_sam expects a segment_anything Sam (sam_model_registry[...]) or a transformers.SamModel, "
        f"got {type(model).__name__}"
    )

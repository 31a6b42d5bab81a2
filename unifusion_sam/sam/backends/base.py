"""The backend interface: one view of a SAM's parts, whatever implementation and generation it is.

A backend exposes SAM's three parts without copying any weight: ``image_encoder``, ``prompt_encoder``
and ``mask_decoder`` are the wrapped model's own modules. Shapes (S = input size, h = w = S / 16,
D = :attr:`SamBackend.feature_channels`):

- ``encode_image(pixels [B, 3, S, S]) -> features [B, D, h, w]``: what the frozen encoder gives per image
  (SAM 1: the image embedding, D = 256; SAM 2: the embedding with the decoder's high-resolution maps
  folded in, see :mod:`.sam2`); ``image_embedding(features) -> [B, 256, h, w]`` (what UniFusion
  and the mask encoder see) and ``decoder_inputs(features)`` (what else the decoder needs, ``None`` for SAM 1);
- ``embed_prompts(coords [B, N, 2] | None, labels [B, N] | None, boxes [B, 4] | None, batch)``
  ``-> sparse [B, N', 256], dense [B, 256, h, w]`` (coordinates in SAM's input frame, the prompt layout
  of the implementation's own predictor);
- ``decode(embeddings [B, 256, h, w], sparse [B, N, 256], dense [B, 256, h, w], pe, extras, fallback)``
  ``-> logits [B, 1, 4h, 4w], scores [B, 1]`` (single-mask output, ``multimask_output=False``; the score
  is the object score: SAM 1's predicted IoU, SAM 2's object-score head as a probability;
  ``fallback=False``: never SAM 2's switch to a multimask output, for samples with a reference token).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .transforms import SamTransform


class SamBackend:
    """Base class; see the module docstring for the shapes."""

    family: str = "?"
    #: submodules of ``mask_decoder`` that are part of encoding an image (SAM 2's ``conv_s0`` / ``conv_s1``,
    #: applied once per image by ``encode_image``): frozen with the image encoder and never in an adapter
    encoder_side_decoder_parts: tuple[str, ...] = ()

    def __init__(self, model: nn.Module, image_encoder: nn.Module, prompt_encoder: nn.Module,
                 mask_decoder: nn.Module) -> None:
        self.model = model
        self.image_encoder = image_encoder
        self.prompt_encoder = prompt_encoder
        self.mask_decoder = mask_decoder

    image_encoder: nn.Module
    prompt_encoder: nn.Module
    mask_decoder: nn.Module

    @property
    def image_size(self) -> int:
        raise NotImplementedError

    @property
    def embedding_size(self) -> tuple[int, int]:
        """``(h, w)`` of the image embedding: the prompt encoder's grid (every SAM / SAM 2 has one)."""
        return tuple(self.prompt_encoder.image_embedding_size)

    @property
    def pixel_mean(self) -> torch.Tensor:
        raise NotImplementedError

    @property
    def pixel_std(self) -> torch.Tensor:
        raise NotImplementedError

    @property
    def feature_channels(self) -> int:
        """Channels ``D`` of :meth:`encode_image`'s output (256: the image embedding alone)."""
        return 256

    def size_name(self) -> str | None:
        """The size name an adapter records, when the backend knows it (``None``: :func:`~unifusion_sam.sam.specs.sam_size_name` decides)."""
        return None

    def transform(self) -> SamTransform:
        """The image / mask / prompt preprocessing of this SAM (SAM 1: resize the longest side, pad)."""
        return SamTransform(self.image_size, self.pixel_mean, self.pixel_std)

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def image_embedding(self, features: torch.Tensor) -> torch.Tensor:
        """``[B, D, h, w]`` features -> the ``[B, 256, h, w]`` image embedding."""
        return features

    def decoder_inputs(self, features: torch.Tensor) -> Any:
        """What the mask decoder needs from ``features`` besides the embedding (``None``: nothing)."""
        return None

    def take(self, extras: Any, index: torch.Tensor) -> Any:
        """The rows ``index`` of :meth:`decoder_inputs` (for decoding a subset of a batch; a map of one
        row is one frame broadcast to the batch and is kept whole)."""
        if extras is None:
            return None
        return [t if t.shape[0] == 1 else t[index] for t in extras]

    def embed_prompts(self, coords, labels, boxes, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def decode(self, embeddings, sparse, dense, pe=None, extras=None,
               fallback=True) -> tuple[torch.Tensor, torch.Tensor]:
        """``pe``: :meth:`dense_pe` when the caller has it already (else it is computed here); ``extras``:
        :meth:`decoder_inputs` of the frame features; ``fallback``: whether the decoder may replace an
        unstable single mask by a multimask output (SAM 2's predictors do; SAM 1 never does)."""
        raise NotImplementedError

    def dense_pe(self) -> torch.Tensor:
        """SAM's positional encoding of the embedding grid, ``[1, 256, h, w]``."""
        raise NotImplementedError


def hf_prompt_embeddings(prompt_encoder: nn.Module, coords, labels, boxes,
                         batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A transformers SAM / SAM 2 prompt encoder on one prompt set per image: ``coords [B, N, 2]``,
    ``labels [B, N]``, ``boxes [B, 4]`` (each may be ``None``) -> ``sparse [batch, N', 256]`` (``N' = 0``
    when the encoder returns none), ``dense [batch, 256, h, w]`` (broadcast to ``batch``)."""
    sparse, dense = prompt_encoder(
        input_points=None if coords is None else coords[:, None],
        input_labels=None if labels is None else labels[:, None],
        input_boxes=None if boxes is None else boxes[:, None],
        input_masks=None,
    )
    sparse = dense.new_zeros(batch, 0, dense.shape[1]) if sparse is None else sparse[:, 0]
    return to_batch(sparse, dense, batch)


def to_batch(sparse: torch.Tensor, dense: torch.Tensor, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Prompt embeddings ``sparse [1 or batch, N, 256]`` / ``dense [1 or batch, 256, h, w]`` broadcast to
    ``batch`` (views, no copy)."""
    if sparse.shape[0] != batch:
        sparse = sparse.expand(batch, -1, -1)
    if dense.shape[0] != batch:
        dense = dense.expand(batch, -1, -1, -1)
    return sparse, dense

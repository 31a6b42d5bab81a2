"""High-resolution maps for SAM's mask decoder, as SAM 2 feeds them, on one frame-features tensor.

SAM's decoder upsamples its stride-16 output 4x with two transposed convolutions; everything finer than
a 16-pixel patch has to be carried by the 256 channels of the embedding. SAM 2 adds a stride-8 map
(64 channels) after the first transposed convolution and a stride-4 map (32 channels) after the second
(``use_high_res_features_in_sam``). This module holds that layout for both SAM generations:

- :func:`pack_high_res` / :func:`unpack_high_res`: ``[s4 [B, 32, 4h, 4w], s8 [B, 64, 2h, 2w],
  embedding [B, 256, h, w]]`` <-> one tensor ``[B, 1024, h, w]`` (channels 0..255 the embedding, 256..511
  the stride-8 map, 512..1023 the stride-4 map, both folded onto the stride-16 grid with
  ``pixel_unshuffle``, a permutation). Every cache and batch of the library then stays one tensor.
- :func:`upscale`: SAM 2's upscaling, ``act(norm(dc1(src) + s8))`` then ``act(dc2(.) + s4)``, with the
  decoder's own ``output_upscaling`` layers (plain SAM's upscaling when there are no maps).
- :func:`decode_batch`: SAM's mask prediction for one prompt set per image, with or without the maps
  (what the adapter's backend and :class:`HighResMaskDecoder` both run).
- :class:`HighResMaskDecoder`: Meta's ``segment_anything`` ``MaskDecoder`` whose ``image_embeddings`` are
  the packed ``[B, 1024, h, w]`` features, so ``Sam.forward`` and ``SamPredictor`` work unchanged on a SAM
  whose image encoder returns them (the offline stand-in ``build_sam("lite0_hr")``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from segment_anything.modeling import MaskDecoder

EMBED_DIM = 256
HIGH_RES_CHANNELS = (EMBED_DIM // 8, EMBED_DIM // 4)  # stride 4, stride 8 (SAM 2's feat_s0 / feat_s1)
PACKED_CHANNELS = EMBED_DIM * 4


def pack_high_res(s4: torch.Tensor, s8: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
    """``s4 [B, 32, 4h, 4w]``, ``s8 [B, 64, 2h, 2w]``, ``embedding [B, 256, h, w]`` -> ``[B, 1024, h, w]``."""
    return torch.cat([embedding, F.pixel_unshuffle(s8, 2), F.pixel_unshuffle(s4, 4)], dim=1)


def unpack_high_res(features: torch.Tensor) -> list[torch.Tensor]:
    """``[B, 1024, h, w]`` -> ``[s4 [B', 32, 4h, 4w], s8 [B', 64, 2h, 2w]]`` (exact: ``pixel_shuffle``);
    ``B' = 1`` when ``features`` is one frame expanded to a batch (the decoder broadcasts it), else ``B``."""
    if features.shape[1] != PACKED_CHANNELS:
        raise ValueError(f"packed high-resolution features have {PACKED_CHANNELS} channels, got {tuple(features.shape)}")
    if features.shape[0] > 1 and features.stride(0) == 0:
        features = features[:1]
    s8 = F.pixel_shuffle(features[:, EMBED_DIM: 2 * EMBED_DIM], 2)
    s4 = F.pixel_shuffle(features[:, 2 * EMBED_DIM:], 4)
    return [s4, s8]


def upscale(decoder: MaskDecoder, src: torch.Tensor, maps: list[torch.Tensor] | None) -> torch.Tensor:
    """The decoder's upscaling of ``src [B, 256, h, w]`` to ``[B, 32, 4h, 4w]``, with the high-resolution
    ``maps`` (``[s4, s8]``, see :func:`unpack_high_res`) added as SAM 2 adds them, or without (``None``)."""
    if maps is None:
        return decoder.output_upscaling(src)
    dc1, ln1, act1, dc2, act2 = decoder.output_upscaling
    s4, s8 = maps
    return act2(dc2(act1(ln1(dc1(src) + s8))) + s4)


class HighResMaskDecoder(MaskDecoder):
    """Meta's ``MaskDecoder`` reading packed frame features ``[B, 1024, h, w]`` (see the module docstring):
    the stride-16 embedding goes through the two-way transformer, the stride-8 / stride-4 maps into the
    upscaling. ``forward`` / ``predict_masks`` keep Meta's signatures and batching (one image, N prompt
    sets), so ``Sam`` and ``SamPredictor`` use it as they use a plain decoder."""

    high_res = True

    def predict_masks(self, image_embeddings: torch.Tensor, image_pe: torch.Tensor,
                      sparse_prompt_embeddings: torch.Tensor,
                      dense_prompt_embeddings: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``image_embeddings [1 or N, 1024, h, w]``, ``image_pe [1, 256, h, w]``, ``sparse [N, T, 256]``,
        ``dense [N, 256, h, w]`` -> masks ``[N, 4, 4h, 4w]``, IoU predictions ``[N, 4]``."""
        maps = unpack_high_res(image_embeddings)
        embedding = image_embeddings[:, :EMBED_DIM]
        n = sparse_prompt_embeddings.shape[0]
        if embedding.shape[0] != n:  # Meta's decoder: one image, every prompt set
            embedding = torch.repeat_interleave(embedding, n, dim=0)
            maps = [torch.repeat_interleave(m, n, dim=0) for m in maps]
        pos = torch.repeat_interleave(image_pe, n, dim=0) if image_pe.shape[0] != n else image_pe
        return decode_batch(self, embedding, pos, sparse_prompt_embeddings, dense_prompt_embeddings, maps)


def decode_batch(decoder: MaskDecoder, embedding: torch.Tensor, pos: torch.Tensor, sparse: torch.Tensor,
                 dense: torch.Tensor, maps: list[torch.Tensor] | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Meta's ``MaskDecoder.predict_masks`` with one prompt set per image and optional high-resolution
    ``maps`` (:func:`upscale`): ``embedding``, ``pos``, ``dense`` ``[B, 256, h, w]``, ``sparse [B, T, 256]``
    -> all mask outputs ``[B, M, 4h, 4w]`` and their IoU predictions ``[B, M]``."""
    b = embedding.shape[0]
    output_tokens = torch.cat([decoder.iou_token.weight, decoder.mask_tokens.weight], dim=0)
    tokens = torch.cat([output_tokens[None].expand(b, -1, -1), sparse], dim=1)
    src = embedding + dense
    _, c, h, w = src.shape
    hs, src = decoder.transformer(src, pos, tokens)
    iou_out, mask_out = hs[:, 0, :], hs[:, 1: 1 + decoder.num_mask_tokens, :]
    upscaled = upscale(decoder, src.transpose(1, 2).reshape(b, c, h, w), maps)
    hyper = torch.stack([mlp(mask_out[:, i, :]) for i, mlp in enumerate(decoder.output_hypernetworks_mlps)], dim=1)
    _, c2, h2, w2 = upscaled.shape
    masks = (hyper @ upscaled.reshape(b, c2, h2 * w2)).view(b, -1, h2, w2)
    return masks, decoder.iou_prediction_head(iou_out)

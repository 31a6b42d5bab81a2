"""The exportable stages of a UniFusion-SAM model: one ``nn.Module`` per ONNX graph, each a thin view of the
model's own modules (no weight is copied), with plain tensor inputs and outputs and no data-dependent Python.

- :class:`ImageGraph`: pixels ``[B, 3, S, S]`` -> frame features ``[B, D, h, w]`` (the frozen image encoder);
- :class:`TextGraph`: token ids and attention mask ``[B, L]`` -> words ``[B, L, C]``, pooled ``[B, C]``;
- :class:`MaskGraph`: references (image in [0, 1], mask, their frame features) -> keys / values
  ``[R, T, C]`` and prototypes ``[R, C]``;
- :class:`FuseTextGraph` / :class:`FuseMaskGraph`: frame features and every object's sentence / mask references
  -> what that UniFusion branch adds to the image embedding ``[N, 256, h, w]`` and its part of the reference
  token ``[N, 256]`` (the branches are independent and summed, so a frame without sentences skips the first);
- :class:`PromptGraph`: points (box corners included, labels -1 pad / 0 / 1 / 2 / 3 corners) -> SAM's sparse
  prompt embeddings, exactly as Meta's ``PromptEncoder`` computes them;
- :class:`DecoderGraph`: fused embedding + sparse tokens ``[N, K, 256]`` -> logits ``[N, 1, 4h, 4w]`` and scores.

Which samples get which extra tokens (the reference token, prompts) is decided outside the graphs, as
:meth:`UniFusionSam.decode` does, so every graph is one straight-line computation.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from ...fusion.unifusion import ReferenceTokens
from ..backends.high_res import decode_batch

if TYPE_CHECKING:
    from ..adapter.model import UniFusionSam


class ImageGraph(nn.Module):
    def __init__(self, model: UniFusionSam) -> None:
        super().__init__()
        self.encoder = model.backend.image_encoder

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.encoder(pixels)


class TextGraph(nn.Module):
    def __init__(self, model: UniFusionSam, names: list[str]) -> None:
        super().__init__()
        self.text, self.names = model.text_encoder, names

    def forward(self, *tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats = self.text.encode_tokens(dict(zip(self.names, tokens)))
        return feats.words, feats.pooled


class MaskGraph(nn.Module):
    def __init__(self, model: UniFusionSam) -> None:
        super().__init__()
        self.model = model

    def forward(self, units: torch.Tensor, masks: torch.Tensor, features: torch.Tensor):
        ref = self.model.encode_mask_reference(units, masks, features)
        return ref.levels[0].keys, ref.levels[0].values, ref.prototype


class FuseTextGraph(nn.Module):
    """The language branch of ``UniFusionSam.fuse`` and its part of the reference token, for ``N`` objects on
    one frame (features ``[1, D, h, w]``): ``delta`` ``[N, 256, h, w]`` (what the branch adds to the image
    embedding; exactly zero for an object without a sentence, ``has_text`` False) and ``token`` ``[N, 256]``."""

    def __init__(self, model: UniFusionSam) -> None:
        super().__init__()
        self.model = model

    def forward(self, features, words, word_padding, text_pooled, has_text):
        model = self.model
        embedding = model.backend.image_embedding(features).expand(words.shape[0], -1, -1, -1)
        lang = ReferenceTokens(words, words, word_padding)
        query_pos = model.backend.dense_pe() if model.fusion.lang_pos_proj is not None else None
        delta = model.fusion.fuse(embedding, lang, query_pos=query_pos)
        return delta, model.text_token(text_pooled) * has_text[:, None].to(text_pooled.dtype)


class FuseMaskGraph(nn.Module):
    """The mask branch of ``UniFusionSam.fuse`` and its part of the reference token, for ``N`` objects on one
    frame (features ``[1, D, h, w]``) with their reference tokens ``[N, T, C]`` (padding ``[N, T]``; an object
    without mask references is fully padded and gets exactly zero). With a locality prior, ``tracking``
    ``[N]`` says whose queries take the grid encoding and ``key_local`` ``[N, T]`` whose keys do (examples from
    other images take none). Returns ``delta`` ``[N, 256, h, w]`` and ``token`` ``[N, 256]``."""

    def __init__(self, model: UniFusionSam) -> None:
        super().__init__()
        self.model = model

    def forward(self, features, keys, values, key_padding, key_local, mask_pooled, has_mask, tracking):
        model = self.model
        embedding = model.backend.image_embedding(features).expand(keys.shape[0], -1, -1, -1)
        pos = key_pos = None
        local = None
        if model.fusion.pos_proj is not None:
            pe = model.backend.dense_pe()
            pos = pe * tracking.to(pe.dtype)[:, None, None, None]
            local = key_local
            if model.config.reference_pool > 1:
                key_pos = nn.functional.avg_pool2d(pos, model.config.reference_pool)
        mask = ReferenceTokens(keys, values, key_padding, local=local)
        delta = model.fusion.fuse(embedding, mask, pos, key_pos=key_pos)
        return delta, model.mask_token(mask_pooled) * has_mask[:, None].to(mask_pooled.dtype)


class PromptGraph(nn.Module):
    """Meta's ``PromptEncoder`` sparse embeddings for points in SAM input pixels ``[B, P, 2]`` with labels
    ``[B, P]``: 1 / 0 positive / negative points, -1 the padding point (added when there is no box), 2 / 3 a
    box's top-left / bottom-right corners."""

    def __init__(self, model: UniFusionSam) -> None:
        super().__init__()
        self.prompt = model.backend.prompt_encoder

    def forward(self, coords: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        p = self.prompt
        pe = p.pe_layer.forward_with_coords(coords + 0.5, p.input_image_size)  # [B, P, 256]
        labels = labels[..., None]
        out = torch.where(labels == -1, p.not_a_point_embed.weight[0].expand_as(pe), pe)
        for k in range(4):
            out = out + (labels == k).to(pe.dtype) * p.point_embeddings[k].weight[0]
        return out


class DecoderGraph(nn.Module):
    """SAM's mask decoder on ``N`` fused embeddings with ``K`` sparse tokens each (prompts, then the reference
    token), the no-mask dense prompt, single-mask output: logits ``[N, 1, 4h, 4w]``, scores ``[N]``. A
    high-resolution decoder also takes the frame features (``[1 or N, 1024, h, w]``) its maps come from."""

    def __init__(self, model: UniFusionSam) -> None:
        super().__init__()
        self.model = model
        self.high_res = model.backend.decoder_inputs(torch.zeros(1, model.backend.feature_channels, 1, 1)) is not None

    def forward(self, fused: torch.Tensor, sparse: torch.Tensor, *features: torch.Tensor):
        backend = self.model.backend
        b = fused.shape[0]
        pe = backend.dense_pe()
        dense = backend.prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(b, -1, *fused.shape[-2:])
        maps = backend.decoder_inputs(features[0]) if self.high_res else None
        masks, iou = decode_batch(backend.mask_decoder, fused, pe.expand(b, -1, -1, -1), sparse, dense, maps)
        return masks[:, 0:1], iou[:, 0]

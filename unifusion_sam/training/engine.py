"""Pieces of the training step shared by the recipes: embedding cache, optimiser, schedule, one step.

The recipe script (``recipes/train_sam_unifusion.py``) stays a readable accelerate loop; what it
calls lives here so tests and other recipes reuse it.
"""

from __future__ import annotations

import torch

from ..inference.predictor import EmbeddingCache
from ..losses import LossWeights, segmentation_loss
from ..sam.grounding import text_point_loss
from .samples import PreparedSample, SamSamplePrep, TrainBatch, collate


class TrainEmbeddingCache(EmbeddingCache):
    """Frozen-encoder embeddings of training images, keyed by ``PreparedSample`` cache keys: the
    predictor's :class:`~unifusion_sam.inference.predictor.EmbeddingCache` (LRU, at most ``capacity``
    images and ``max_bytes`` bytes) holding CPU copies. An image's entry is ``256 x 64 x 64`` floats
    (4 MiB) for SAM at 1024 and 16 MiB for SAM 2 (its high-resolution maps ride along), so the byte
    limit is what bounds memory. Only valid while the image encoder is frozen (no LoRA): the recipe
    disables it otherwise.
    """

    def embed(self, model, pixels: torch.Tensor, keys: list[str | None]) -> torch.Tensor:
        """Frame features ``[N, D, h, w]`` (``model.encode_image``: D = 256 for SAM) for ``pixels``
        ``[N, 3, S, S]``; encodes only the cache misses (keys ``None`` are never cached)."""
        out: list[torch.Tensor | None] = [None] * len(keys)
        todo = []
        for i, k in enumerate(keys):
            hit = self.get(k) if k is not None else None
            if hit is None:
                todo.append(i)
            else:
                out[i] = hit.to(pixels.device)
        if todo:
            with torch.no_grad():
                fresh = model.encode_image(pixels[todo])
            for j, i in enumerate(todo):
                out[i] = fresh[j]
                k = keys[i]
                if k is not None and k not in self._items:
                    # a copy: a view would keep the whole batch's storage alive
                    self.put(k, fresh[j].detach().to("cpu", copy=True))
        return torch.stack(out)  # type: ignore[arg-type]


def parameter_groups(model, lr: float, text_lr: float, weight_decay: float) -> list[dict]:
    """AdamW groups: the text transformer at ``text_lr``, everything else trainable at ``lr``;
    no weight decay on biases and norms."""
    groups: dict[tuple[str, bool], list[torch.nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        kind = "text" if name.startswith("text_encoder.backbone.") else "main"
        decay = p.ndim > 1
        groups.setdefault((kind, decay), []).append(p)
    out = []
    for (kind, decay), params in sorted(groups.items()):
        out.append({"params": params, "lr": text_lr if kind == "text" else lr,
                    "weight_decay": weight_decay if decay else 0.0, "name": f"{kind}{'' if decay else '_no_decay'}"})
    return out


def warmup_step_schedule(warmup: int, decay_steps: tuple[int, ...], factor: float = 0.1):
    """LambdaLR multiplier: linear warmup over ``warmup`` steps, then x ``factor`` at each decay step."""

    def fn(step: int) -> float:
        scale = min(1.0, (step + 1) / warmup) if warmup > 0 else 1.0
        for s in decay_steps:
            if step >= s:
                scale *= factor
        return scale

    return fn


def compute_loss(model, batch: TrainBatch, cache: TrainEmbeddingCache | None, weights: LossWeights | None = None):
    """Forward a collated batch (embeddings from the cache where possible) and return the loss terms."""
    inner = model.module if hasattr(model, "module") else model
    device = inner.device
    sam_batch = batch.batch.to(device)
    if cache is not None:
        sam_batch.embeddings = cache.embed(inner, sam_batch.pixels.to(device), batch.keys)
        sam_batch.pixels = None
        if sam_batch.num_refs:
            sam_batch.ref_embeddings = cache.embed(inner, sam_batch.ref_pixels.to(device), batch.ref_keys)
            sam_batch.ref_pixels = None
    out = model(sam_batch)
    targets = batch.targets.to(out.logits.device)
    terms = segmentation_loss(out.logits, out.scores, targets, batch.valid.to(out.logits.device), weights)
    if out.point_heat is not None:  # the text point's heat map is supervised directly
        rows = out.has_point & (targets.flatten(1).sum(1) > 0)
        point = text_point_loss(out.point_heat, targets, rows).sum() / rows.sum().clamp(min=1)
        terms["loss"] = terms["loss"] + (weights or LossWeights()).point * point
        terms["point"] = point.detach()
    return terms


class SamTrainFamily:
    """The UniFusion-SAM family for :func:`~unifusion_sam.training.loop.train_stages`: samples at the SAM's
    input size, the frozen encoder's embeddings from ``cache``, the segmentation loss, and the text
    transformer training only in stages that say so (and only when the adapter config includes it)."""

    def __init__(self, transform, cache: TrainEmbeddingCache | None) -> None:
        self.transform = transform
        self.cache = cache

    def sample_prep(self, stage_name: str, stage) -> SamSamplePrep:
        return SamSamplePrep(self.transform)

    def collate(self, samples: list[PreparedSample]) -> TrainBatch:
        return collate(samples)

    def loss(self, model, batch: TrainBatch) -> dict[str, torch.Tensor]:
        return compute_loss(model, batch, self.cache)

    def start_stage(self, model, stage_name: str, stage) -> None:
        if model.text_encoder is not None:
            train_text = stage.train_text_encoder and model.config.text.trainable
            model.text_encoder.unfreeze() if train_text else model.text_encoder.freeze()

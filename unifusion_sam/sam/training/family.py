"""The UniFusion-SAM family of the shared training run (:func:`unifusion_sam.training.run.run`).

:class:`SamTrainFamily` builds the model (a SAM, the stand-in's pre-training when it is a random stand-in,
``wrap_sam``), gives its parameter groups, the frozen encoder's embedding cache, its samples and batches
(:mod:`.samples`) and its loss (:func:`sam_loss`: BCE + Dice on the full-resolution mask, and the text
point's heat map), and saves the adapter (with the stand-in SAM when that exists nowhere else).
"""

from __future__ import annotations

from pathlib import Path

import torch
from accelerate import Accelerator

from ...data.synthetic import SyntheticConfig
from ...inference.predictor import EmbeddingCache
from ...losses import LossWeights, segmentation_loss
from ...training.config import StageConfig
from ..adapter import UniFusionSam, wrap_sam
from ..adapter.grounding import text_point_loss
from ..builders import build_sam, load_sam_checkpoint, save_sam
from ..builders.stand_in import pretrain_image_encoder
from .config import SamTrainConfig
from .samples import SamSample, SamSamplePrep, SamTrainBatch, collate_sam

AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class SamEmbeddingCache(EmbeddingCache):
    """Frozen-encoder embeddings of training images, keyed by :class:`~.samples.SamSample` cache keys: the
    predictor's :class:`~unifusion_sam.inference.predictor.EmbeddingCache` (LRU, at most ``capacity``
    images and ``max_bytes`` bytes) holding CPU copies. An image's entry is ``256 x 64 x 64`` floats
    (4 MiB) for SAM at 1024 and 16 MiB for SAM 2 (its high-resolution maps ride along), so the byte
    limit is what bounds memory. Only valid while the image encoder is frozen (no LoRA): the family
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


def sam_parameter_groups(model, lr: float, text_lr: float, weight_decay: float) -> list[dict]:
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


def sam_loss(model, batch: SamTrainBatch, cache: SamEmbeddingCache | None, weights: LossWeights | None = None):
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


def pretrain_stand_in(accelerator: Accelerator, sam: torch.nn.Module, cfg: SamTrainConfig, out: Path) -> float | None:
    """Give a random SAM's image encoder SAM-like features first (``cfg.stand_in``, see
    :mod:`unifusion_sam.sam.builders.stand_in.pretrain`; skipped for a ``sam_checkpoint``). The main process
    trains it and writes ``sam_<size>.safetensors`` (a resumed run reads that file instead); every process
    then loads it. The global RNG is left untouched, so the adapter starts the same with or without this
    step. Returns the final pre-training loss (``None`` when it was read from disk)."""
    if not cfg.stand_in.steps:
        return None
    if cfg.sam_checkpoint is not None:
        accelerator.print(f"stand_in.steps={cfg.stand_in.steps} ignored: {cfg.sam_checkpoint} is a pretrained SAM")
        return None
    path = out / f"sam_{cfg.sam}.safetensors"
    final = None
    if accelerator.is_main_process and not (cfg.resume and path.exists()):
        synthetic = SyntheticConfig(seed=cfg.seed, image_size=(cfg.synthetic_image_size, cfg.synthetic_image_size))
        sam.to(accelerator.device)  # pre-train where the adapter will train (a GPU when there is one)
        with torch.random.fork_rng():
            torch.manual_seed(cfg.seed)
            losses = pretrain_image_encoder(sam, synthetic, cfg.stand_in, num_workers=cfg.num_workers,
                                            autocast_dtype=AUTOCAST_DTYPES.get(accelerator.mixed_precision))
        final = losses[-1]
        accelerator.print(f"stand-in SAM image encoder pre-trained for {len(losses)} steps: loss {losses[0]:.3f} -> {final:.3f}")
        out.mkdir(parents=True, exist_ok=True)
        save_sam(sam, path)
    accelerator.wait_for_everyone()
    if final is None:
        load_sam_checkpoint(sam, path, cfg.sam)  # wrap_sam freezes it
    return final


class SamTrainFamily:
    """The UniFusion-SAM family for :func:`~unifusion_sam.training.run.run` (see the module docstring):
    samples at the SAM's input size, the frozen encoder's embeddings from a cache, the segmentation loss,
    and the text transformer training only in stages that say so (and only when the adapter config
    includes it)."""

    tracker_project = "unifusion_sam"

    def __init__(self, cfg: SamTrainConfig) -> None:
        self.cfg = cfg
        self.transform = None
        self.cache: SamEmbeddingCache | None = None

    def build_model(self, accelerator: Accelerator) -> tuple[UniFusionSam, dict[str, float]]:
        cfg = self.cfg
        sam = build_sam(cfg.sam, checkpoint=cfg.sam_checkpoint, image_size=cfg.sam_image_size)
        stand_in_loss = pretrain_stand_in(accelerator, sam, cfg, Path(cfg.output_dir))
        model = wrap_sam(sam, adapter=cfg.adapter, **cfg.adapter_overrides)
        if accelerator.is_main_process:
            model.print_trainable_parameters()
        self.transform = model.transform
        return model, ({} if stand_in_loss is None else {"final_loss_stand_in": stand_in_loss})

    def parameter_groups(self, model: UniFusionSam) -> list[dict]:
        return sam_parameter_groups(model, lr=1.0, text_lr=1.0, weight_decay=self.cfg.weight_decay)

    def setup(self, accelerator: Accelerator, model: UniFusionSam) -> list:
        cfg = self.cfg
        if not model.lora_enabled and cfg.embedding_cache:
            self.cache = SamEmbeddingCache(cfg.embedding_cache, max_bytes=int(cfg.embedding_cache_gb * 2**30))
        return []

    def sample_prep(self, stage_name: str, stage: StageConfig) -> SamSamplePrep:
        return SamSamplePrep(self.transform)

    def collate(self, samples: list[SamSample]) -> SamTrainBatch:
        return collate_sam(samples)

    def loss(self, model, batch: SamTrainBatch) -> dict[str, torch.Tensor]:
        return sam_loss(model, batch, self.cache)

    def start_stage(self, model: UniFusionSam, stage_name: str, stage: StageConfig) -> None:
        if model.text_encoder is not None:
            train_text = stage.train_text_encoder and model.config.text.trainable
            model.text_encoder.unfreeze() if train_text else model.text_encoder.freeze()

    def save(self, model: UniFusionSam, out: Path) -> None:
        """The adapter into ``out/adapter``; a randomly initialised SAM (no checkpoint, no LoRA, no
        stand-in pre-training, which wrote its file already) into ``out/sam_<size>.safetensors``, since it
        exists nowhere else."""
        cfg = self.cfg
        model.save_pretrained(out / "adapter")
        if cfg.sam_checkpoint is None and not model.lora_enabled and not cfg.stand_in.steps:
            save_sam(model.sam, out / f"sam_{cfg.sam}.safetensors")

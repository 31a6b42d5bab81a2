"""Train a UniFusion-SAM adapter: ``accelerate launch recipes/train_sam_unifusion.py [--config ...]``.

With no arguments it builds the offline stand-in SAM (``build_sam("lite0")``: SAM's prompt encoder and
mask decoder on a frozen ImageNet-pretrained EfficientNet-Lite0 with a SAM-style neck), gives its neck
SAM-like features in a short pre-training on synthetic scenes (``stand_in``), then trains the adapter
with the offline MiniLM text encoder on the library's synthetic data through both stages (image, then
video), evaluates on a fixed held-out synthetic split, and writes ``metrics.json``, ``run_config.json``,
overlay PNGs, a GIF of a tracked video, the adapter and (because that SAM exists nowhere else) the SAM
itself (``sam_lite0.safetensors``) under ``outputs/default``. ``--sam tiny`` is a random tiny ViT SAM;
a real one plugs in with ``--sam vit_b --sam_checkpoint sam_vit_b_01ec64.pth --adapter sam-vit-b``.

Every config field can be set from the command line with its dotted name, e.g.
``--image.lr 2e-4 --batch_size 4 --stage video --resume latest``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from accelerate import Accelerator, DistributedDataParallelKwargs
from accelerate.utils import set_seed
from safetensors.torch import load_file

from unifusion_sam.data.synthetic import SyntheticConfig
from unifusion_sam.sam import build_sam, wrap_sam
from unifusion_sam.training import (
    TrainConfig,
    TrainEmbeddingCache,
    build_source,
    evaluate_synthetic,
    flat_fields,
    parameter_groups,
    pretrain_image_encoder,
    resolve_mixed_precision,
)
from unifusion_sam.training.engine import SamTrainFamily
from unifusion_sam.training.loop import load_resume_state, print_table, resolve_resume, stage_lambdas, train_stages
from unifusion_sam.training.loop import parse_config as parse_config_of

DEFAULT_CONFIG = Path(__file__).parent / "configs" / "default.yaml"
AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def parse_config(argv: list[str] | None = None) -> TrainConfig:
    """``--config`` YAML + dotted overrides; unknown keys and bad values fail here, before training."""
    return parse_config_of(TrainConfig, DEFAULT_CONFIG, argv, __doc__)


def save_sam(sam: torch.nn.Module, path: Path) -> None:
    """Write the SAM's state dict as safetensors, atomically; ``build_sam(size, checkpoint=path)`` reads it."""
    from unifusion_sam.checkpoint_io import atomic_write, portable_tensors, write_safetensors

    def write(folder: Path) -> list[str]:
        write_safetensors(portable_tensors(sam.state_dict()), folder / path.name, {"format": "pt"})
        return [path.name]

    atomic_write(path.parent, write)


def pretrain_stand_in(accelerator: Accelerator, sam: torch.nn.Module, cfg: TrainConfig, out: Path) -> float | None:
    """Give a random SAM's image encoder SAM-like features first (``cfg.stand_in``, see
    ``unifusion_sam.training.stand_in``; skipped for a ``sam_checkpoint``). The main process trains it and writes
    ``sam_<size>.safetensors`` (a resumed run reads that file instead); every process then loads it.
    The global RNG is left untouched, so the adapter starts the same with or without this step.
    Returns the final pre-training loss (``None`` when it was read from disk)."""
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
        sam.load_state_dict(load_file(str(path)))  # wrap_sam freezes it
    return final


def main(argv: list[str] | None = None) -> dict:
    cfg = parse_config(argv)
    out = Path(cfg.output_dir)
    accelerator = Accelerator(
        gradient_accumulation_steps=cfg.grad_accum,
        # "auto": bf16 where the GPU or CPU computes it natively, float32 elsewhere
        mixed_precision=resolve_mixed_precision(cfg.mixed_precision),
        log_with=None if cfg.tracker == "none" else cfg.tracker,
        project_dir=str(out),
        # without CUDA, `accelerate launch --multi_gpu --num_processes N` runs N CPU processes (gloo)
        cpu=not torch.cuda.is_available(),
        # a batch comes from one dataset, so some batches never touch the text encoder
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
    )
    set_seed(cfg.seed, deterministic=cfg.deterministic)
    accelerator.print(f"mixed precision: {accelerator.mixed_precision} ({cfg.mixed_precision})")
    if accelerator.is_main_process:  # what this run is: read by the benchmarks that re-score it
        out.mkdir(parents=True, exist_ok=True)
        cfg.save(out / "run_config.json")
    stages = cfg.stages()

    # ---- model: a frozen SAM, wrapped with the adapter
    sam = build_sam(cfg.sam, checkpoint=cfg.sam_checkpoint, image_size=cfg.sam_image_size)
    stand_in_loss = pretrain_stand_in(accelerator, sam, cfg, out)
    model = wrap_sam(sam, adapter=cfg.adapter, **cfg.adapter_overrides)
    if accelerator.is_main_process:
        model.print_trainable_parameters()
    synthetic = cfg.heldout_synthetic()  # the held-out split: the same for every seed and both families
    uses_synthetic = any(d.kind == "synthetic" for _, s in stages for d in s.data)

    # ---- data sources (built now so a bad path fails before any training)
    sources = {name: [build_source(d, cfg.synthetic_image_size, cfg.seed) for d in stage.data] for name, stage in stages}

    # ---- one optimiser for the whole run; per-stage learning rates come from the schedule
    groups = parameter_groups(model, lr=1.0, text_lr=1.0, weight_decay=cfg.weight_decay)
    # the fused kernel (CPU and CUDA) is several times faster than the per-tensor loop
    optimizer = torch.optim.AdamW(groups, lr=1.0, fused=accelerator.mixed_precision != "fp16")
    make_lambda, _ = stage_lambdas(stages, cfg.warmup_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, [make_lambda(g) for g in groups])
    model, optimizer = accelerator.prepare(model, optimizer)
    accelerator.register_for_checkpointing(scheduler)
    inner = accelerator.unwrap_model(model)
    cache = None if inner.lora_enabled or cfg.embedding_cache == 0 else TrainEmbeddingCache(
        cfg.embedding_cache, max_bytes=int(cfg.embedding_cache_gb * 2**30))

    metrics: dict = {} if stand_in_loss is None else {"final_loss_stand_in": stand_in_loss}
    if (accelerator.is_main_process and uses_synthetic and cfg.eval_samples and cfg.eval_untrained
            and resolve_resume(out, cfg.resume) is None):
        with accelerator.autocast():  # evaluated in the precision it trains in
            metrics["untrained"] = evaluate_synthetic(inner, synthetic, n_images=cfg.eval_samples, n_videos=cfg.eval_videos)
        (out).mkdir(parents=True, exist_ok=True)
        (out / "untrained_metrics.json").write_text(json.dumps(metrics["untrained"], indent=2))
    accelerator.wait_for_everyone()

    global_step = load_resume_state(accelerator, out, cfg.resume)
    if global_step and (out / "untrained_metrics.json").exists():
        metrics["untrained"] = json.loads((out / "untrained_metrics.json").read_text())
    if cfg.tracker != "none":
        accelerator.init_trackers("unifusion_sam", config={k: str(v) for k, v in flat_fields(cfg).items()})

    # ---- the stages: the shared accelerate loop (accumulate, clip, save_state) with this family's step
    losses, global_step = train_stages(accelerator, model, optimizer, scheduler,
                                       SamTrainFamily(inner.transform, cache), cfg, sources, global_step)
    metrics.update(losses)

    if accelerator.is_main_process:
        if uses_synthetic and cfg.eval_samples:
            with accelerator.autocast():
                trained = evaluate_synthetic(inner, synthetic, n_images=cfg.eval_samples, n_videos=cfg.eval_videos,
                                             out_dir=out)
            metrics = {**trained, **metrics}
        metrics["steps"] = global_step
        inner.recorded_metrics = {k: v for k, v in metrics.items() if isinstance(v, float)}
        inner.save_pretrained(out / "adapter")
        if cfg.sam_checkpoint is None and not inner.lora_enabled and not cfg.stand_in.steps:
            # a randomly initialised SAM exists nowhere else: keep it next to the adapter (a pre-trained
            # stand-in was written before training and has not changed since)
            save_sam(inner.sam, out / f"sam_{cfg.sam}.safetensors")
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
        print_table(metrics)
    accelerator.end_training()
    return metrics


if __name__ == "__main__":
    main(sys.argv[1:])

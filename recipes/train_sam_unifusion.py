"""Train a UniFusion-SAM adapter: ``accelerate launch recipes/train_sam_unifusion.py [--config ...]``.

With no arguments it builds a random tiny SAM, gives its image encoder SAM-like features in a short
pre-training on synthetic scenes (``stand_in``), then trains the adapter with the offline MiniLM text
encoder on the library's synthetic data through both stages (image, then video), evaluates on a
held-out synthetic split, and writes ``metrics.json``, overlay PNGs, a GIF of a tracked video, the
adapter and (because that SAM exists nowhere else) the SAM itself (``sam_tiny.safetensors``) under
``outputs/default``.

Every config field can be set from the command line with its dotted name, e.g.
``--image.lr 2e-4 --batch_size 4 --stage video --resume latest``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path

import torch
from accelerate import Accelerator, DistributedDataParallelKwargs
from accelerate.utils import set_seed
from safetensors.torch import load_file
from tqdm.auto import tqdm

from unifusion_sam.data.synthetic import SyntheticConfig
from unifusion_sam.sam import build_sam, wrap_sam
from unifusion_sam.training import (
    MixtureDataset,
    TrainConfig,
    TrainEmbeddingCache,
    apply_overrides,
    build_source,
    collate,
    compute_loss,
    evaluate_synthetic,
    flat_fields,
    parameter_groups,
    pretrain_image_encoder,
    warmup_step_schedule,
)

DEFAULT_CONFIG = Path(__file__).parent / "configs" / "default.yaml"


def parse_config(argv: list[str] | None = None) -> TrainConfig:
    """``--config`` YAML + dotted overrides; unknown keys and bad values fail here, before training."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config", default=str(DEFAULT_CONFIG))
    known, rest = pre.parse_known_args(argv)
    cfg = TrainConfig.from_yaml(known.config)
    parser = argparse.ArgumentParser(description=__doc__, parents=[pre], formatter_class=argparse.RawDescriptionHelpFormatter)
    for key, value in flat_fields(cfg).items():
        parser.add_argument(f"--{key}", dest=key, default=None, metavar=type(value).__name__.upper())
    args = parser.parse_args(rest)
    overrides = {k: v for k, v in vars(args).items() if v is not None and k != "config"}
    return apply_overrides(cfg, overrides)


def stage_lambdas(stages, warmup: int):
    """Per-group learning-rate functions of the global step (optimizer groups were built with lr=1)."""
    offsets = [0]
    for _, stage in stages:
        offsets.append(offsets[-1] + stage.steps)

    def make(kind: str):
        def fn(step: int) -> float:
            for (_, stage), start in zip(stages, offsets):
                if step < start + stage.steps:
                    local = step - start
                    base = stage.lr if kind == "main" else (stage.text_lr if stage.train_text_encoder else 0.0)
                    return base * warmup_step_schedule(warmup, stage.decay_steps)(local)
            return 0.0

        return fn

    return make, offsets


def save_checkpoint(accelerator: Accelerator, out: Path, global_step: int, keep: int) -> None:
    """``accelerator.save_state`` into a temporary folder, renamed into place; ``latest`` is updated last."""
    ckpts = out / "checkpoints"
    final = ckpts / f"step_{global_step:07d}"
    tmp = ckpts / f".tmp_step_{global_step:07d}"
    if accelerator.is_main_process and tmp.exists():
        shutil.rmtree(tmp)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (tmp / "train_state.json").write_text(json.dumps({"global_step": global_step}))
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        pointer = ckpts / "latest.tmp"
        pointer.write_text(final.name)
        os.replace(pointer, ckpts / "latest")
        for old in sorted(p for p in ckpts.glob("step_*") if p.is_dir())[:-keep]:
            shutil.rmtree(old)
    accelerator.wait_for_everyone()


def resolve_resume(out: Path, resume: str | None) -> Path | None:
    if resume is None:
        return None
    if resume == "latest":
        pointer = out / "checkpoints" / "latest"
        if not pointer.exists():
            return None  # nothing saved yet: start from scratch
        return out / "checkpoints" / pointer.read_text().strip()
    path = Path(resume)
    if not (path / "train_state.json").exists():
        raise FileNotFoundError(f"--resume {resume}: not a checkpoint folder (no train_state.json)")
    return path


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
            losses = pretrain_image_encoder(sam, synthetic, cfg.stand_in, num_workers=cfg.num_workers)
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
        mixed_precision=cfg.mixed_precision,
        log_with=None if cfg.tracker == "none" else cfg.tracker,
        project_dir=str(out),
        # without CUDA, `accelerate launch --multi_gpu --num_processes N` runs N CPU processes (gloo)
        cpu=not torch.cuda.is_available(),
        # a batch comes from one dataset, so some batches never touch the text encoder
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
    )
    set_seed(cfg.seed, deterministic=cfg.deterministic)
    stages = cfg.stages()

    # ---- model: a frozen SAM, wrapped with the adapter
    sam = build_sam(cfg.sam, checkpoint=cfg.sam_checkpoint, image_size=cfg.sam_image_size)
    stand_in_loss = pretrain_stand_in(accelerator, sam, cfg, out)
    model = wrap_sam(sam, adapter=cfg.adapter, **cfg.adapter_overrides)
    if accelerator.is_main_process:
        model.print_trainable_parameters()
    synthetic = SyntheticConfig(seed=cfg.seed + 1000, image_size=(cfg.synthetic_image_size, cfg.synthetic_image_size))
    uses_synthetic = any(d.kind == "synthetic" for _, s in stages for d in s.data)

    # ---- data sources (built now so a bad path fails before any training)
    sources = {name: [build_source(d, cfg.synthetic_image_size, cfg.seed) for d in stage.data] for name, stage in stages}

    # ---- one optimiser for the whole run; per-stage learning rates come from the schedule
    groups = parameter_groups(model, lr=1.0, text_lr=1.0, weight_decay=cfg.weight_decay)
    # the fused kernel (CPU and CUDA) is several times faster than the per-tensor loop
    optimizer = torch.optim.AdamW(groups, lr=1.0, fused=cfg.mixed_precision != "fp16")
    make_lambda, offsets = stage_lambdas(stages, cfg.warmup_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, [make_lambda("text" if g["name"].startswith("text") else "main") for g in groups]
    )
    model, optimizer = accelerator.prepare(model, optimizer)
    accelerator.register_for_checkpointing(scheduler)
    inner = accelerator.unwrap_model(model)
    cache = None if inner.lora_enabled or cfg.embedding_cache == 0 else TrainEmbeddingCache(cfg.embedding_cache)

    metrics: dict = {} if stand_in_loss is None else {"final_loss_stand_in": stand_in_loss}
    if accelerator.is_main_process and uses_synthetic and cfg.eval_samples and resolve_resume(out, cfg.resume) is None:
        metrics["untrained"] = evaluate_synthetic(inner, synthetic, n_images=cfg.eval_samples, n_videos=cfg.eval_videos)
        (out).mkdir(parents=True, exist_ok=True)
        (out / "untrained_metrics.json").write_text(json.dumps(metrics["untrained"], indent=2))
    accelerator.wait_for_everyone()

    global_step = 0
    resume_dir = resolve_resume(out, cfg.resume)
    if resume_dir is not None:
        accelerator.load_state(str(resume_dir))
        global_step = json.loads((resume_dir / "train_state.json").read_text())["global_step"]
        if (out / "untrained_metrics.json").exists():
            metrics["untrained"] = json.loads((out / "untrained_metrics.json").read_text())
        accelerator.print(f"resumed from {resume_dir} at step {global_step}")
    if cfg.tracker != "none":
        accelerator.init_trackers("unifusion_sam", config={k: str(v) for k, v in flat_fields(cfg).items()})

    total_steps = offsets[-1]
    bar = tqdm(total=total_steps, initial=global_step, disable=not accelerator.is_main_process, desc="train")
    for (name, stage), start in zip(stages, offsets):
        if global_step >= start + stage.steps:
            continue
        if inner.text_encoder is not None:
            # the adapter config decides whether the text transformer is part of the adapter at all
            train_text = stage.train_text_encoder and inner.config.text.trainable
            inner.text_encoder.unfreeze() if train_text else inner.text_encoder.freeze()
        per_process = stage.steps * cfg.grad_accum * cfg.batch_size
        dataset = MixtureDataset(
            sources[name], [d.ratio for d in stage.data], inner.transform,
            length=per_process * accelerator.num_processes, batch_size=cfg.batch_size,
            seed=cfg.seed, stage=name, flip_prob=cfg.flip_prob,
        )
        loader = torch.utils.data.DataLoader(
            dataset, batch_size=cfg.batch_size, shuffle=False, num_workers=cfg.num_workers, collate_fn=collate,
            persistent_workers=cfg.num_workers > 0,
        )
        loader = accelerator.prepare(loader)
        done = global_step - start
        batches = iter(accelerator.skip_first_batches(loader, done * cfg.grad_accum) if done else loader)
        model.train()
        trainable = [p for p in model.parameters() if p.requires_grad]
        tic, seen = time.perf_counter(), 0
        for _ in range(done, stage.steps):
            step_loss = 0.0
            for _ in range(cfg.grad_accum):
                batch = next(batches)
                with accelerator.accumulate(model):
                    terms = compute_loss(model, batch, cache)
                    accelerator.backward(terms["loss"])
                    if accelerator.sync_gradients:
                        # parameters a batch did not use get zero gradients, as DDP gives them, so one
                        # process and N processes take the same optimiser step (weight decay included)
                        for p in trainable:
                            if p.grad is None:
                                p.grad = torch.zeros_like(p)
                        if cfg.max_grad_norm > 0:
                            accelerator.clip_grad_norm_(trainable, cfg.max_grad_norm)
                    optimizer.step()
                    optimizer.zero_grad()
                step_loss = step_loss + terms["loss"].detach() / cfg.grad_accum
                seen += len(batch.tasks) * accelerator.num_processes
            scheduler.step()
            global_step += 1
            # the step's loss: mean over micro-batches and processes (= the loss of the global batch)
            loss = accelerator.reduce(step_loss, reduction="mean").item()
            if not math.isfinite(loss):
                raise FloatingPointError(f"loss is {loss} at step {global_step} ({name} stage)")
            rate = seen / max(time.perf_counter() - tic, 1e-9)
            bar.set_postfix(stage=name, loss=f"{loss:.3f}", samples_s=f"{rate:.1f}")
            bar.update()
            if global_step % cfg.log_every == 0 and cfg.tracker != "none":
                accelerator.log({"loss": loss, **{k: v.item() for k, v in terms.items() if k != "loss"},
                                 "lr": scheduler.get_last_lr()[0], "samples_per_s": rate}, step=global_step)
            if global_step % cfg.save_every == 0 or global_step == start + stage.steps:
                save_checkpoint(accelerator, out, global_step, cfg.keep_checkpoints)
        metrics[f"final_loss_{name}"] = loss
    bar.close()

    if accelerator.is_main_process:
        if uses_synthetic and cfg.eval_samples:
            trained = evaluate_synthetic(inner, synthetic, n_images=cfg.eval_samples, n_videos=cfg.eval_videos, out_dir=out)
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


def print_table(metrics: dict) -> None:
    keys = ["ris_miou", "ris_oiou", "fss_miou", "vos_jf", "rvos_jf"]
    if not all(k in metrics for k in keys):
        return
    before = metrics.get("untrained", {})
    print(f"\n{'metric':<10} {'untrained':>10} {'trained':>10}")
    for k in keys:
        print(f"{k:<10} {before.get(k, float('nan')):>10.3f} {metrics[k]:>10.3f}")


if __name__ == "__main__":
    main(sys.argv[1:])

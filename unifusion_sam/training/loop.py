"""The step loop of the shared run (:func:`unifusion_sam.training.run.run`): command-line config, per-stage
schedules, atomic resumable checkpoints and the accelerate loop over stages of mixed data.

A model family plugs in through a :class:`~unifusion_sam.training.family.TrainFamily`: how a record
becomes its tensors (in the data-loader workers), how samples are batched, the loss of a batch, and what
changes at the start of a stage (e.g. freezing the text encoder). Everything else (data mixing, resuming,
multi-process, mixed precision, gradient accumulation, clipping, logging, progress bars) is shared.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import torch
from accelerate import Accelerator
from tqdm.auto import tqdm

from ..checkpoint.io import atomic_write_text, fsync_tree, replace_folder
from .config import RunConfig, StageConfig, apply_overrides, flat_fields
from .family import TrainFamily
from .mixing import MixtureDataset
from .sources import Source


def parse_config(cls: type[RunConfig], default: str | os.PathLike, argv: list[str] | None, doc: str | None = None):
    """``--config`` YAML + dotted overrides; unknown keys and bad values fail here, before training."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config", default=str(default))
    known, rest = pre.parse_known_args(argv)
    cfg = cls.from_yaml(known.config)
    parser = argparse.ArgumentParser(description=doc, parents=[pre], formatter_class=argparse.RawDescriptionHelpFormatter)
    for key, value in flat_fields(cfg).items():
        parser.add_argument(f"--{key}", dest=key, default=None, metavar=type(value).__name__.upper())
    args = parser.parse_args(rest)
    overrides = {k: v for k, v in vars(args).items() if v is not None and k != "config"}
    return apply_overrides(cfg, overrides)


def warmup_step_schedule(warmup: int, decay_steps: tuple[int, ...], factor: float = 0.1):
    """LambdaLR multiplier: linear warmup over ``warmup`` steps, then x ``factor`` at each decay step."""

    def fn(step: int) -> float:
        scale = min(1.0, (step + 1) / warmup) if warmup > 0 else 1.0
        for s in decay_steps:
            if step >= s:
                scale *= factor
        return scale

    return fn


def stage_lambdas(stages: list[tuple[str, StageConfig]], warmup: int) -> tuple[Callable[[dict], Callable], list[int]]:
    """Per-group learning-rate functions of the global step (optimizer groups are built with lr=1): a
    group named ``text*`` follows the stage's ``text_lr`` (0 when the text encoder is frozen), any other
    the stage's ``lr`` times the group's ``lr_scale`` (e.g. 0.1 for a backbone). Returns ``(make,
    offsets)``: ``make(group)`` gives the group's function, ``offsets`` the first global step of each stage
    (and the total)."""
    offsets = [0]
    for _, stage in stages:
        offsets.append(offsets[-1] + stage.steps)

    def make(group: dict) -> Callable[[int], float]:
        text = str(group.get("name", "")).startswith("text")
        scale = float(group.get("lr_scale", 1.0))

        def fn(step: int) -> float:
            for (_, stage), start in zip(stages, offsets):
                if step < start + stage.steps:
                    local = step - start
                    base = (stage.text_lr if stage.train_text_encoder else 0.0) if text else stage.lr * scale
                    return base * warmup_step_schedule(warmup, stage.decay_steps)(local)
            return 0.0

        return fn

    return make, offsets


def save_checkpoint(accelerator: Accelerator, out: Path, global_step: int, keep: int) -> None:
    """``accelerator.save_state`` (and ``train_state.json``) into a temporary folder, fsynced and put in place
    as ``checkpoints/step_<N>`` in one step (:func:`~unifusion_sam.checkpoint.io.replace_folder`: an existing
    one is swapped atomically); then ``latest`` is replaced atomically; then all but the ``keep`` newest
    (this one always kept; ``keep`` <= 0: all) are renamed aside and deleted. A crash at any point leaves
    ``latest`` naming a complete checkpoint."""
    ckpts = out / "checkpoints"
    final = ckpts / f"step_{global_step:07d}"
    tmp = ckpts / f".tmp_step_{global_step:07d}"
    if accelerator.is_main_process:
        for stale in ckpts.glob(".tmp_step_*") if ckpts.is_dir() else []:  # left by a crash
            shutil.rmtree(stale, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (tmp / "train_state.json").write_text(json.dumps({"global_step": global_step}))
        fsync_tree(tmp)
        replace_folder(tmp, final)
        atomic_write_text(ckpts / "latest", final.name)
        others = sorted(p for p in ckpts.glob("step_*") if p.is_dir() and p != final)
        for old in others[: max(len(others) - keep + 1, 0)] if keep > 0 else []:
            trash = ckpts / f".tmp_{old.name}_deleted"  # renamed first: never a half-deleted step_* folder
            os.replace(old, trash)
            shutil.rmtree(trash, ignore_errors=True)
    accelerator.wait_for_everyone()


def resolve_resume(out: Path, resume: str | None) -> Path | None:
    """``--resume latest`` (the newest checkpoint of ``out``, or nothing yet) or a checkpoint folder."""
    if resume is None:
        return None
    if resume == "latest":
        pointer = out / "checkpoints" / "latest"
        if not pointer.exists():
            return None  # nothing saved yet: start from scratch
        path = out / "checkpoints" / pointer.read_text().strip()
        if not (path / "train_state.json").is_file():
            raise FileNotFoundError(f"--resume latest: {pointer} names {path}, which is not a complete checkpoint "
                                    "folder (no train_state.json)")
        return path
    path = Path(resume)
    if not (path / "train_state.json").exists():
        raise FileNotFoundError(f"--resume {resume}: not a checkpoint folder (no train_state.json)")
    return path


def load_resume_state(accelerator: Accelerator, out: Path, resume: str | None) -> int:
    """Restore model, optimiser, scheduler and registered objects from ``resume``; returns the global step."""
    resume_dir = resolve_resume(out, resume)
    if resume_dir is None:
        return 0
    accelerator.load_state(str(resume_dir))
    global_step = json.loads((resume_dir / "train_state.json").read_text())["global_step"]
    accelerator.print(f"resumed from {resume_dir} at step {global_step}")
    return global_step


def train_stages(accelerator: Accelerator, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                 scheduler: torch.optim.lr_scheduler.LRScheduler, family: TrainFamily, cfg: RunConfig,
                 sources: dict[str, list[Source]], global_step: int = 0) -> tuple[dict[str, float], int]:
    """Run the configured stages from ``global_step`` (prepared ``model`` / ``optimizer``; the scheduler
    registered for checkpointing). Each stage draws its batches from its sources in the configured ratios
    (one source per batch), takes ``steps`` optimiser steps of ``grad_accum`` micro-batches, clips the
    gradient norm, and saves a checkpoint every ``save_every`` steps and at its end. Returns the final loss
    of each stage run (``final_loss_<stage>``) and the global step reached."""
    stages = cfg.stages()
    out = Path(cfg.output_dir)
    inner = accelerator.unwrap_model(model)
    _, offsets = stage_lambdas(stages, cfg.warmup_steps)
    metrics: dict[str, float] = {}
    bar = tqdm(total=offsets[-1], initial=global_step, disable=not accelerator.is_main_process, desc="train")
    for (name, stage), start in zip(stages, offsets):
        if global_step >= start + stage.steps:
            continue
        family.start_stage(inner, name, stage)
        per_process = stage.steps * cfg.grad_accum * cfg.batch_size
        dataset = MixtureDataset(
            sources[name], [d.ratio for d in stage.data], family.sample_prep(name, stage),
            length=per_process * accelerator.num_processes, batch_size=cfg.batch_size,
            seed=cfg.seed, stage=name, flip_prob=cfg.flip_prob,
        )
        loader = torch.utils.data.DataLoader(
            dataset, batch_size=cfg.batch_size, shuffle=False, num_workers=cfg.num_workers, collate_fn=family.collate,
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
                    terms = family.loss(model, batch)
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
                accelerator.log({"loss": loss, **{k: float(v.detach()) for k, v in terms.items() if k != "loss"},
                                 "lr": scheduler.get_last_lr()[0], "samples_per_s": rate}, step=global_step)
            if global_step % cfg.save_every == 0 or global_step == start + stage.steps:
                save_checkpoint(accelerator, out, global_step, cfg.keep_checkpoints)
        metrics[f"final_loss_{name}"] = loss
    bar.close()
    return metrics, global_step


def print_table(metrics: dict) -> None:
    """The held-out metrics before and after training, as the recipes print them."""
    keys = ["ris_miou", "ris_oiou", "fss_miou", "vos_jf", "rvos_jf"]
    seconds = metrics.get("seconds")
    if isinstance(seconds, dict) and seconds:
        print("\ntime: " + ", ".join(f"{k} {v // 60:.0f} min {v % 60:.0f} s" for k, v in seconds.items()))
    if not all(k in metrics for k in keys):
        return
    before = metrics.get("untrained")
    if before is None:  # eval_untrained: false
        print(f"\n{'metric':<10} {'trained':>10}")
        for k in keys:
            print(f"{k:<10} {metrics[k]:>10.3f}")
        return
    print(f"\n{'metric':<10} {'untrained':>10} {'trained':>10}")
    for k in keys:
        print(f"{k:<10} {before.get(k, float('nan')):>10.3f} {metrics[k]:>10.3f}")

"""The whole training run, for any model family: ``run(config, family)``.

A recipe parses its config and calls :func:`run` with its family's :class:`~.family.TrainFamily`; the run
owns the skeleton both families share:

1. the ``Accelerator`` (mixed precision, trackers, gradient accumulation; on a CPU, ``accelerate launch
   --multi_gpu --num_processes N`` runs N gloo processes) and the global seed;
2. ``run_config.json``, the data sources (a bad path fails here, before any model is built), the model
   (:meth:`~.family.TrainFamily.build_model`);
3. one AdamW over the family's parameter groups and a per-group, per-stage schedule;
4. the held-out synthetic evaluation of the untrained model (``eval_untrained``), resuming
   (``resume: latest`` or a checkpoint folder), TensorBoard;
5. the stages (:func:`~.loop.train_stages`: accumulate, clip, atomic ``save_state`` checkpoints);
6. the final evaluation (with overlay pictures and a tracked GIF), the model saved by the family,
   ``metrics.json`` and the printed table.

Returns the metrics (the same dict as ``metrics.json``).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
from accelerate import Accelerator, DistributedDataParallelKwargs
from accelerate.utils import set_seed

from ..checkpoint.io import atomic_write_text
from ..evaluation.synthetic import evaluate_synthetic
from .config import RunConfig, flat_fields, resolve_mixed_precision
from .family import TrainFamily
from .loop import load_resume_state, print_table, resolve_resume, stage_lambdas, train_stages
from .sources import build_source


def make_accelerator(cfg: RunConfig) -> Accelerator:
    """The run's ``Accelerator``: ``mixed_precision: auto`` is bf16 where the GPU or CPU computes it natively,
    float32 elsewhere; on a machine without CUDA it runs on the CPU (N gloo processes under
    ``accelerate launch --multi_gpu --num_processes N``); unused parameters are allowed, since a batch comes
    from one dataset and some batches never touch, say, the text encoder."""
    return Accelerator(
        gradient_accumulation_steps=cfg.grad_accum,
        mixed_precision=resolve_mixed_precision(cfg.mixed_precision),
        log_with=None if cfg.tracker == "none" else cfg.tracker,
        project_dir=cfg.output_dir,
        cpu=not torch.cuda.is_available(),
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
    )


def _evaluate(accelerator: Accelerator, model: torch.nn.Module, cfg: RunConfig, out_dir: Path | None = None) -> dict:
    with accelerator.autocast():  # evaluated in the precision it trains in
        return evaluate_synthetic(model, cfg.heldout_synthetic(), n_images=cfg.eval_samples, n_videos=cfg.eval_videos,
                                  out_dir=out_dir)


def _lap(clock: list[float]) -> float:
    """Seconds since the last lap (``clock`` holds its time)."""
    now = time.perf_counter()
    lap, clock[0] = now - clock[0], now
    return round(lap, 1)


def run(cfg: RunConfig, family: TrainFamily) -> dict:
    """Train ``family``'s model as ``cfg`` says (see the module docstring) and return its metrics."""
    out = Path(cfg.output_dir)
    clock = [time.perf_counter()]
    accelerator = make_accelerator(cfg)
    set_seed(cfg.seed, deterministic=cfg.deterministic)
    accelerator.print(f"mixed precision: {accelerator.mixed_precision} ({cfg.mixed_precision})")
    if accelerator.is_main_process:  # what this run is: read by the benchmarks that re-score it
        out.mkdir(parents=True, exist_ok=True)
        cfg.save(out / "run_config.json")
    stages = cfg.stages()
    sources = {name: [build_source(d, cfg.synthetic_image_size, cfg.seed) for d in stage.data] for name, stage in stages}
    model, metrics = family.build_model(accelerator)
    seconds = {"build": _lap(clock)}  # building includes a stand-in's pre-training
    uses_synthetic = any(d.kind == "synthetic" for _, s in stages for d in s.data)
    evaluate = uses_synthetic and cfg.eval_samples > 0

    # one optimiser for the whole run; per-stage, per-group learning rates come from the schedule
    groups = family.parameter_groups(model)
    # the fused kernel (CPU and CUDA) is several times faster than the per-tensor loop
    optimizer = torch.optim.AdamW(groups, lr=1.0, fused=accelerator.mixed_precision != "fp16")
    make_lambda, _ = stage_lambdas(stages, cfg.warmup_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, [make_lambda(g) for g in groups])
    model, optimizer = accelerator.prepare(model, optimizer)
    inner = accelerator.unwrap_model(model)
    accelerator.register_for_checkpointing(scheduler, *family.setup(accelerator, inner))

    if accelerator.is_main_process and evaluate and cfg.eval_untrained and resolve_resume(out, cfg.resume) is None:
        metrics["untrained"] = _evaluate(accelerator, inner, cfg)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "untrained_metrics.json", json.dumps(metrics["untrained"], indent=2))
    accelerator.wait_for_everyone()
    global_step = load_resume_state(accelerator, out, cfg.resume)
    if global_step and (out / "untrained_metrics.json").exists():
        metrics["untrained"] = json.loads((out / "untrained_metrics.json").read_text())
    if cfg.tracker != "none":
        accelerator.init_trackers(family.tracker_project, config={k: str(v) for k, v in flat_fields(cfg).items()})

    _lap(clock)
    losses, global_step = train_stages(accelerator, model, optimizer, scheduler, family, cfg, sources, global_step)
    metrics.update(losses)
    seconds["train"] = _lap(clock)

    if accelerator.is_main_process:
        if evaluate:
            metrics = {**_evaluate(accelerator, inner, cfg, out_dir=out), **metrics}
            seconds["evaluate"] = _lap(clock)
        metrics["steps"] = global_step
        metrics["seconds"] = seconds  # wall time of each phase (this process)
        inner.recorded_metrics = {k: v for k, v in metrics.items() if isinstance(v, float)}
        family.save(inner, out)
        atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2))  # old or new, never a part
        print_table(metrics)
    accelerator.end_training()
    return metrics

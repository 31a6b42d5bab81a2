"""Train the full UniRef++ model: ``accelerate launch recipes/train_uniref.py [--config ...]``.

The paper trains in three stages (Table 10), each starting from the previous one's weights:

    accelerate launch recipes/train_uniref.py --config recipes/configs/uniref_r50_det.yaml
    accelerate launch recipes/train_uniref.py --config recipes/configs/uniref_r50_image.yaml \\
        --init outputs/uniref_r50_det/model
    accelerate launch recipes/train_uniref.py --config recipes/configs/uniref_r50_video.yaml \\
        --init outputs/uniref_r50_image/model

(``--init`` also takes a converted authors' checkpoint: ``unifusion-sam convert-uniref``.) With no
arguments it trains the small preset (the frozen ImageNet-pretrained EfficientNet-Lite0 backbone, 2 + 2
layers, 20 queries, the offline MiniLM text encoder; everything else from random weights) on the library's
synthetic data through the image and video stages (``recipes/configs/uniref_default.yaml``), evaluates on the same
held-out synthetic split as the UniFusion-SAM default run, and writes ``metrics.json``, overlay PNGs, a
GIF of a tracked video and the model (``model/``) under ``outputs/uniref_default``.

Every config field can be set from the command line with its dotted name, e.g.
``--image.lr 2e-4 --batch_size 4 --stage video --resume latest``. The data sources, their mixing, the
step loop, checkpoints and the held-out evaluation are the ones ``train_sam_unifusion.py`` uses.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from accelerate import Accelerator, DistributedDataParallelKwargs
from accelerate.utils import set_seed

from unifusion_sam.checkpoint_io import read_weights
from unifusion_sam.training import build_source, evaluate_synthetic, flat_fields, resolve_mixed_precision
from unifusion_sam.training.loop import (
    load_resume_state,
    parse_config,
    print_table,
    resolve_resume,
    stage_lambdas,
    train_stages,
)
from unifusion_sam.uniref import build_uniref
from unifusion_sam.uniref.checkpoint import MODEL_WEIGHTS_NAME, TEXT_CONFIG_NAME, build_text_encoder, load_state_strict
from unifusion_sam.uniref.training import UniRefTrainConfig, UniRefTrainFamily, uniref_parameter_groups

DEFAULT_CONFIG = Path(__file__).parent / "configs" / "uniref_default.yaml"


def build_model(cfg: UniRefTrainConfig):
    """The preset (with overrides) and, with ``init``, its weights, loaded strictly (a checkpoint that does
    not fit the preset is an error here, before training; ``init_reset_class_heads`` keeps the fresh
    class heads when the number of classes changed between stages)."""
    if cfg.init is None:
        return build_uniref(cfg.model, **cfg.model_overrides)
    folder = Path(cfg.init)
    config = build_uniref(cfg.model, **cfg.model_overrides).config  # validates the overrides cheaply enough
    text = build_text_encoder(config.text, folder) if config.text is not None and (folder / TEXT_CONFIG_NAME).is_file() else None
    model = build_uniref(config, text_encoder=text)
    weights = folder / MODEL_WEIGHTS_NAME
    if not weights.is_file():
        raise FileNotFoundError(f"init: {weights} does not exist (a folder written by save_pretrained or convert-uniref)")
    state, _ = read_weights(weights)
    if cfg.init_reset_class_heads:
        fresh = model.state_dict()
        state = {**state, **{k: v for k, v in fresh.items() if k.startswith("class_embed.")}}
    load_state_strict(model, state, str(weights))
    return model


def main(argv: list[str] | None = None) -> dict:
    cfg = parse_config(UniRefTrainConfig, DEFAULT_CONFIG, argv, __doc__)
    out = Path(cfg.output_dir)
    accelerator = Accelerator(
        gradient_accumulation_steps=cfg.grad_accum,
        mixed_precision=resolve_mixed_precision(cfg.mixed_precision),
        log_with=None if cfg.tracker == "none" else cfg.tracker,
        project_dir=str(out),
        cpu=not torch.cuda.is_available(),
        # detection batches never touch the reference encoders, RIS batches not the mask encoder
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
    )
    set_seed(cfg.seed, deterministic=cfg.deterministic)
    if accelerator.is_main_process:  # what this run is: read by the benchmarks that re-score it
        out.mkdir(parents=True, exist_ok=True)
        cfg.save(out / "run_config.json")
    stages = cfg.stages()

    # ---- data sources (built first so a bad path fails before the model loads)
    sources = {name: [build_source(d, cfg.synthetic_image_size, cfg.seed) for d in stage.data] for name, stage in stages}

    # ---- model: a preset, random or from --init (strict)
    model = build_model(cfg)
    family = UniRefTrainFamily(model.config)
    if model.text_encoder is not None and any(s.train_text_encoder for _, s in stages):
        model.text_encoder.unfreeze()  # in the optimiser; stages that freeze it give it no learning rate
    if cfg.backbone_lr_mult == 0:
        model.backbone.requires_grad_(False)  # frozen: no gradients computed through it at all
    if accelerator.is_main_process:
        total = sum(p.numel() for p in model.parameters())
        accelerator.print(f"UniRef++ {cfg.model}: {total:,} parameters")
    synthetic = cfg.heldout_synthetic()  # the held-out split: the same for every seed and both families
    uses_synthetic = any(d.kind == "synthetic" for _, s in stages for d in s.data)

    # ---- one optimiser; per-stage, per-group learning rates come from the schedule
    groups = uniref_parameter_groups(model, cfg.weight_decay, cfg.backbone_lr_mult, cfg.linear_proj_lr_mult)
    optimizer = torch.optim.AdamW(groups, lr=1.0, fused=accelerator.mixed_precision != "fp16")
    make_lambda, _ = stage_lambdas(stages, cfg.warmup_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, [make_lambda(g) for g in groups])
    model, optimizer = accelerator.prepare(model, optimizer)
    accelerator.register_for_checkpointing(scheduler, family.criterion)  # BoxInst's warm-up counter too
    inner = accelerator.unwrap_model(model)

    metrics: dict = {}
    if (accelerator.is_main_process and uses_synthetic and cfg.eval_samples and cfg.eval_untrained
            and resolve_resume(out, cfg.resume) is None):
        with accelerator.autocast():  # evaluated in the precision it trains in
            metrics["untrained"] = evaluate_synthetic(inner, synthetic, n_images=cfg.eval_samples, n_videos=cfg.eval_videos)
        out.mkdir(parents=True, exist_ok=True)
        (out / "untrained_metrics.json").write_text(json.dumps(metrics["untrained"], indent=2))
    accelerator.wait_for_everyone()

    global_step = load_resume_state(accelerator, out, cfg.resume)
    if global_step and (out / "untrained_metrics.json").exists():
        metrics["untrained"] = json.loads((out / "untrained_metrics.json").read_text())
    if cfg.tracker != "none":
        accelerator.init_trackers("uniref", config={k: str(v) for k, v in flat_fields(cfg).items()})

    # ---- the stages: the shared accelerate loop with this family's samples, forward and criterion
    losses, global_step = train_stages(accelerator, model, optimizer, scheduler, family, cfg, sources, global_step)
    metrics.update(losses)

    if accelerator.is_main_process:
        if uses_synthetic and cfg.eval_samples:
            with accelerator.autocast():
                trained = evaluate_synthetic(inner, synthetic, n_images=cfg.eval_samples, n_videos=cfg.eval_videos,
                                             out_dir=out)
            metrics = {**trained, **metrics}
        metrics["steps"] = global_step
        inner.recorded_metrics = {k: v for k, v in metrics.items() if isinstance(v, float)}
        inner.save_pretrained(out / "model")
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
        print_table(metrics)
    accelerator.end_training()
    return metrics


if __name__ == "__main__":
    main(sys.argv[1:])

"""Build SAM 2 models of the Hiera sizes in :data:`~unifusion_sam.sam.specs.SAM2_SPECS`, for Meta's ``sam2``
and ``transformers.Sam2Model``.

``build_sam("sam2_hiera_t", checkpoint="sam2_hiera_tiny.pt")`` (see :mod:`.registry`) builds Meta's
``SAM2Base`` from the config ``sam2`` ships (``configs/sam2/sam2_hiera_t.yaml``, through its own
``build_sam2``, without any download) and loads the checkpoint safely (``weights_only=True``, strict,
a mismatch names the parameter). ``sam2.1_hiera_*`` use the SAM 2.1 configs (SAM 2.1 checkpoints);
their image path is the same architecture, so their size name is that of SAM 2. ``sam2_tiny`` is a
small random SAM 2 (Hiera 16 wide, 5 blocks, input 256) for tests; ``image_size`` builds any size at
another input resolution (a multiple of 32). ``build_hf_sam("sam2_tiny")`` builds the same sizes as a
``transformers.Sam2Model`` (real weights: ``Sam2Model.from_pretrained("facebook/sam2-hiera-tiny")``).

Meta's ``sam2`` is optional (``pip install "unifusion-sam[sam2]"``) and imported only when needed.
"""

from __future__ import annotations

from torch import nn

from ..specs import SAM2_INSTALL_HINT, Sam2Spec, sam2_spec


def _overrides(spec: Sam2Spec, name: str) -> list[str]:
    """Hydra overrides of the ``sam2`` config: the input size, and for ``sam2_tiny`` the small trunk and memory."""
    out = [f"++model.image_size={spec.image_size}"]
    grid = spec.image_size // 16
    for attn in ("self_attention", "cross_attention"):  # RoPE grid of the (unused here) memory attention
        out.append(f"++model.memory_attention.layer.{attn}.feat_sizes=[{grid},{grid}]")
    if name == "sam2_tiny":
        widths = [spec.embed_dim * 2**i for i in range(len(spec.stages))]
        trunk = "++model.image_encoder.trunk."
        out += [f"{trunk}embed_dim={spec.embed_dim}", f"{trunk}num_heads={spec.num_heads}",
                f"{trunk}stages={list(spec.stages)}", f"{trunk}global_att_blocks={list(spec.global_att_blocks)}",
                f"{trunk}window_spec={list(spec.window_spec)}",
                f"{trunk}window_pos_embed_bkg_spatial_size={list(spec.window_pos_embed_bkg_spatial_size)}",
                f"++model.image_encoder.neck.backbone_channel_list={widths[::-1]}",
                "++model.memory_attention.num_layers=1", "++model.memory_attention.layer.dim_feedforward=256",
                "++model.memory_encoder.fuser.num_layers=1"]
    return out


def build_meta_sam2(name: str, image_size: int | None = None) -> nn.Module:
    """Meta's ``SAM2Base`` of size ``name`` with random weights, built by ``sam2.build_sam.build_sam2`` from the
    config ``sam2`` ships (with SAM 2's image-predictor post-processing: the dynamic multimask fallback)."""
    spec = sam2_spec(name, image_size)
    try:
        from sam2.build_sam import build_sam2
    except ImportError as exc:
        raise ImportError(SAM2_INSTALL_HINT) from exc
    return build_sam2(spec.config, ckpt_path=None, device="cpu", mode="eval",
                      hydra_overrides_extra=_overrides(spec, name))


def build_hf_sam2(name: str = "sam2_tiny", image_size: int | None = None) -> nn.Module:
    """A randomly initialised ``transformers.Sam2Model`` with the Hiera size ``name``.

    transformers starts the no-memory embedding at zero; it is drawn here like Meta's (std 0.02) so that a
    random model shows the image-mode addition. Real weights load with ``Sam2Model.from_pretrained``.
    """
    import torch
    from transformers import Sam2Config, Sam2Model

    spec = sam2_spec(name, image_size)
    s, e, h = spec.image_size, spec.embed_dim, spec.num_heads
    levels = len(spec.stages)
    backbone = {
        "model_type": "sam2_hiera_det_model", "hidden_size": e, "num_attention_heads": h,
        "blocks_per_stage": list(spec.stages), "embed_dim_per_stage": [e * 2**i for i in range(levels)],
        "num_attention_heads_per_stage": [h * 2**i for i in range(levels)],
        "window_size_per_stage": list(spec.window_spec), "global_attention_blocks": list(spec.global_att_blocks),
        "window_positional_embedding_background_size": list(spec.window_pos_embed_bkg_spatial_size),
        "image_size": [s, s],
    }
    config = Sam2Config(
        vision_config={"model_type": "sam2_vision_model", "backbone_config": backbone,
                       "backbone_channel_list": [e * 2**i for i in range(levels)][::-1],
                       "backbone_feature_sizes": [[s // 4, s // 4], [s // 8, s // 8], [s // 16, s // 16]]},
        prompt_encoder_config={"image_size": s},
        mask_decoder_config={},
    )
    model = Sam2Model(config)
    with torch.no_grad():
        model.no_memory_embedding.normal_(0.0, 0.02)
    return model.eval()

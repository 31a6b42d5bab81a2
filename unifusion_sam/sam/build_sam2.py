"""Build SAM 2 models: a plain dict registry of Hiera sizes, for Meta's ``sam2`` and ``transformers.Sam2Model``.

``build_sam("sam2_hiera_t", checkpoint="sam2_hiera_tiny.pt")`` (see :mod:`.build`) builds Meta's
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

from dataclasses import dataclass

from torch import nn

SAM2_INSTALL_HINT = ('Meta\'s SAM 2 is an optional dependency: pip install "unifusion-sam[sam2]" '
                     "(or SAM2_BUILD_CUDA=0 pip install --no-build-isolation sam2; its CUDA extension is not needed)")


@dataclass(frozen=True)
class Sam2Spec:
    """A SAM 2 image encoder (Hiera trunk + FPN neck to 256 channels); the prompt encoder and mask decoder
    are the same for all. ``config``: the Meta ``sam2`` config it is built from; ``preset``: its adapter preset."""

    embed_dim: int
    num_heads: int
    stages: tuple[int, ...]
    global_att_blocks: tuple[int, ...]
    window_spec: tuple[int, ...]
    window_pos_embed_bkg_spatial_size: tuple[int, int]
    config: str
    preset: str
    image_size: int = 1024

    @property
    def size_name(self) -> str:
        """The name an adapter records: the architecture (``sam2.1_hiera_t`` is ``sam2_hiera_t``)."""
        return next(n for n, s in SAM2_SPECS.items() if s.architecture == self.architecture)

    @property
    def architecture(self) -> tuple:
        return self.embed_dim, self.num_heads, self.stages, self.global_att_blocks, self.window_spec


_T = dict(embed_dim=96, num_heads=1, stages=(1, 2, 7, 2), global_att_blocks=(5, 7, 9), window_spec=(8, 4, 14, 7),
          window_pos_embed_bkg_spatial_size=(7, 7), preset="sam2-hiera-tiny")
_S = dict(embed_dim=96, num_heads=1, stages=(1, 2, 11, 2), global_att_blocks=(7, 10, 13), window_spec=(8, 4, 14, 7),
          window_pos_embed_bkg_spatial_size=(7, 7), preset="sam2-hiera-small")
_B = dict(embed_dim=112, num_heads=2, stages=(2, 3, 16, 3), global_att_blocks=(12, 16, 20), window_spec=(8, 4, 14, 7),
          window_pos_embed_bkg_spatial_size=(14, 14), preset="sam2-hiera-base-plus")
_L = dict(embed_dim=144, num_heads=2, stages=(2, 6, 36, 4), global_att_blocks=(23, 33, 43), window_spec=(8, 4, 16, 8),
          window_pos_embed_bkg_spatial_size=(7, 7), preset="sam2-hiera-large")

SAM2_SPECS: dict[str, Sam2Spec] = {
    "sam2_hiera_t": Sam2Spec(**_T, config="configs/sam2/sam2_hiera_t.yaml"),
    "sam2_hiera_s": Sam2Spec(**_S, config="configs/sam2/sam2_hiera_s.yaml"),
    "sam2_hiera_b+": Sam2Spec(**_B, config="configs/sam2/sam2_hiera_b+.yaml"),
    "sam2_hiera_l": Sam2Spec(**_L, config="configs/sam2/sam2_hiera_l.yaml"),
    "sam2.1_hiera_t": Sam2Spec(**_T, config="configs/sam2.1/sam2.1_hiera_t.yaml"),
    "sam2.1_hiera_s": Sam2Spec(**_S, config="configs/sam2.1/sam2.1_hiera_s.yaml"),
    "sam2.1_hiera_b+": Sam2Spec(**_B, config="configs/sam2.1/sam2.1_hiera_b+.yaml"),
    "sam2.1_hiera_l": Sam2Spec(**_L, config="configs/sam2.1/sam2.1_hiera_l.yaml"),
    # small and random, for tests: the tiny config with a 16-wide, 5-block Hiera and a one-layer memory path
    "sam2_tiny": Sam2Spec(16, 1, (1, 1, 2, 1), (3,), (8, 4, 4, 2), (4, 4), config="configs/sam2/sam2_hiera_t.yaml",
                          preset="sam2-tiny", image_size=256),
}
# Hub ids of the published SAM 2 weights as ``transformers.Sam2Model`` and Meta's checkpoint file names.
HUB_SAM2_IDS = {"sam2_hiera_t": "facebook/sam2-hiera-tiny", "sam2_hiera_s": "facebook/sam2-hiera-small",
                "sam2_hiera_b+": "facebook/sam2-hiera-base-plus", "sam2_hiera_l": "facebook/sam2-hiera-large"}
META_SAM2_FILES = {"sam2_hiera_t": "sam2_hiera_tiny.pt", "sam2_hiera_s": "sam2_hiera_small.pt",
                   "sam2_hiera_b+": "sam2_hiera_base_plus.pt", "sam2_hiera_l": "sam2_hiera_large.pt"}


def sam2_spec(name: str, image_size: int | None = None) -> Sam2Spec:
    """The spec of ``name`` at ``image_size`` (default: its own); a ValueError names a bad value."""
    if name not in SAM2_SPECS:
        raise ValueError(f"unknown SAM 2 size {name!r}; choose one of {sorted(SAM2_SPECS)}")
    spec = SAM2_SPECS[name]
    if image_size is not None:
        if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size <= 0 or image_size % 32:
            raise ValueError(f"image_size of SAM 2 must be a positive multiple of 32, got {image_size!r}")
        spec = Sam2Spec(**{**spec.__dict__, "image_size": image_size})
    return spec


def sam2_size_name(embed_dim: int, num_heads: int, stages: tuple[int, ...]) -> str:
    """The registry name of a Hiera trunk (``sam2_hiera_t`` ...), ``sam2_custom-<width>`` for an unknown one."""
    for spec in SAM2_SPECS.values():
        if (spec.embed_dim, spec.num_heads, spec.stages) == (embed_dim, num_heads, tuple(stages)):
            return spec.size_name
    return f"sam2_custom-{embed_dim}"


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


def sam2_name_from_state(state: dict) -> str | None:
    """The registry name of a Meta SAM 2 state dict (``sam2.1_hiera_*`` when it has SAM 2.1's extra
    parameters), read from the Hiera trunk's width and stage layout; ``None`` if it is no SAM 2 / unknown."""
    proj = state.get("image_encoder.trunk.patch_embed.proj.weight")
    if proj is None:
        return None
    prefix = "image_encoder.trunk.blocks."
    blocks = {int(k[len(prefix):].split(".")[0]) for k in state if k.startswith(prefix)}
    # the first block of every later stage widens the features with a block-level projection
    starts = sorted(int(k[len(prefix):].split(".")[0]) for k in state
                    if k.startswith(prefix) and k.endswith(".proj.weight") and ".attn." not in k)
    bounds = [0, *starts, max(blocks) + 1]
    stages = tuple(b - a for a, b in zip(bounds[:-1], bounds[1:]))
    version = "sam2.1" if "no_obj_embed_spatial" in state else "sam2"
    for name, spec in SAM2_SPECS.items():
        if name.startswith(version + "_") and (spec.embed_dim, spec.stages) == (int(proj.shape[0]), stages):
            return name
    return None

"""The SAM sizes this family knows, as plain dict registries: Meta's ViT SAMs (:data:`SAM_SPECS`) and SAM 2's
Hiera sizes (:data:`SAM2_SPECS`), with the names of their published weights, and :func:`sam_size_name`,
which tells the size of a wrapped SAM from its image encoder. Nothing here builds a model
(:mod:`.builders` does) or imports one.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SamSpec:
    """Image-encoder size of a SAM variant (the prompt encoder and mask decoder are shared by all)."""

    embed_dim: int
    depth: int
    num_heads: int
    global_attn_indexes: tuple[int, ...]
    image_size: int = 1024
    window_size: int = 14
    decoder_mlp_dim: int = 2048


SAM_SPECS: dict[str, SamSpec] = {
    "vit_b": SamSpec(768, 12, 12, (2, 5, 8, 11)),
    "vit_l": SamSpec(1024, 24, 16, (5, 11, 17, 23)),
    "vit_h": SamSpec(1280, 32, 16, (7, 15, 23, 31)),
    "tiny": SamSpec(192, 4, 3, (1, 3), image_size=256, window_size=8, decoder_mlp_dim=512),
}
# Published SAM weights on the Hub (the Meta .pth files hold the same weights).
HUB_SAM_IDS = {"vit_b": "facebook/sam-vit-base", "vit_l": "facebook/sam-vit-large", "vit_h": "facebook/sam-vit-huge"}
META_SAM_FILES = {"vit_b": "sam_vit_b_01ec64.pth", "vit_l": "sam_vit_l_0b3195.pth", "vit_h": "sam_vit_h_4b8939.pth"}
PROMPT_DIM = 256
PATCH_SIZE = 16
IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)


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


def sam_size_name(backend) -> str:
    """The size a wrapped SAM is (what an adapter records as ``sam_size``): the backend's own (SAM 2: the
    Hiera size), a custom encoder's ``size_name`` (the stand-in ``lite0``), else the ViT size of its width
    (``custom-<width>`` for none)."""
    known = backend.size_name()
    if known is not None:
        return known
    custom = getattr(backend.image_encoder, "size_name", None)
    if isinstance(custom, str):
        return custom
    if backend.family == "meta":
        patch = getattr(backend.image_encoder, "patch_embed", None)
        if patch is None:
            return f"custom-{type(backend.image_encoder).__name__}"
        width = int(patch.proj.out_channels)
    else:
        width = int(backend.model.config.vision_config.hidden_size)
    for name, spec in SAM_SPECS.items():
        if spec.embed_dim == width:
            return name
    return f"custom-{width}"

"""UniFusion's locality prior for mask references (``mask_pos_logit``)."""

import math

import pytest
import torch

from unifusion_sam.fusion import ReferenceTokens, UniFusion, UniFusionConfig

C, GRID = 64, 6


def _sincos(grid: int = GRID, dim: int = C, seed: int = 0) -> torch.Tensor:
    """A random Fourier encoding like SAM's ``[1, dim, grid, grid]`` (``|pe|^2 = dim / 2`` everywhere)."""
    g = torch.Generator().manual_seed(seed)
    freqs = torch.randn(2, dim // 2, generator=g)
    ys, xs = torch.meshgrid(torch.linspace(0, 1, grid), torch.linspace(0, 1, grid), indexing="ij")
    angles = 2 * math.pi * torch.stack([xs, ys], -1) @ freqs  # [grid, grid, dim/2]
    return torch.cat([angles.sin(), angles.cos()], -1).permute(2, 0, 1)[None]


def _block(logit: float = 8.0, match: float = 48.0) -> UniFusion:
    torch.manual_seed(0)
    return UniFusion(UniFusionConfig(dim=C, num_heads=4, head_dim=16, match_logit=match, mask_pos_logit=logit))


def _open_gate(block: UniFusion) -> None:
    """alpha = 1, gamma = beta = 0: the branch adds its attention output unchanged."""
    with torch.no_grad():
        block.modulation[1].bias[2 * C:] = 1.0


def test_prior_logit_is_about_the_configured_value_here_and_fades_with_distance():
    block = _block(logit=8.0)
    with torch.no_grad():
        where = block.pos_proj(_sincos().flatten(2).transpose(1, 2)[0]).view(-1, 4, 16).transpose(0, 1)
        logits = where @ where.transpose(1, 2) / 4.0  # [heads, HW, HW]
    same = logits.diagonal(dim1=1, dim2=2).mean().item()
    corner_to_corner = logits[:, 0, GRID * GRID - 1].mean().item()
    assert 6.0 < same < 10.0
    assert corner_to_corner < 2.0
    assert logits[:, 0, 1].mean().item() > corner_to_corner  # a neighbour gets more than a far location


def test_identity_at_init_with_the_prior():
    block = _block()
    feature = torch.randn(2, C, GRID, GRID)
    refs = ReferenceTokens.from_maps(torch.randn(2, C, GRID, GRID), torch.randn(2, C, GRID, GRID))
    assert torch.equal(block(feature, mask=refs, pos=_sincos()), feature)


def test_the_prior_tells_a_lookalike_from_the_object_where_it_was():
    """Two identical patches a and b; the reference (the same frame) marks only a. Appearance alone
    treats a and b the same; with the prior, a gets the object's value and b does not."""
    torch.manual_seed(1)
    feature = torch.randn(1, C, GRID, GRID)
    a, b = (1, 1), (4, 4)
    feature[0, :, b[0], b[1]] = feature[0, :, a[0], a[1]]
    obj = torch.zeros(1, C, GRID, GRID)
    obj[0, 0, a[0], a[1]] = 10.0  # the value map: "the object is here"
    refs = ReferenceTokens.from_maps(feature, obj)
    pe = _sincos()

    def object_signal(block: UniFusion) -> tuple[float, float]:
        _open_gate(block)
        with torch.no_grad():
            attended = block(feature, mask=refs, pos=pe) - feature  # [1, C, H, W]
            marked = block.out_proj(block.v_proj(obj[0, :, a[0], a[1]]))  # the marked value, projected
            background = block.out_proj(block.v_proj(torch.zeros(C)))
        direction = marked - background
        return tuple(float(((attended[0, :, p[0], p[1]] - background) @ direction) / (direction @ direction)) for p in (a, b))

    plain_a, plain_b = object_signal(_block(logit=0.0))
    assert plain_a == pytest.approx(plain_b, abs=1e-5) and 0.3 < plain_a < 0.7, (plain_a, plain_b)  # no way to tell
    near_a, near_b = object_signal(_block(logit=16.0))
    assert near_a > 0.6 and near_b < 0.1, (near_a, near_b)  # the object keeps most of its attention, b almost none


def test_language_branch_ignores_positions():
    block = _block()
    _open_gate(block)
    feature = torch.randn(2, C, GRID, GRID)
    words = ReferenceTokens(torch.randn(2, 5, C), torch.randn(2, 5, C))
    assert torch.equal(block(feature, lang=words, pos=_sincos()), block(feature, lang=words))


def test_gradients_reach_the_position_projection():
    block = _block()
    _open_gate(block)
    feature = torch.randn(2, C, GRID, GRID)
    refs = ReferenceTokens.from_maps(torch.randn(2, C, GRID, GRID), torch.randn(2, C, GRID, GRID))
    block(feature, mask=refs, pos=_sincos()).square().mean().backward()
    assert block.pos_proj.weight.grad is not None and block.pos_proj.weight.grad.abs().sum() > 0


def test_several_references_each_get_the_grid_positions():
    """Two reference maps concatenated (first + previous frame): each is encoded on the same grid, so
    concatenating them equals fusing with the keys' positions tiled per reference."""
    block = _block()
    _open_gate(block)
    feature = torch.randn(1, C, GRID, GRID)
    one = ReferenceTokens.from_maps(torch.randn(1, C, GRID, GRID), torch.randn(1, C, GRID, GRID))
    both = ReferenceTokens.cat([one, one])  # the same reference twice attends exactly like once
    pe = _sincos()
    torch.testing.assert_close(block(feature, mask=both, pos=pe), block(feature, mask=one, pos=pe))


def test_errors_name_the_problem():
    block = _block()
    feature = torch.randn(1, C, GRID, GRID)
    refs = ReferenceTokens.from_maps(torch.randn(1, C, GRID, GRID), torch.randn(1, C, GRID, GRID))
    with pytest.raises(ValueError, match="pass pos"):
        block(feature, mask=refs)
    with pytest.raises(ValueError, match=r"pos must be \[1 or 1, 64, 6, 6\]"):
        block(feature, mask=refs, pos=torch.randn(1, C, 3, 3))
    odd = ReferenceTokens(torch.randn(1, 7, C), torch.randn(1, 7, C))
    with pytest.raises(ValueError, match="maps on the 6x6 grid; got 7 tokens"):
        block(feature, mask=odd, pos=_sincos())
    with pytest.raises(ValueError, match="needs a UniFusion with a locality prior"):
        _block(logit=0.0).fuse(feature, refs, _sincos())
    for bad in (-1.0, True, "8"):
        with pytest.raises(ValueError, match="mask_pos_logit"):
            UniFusionConfig(mask_pos_logit=bad)
    assert UniFusionConfig.from_dict({"dim": 32}).mask_pos_logit == 0.0  # configs saved before it: off


# ------------------------------------------------------------------ lang_pos: position-aware language queries
def _lang_block(lang_pos: bool = True) -> UniFusion:
    torch.manual_seed(0)
    return UniFusion(UniFusionConfig(dim=C, num_heads=4, head_dim=16, lang_pos=lang_pos))


def test_lang_pos_starts_as_the_plain_language_branch_and_checks_its_input():
    with_pos, plain = _lang_block(True), _lang_block(False)
    plain.load_state_dict({k: v for k, v in with_pos.state_dict().items() if not k.startswith("lang_pos_proj")})
    assert torch.count_nonzero(with_pos.lang_pos_proj.weight) == 0
    feature = torch.randn(2, C, GRID, GRID)
    words = ReferenceTokens(torch.randn(2, 5, C), torch.randn(2, 5, C))
    assert torch.equal(with_pos(feature, lang=words, lang_pos=_sincos()), feature)  # identity at init
    for block in (with_pos, plain):
        _open_gate(block)
    torch.testing.assert_close(with_pos(feature, lang=words, lang_pos=_sincos()), plain(feature, lang=words))
    with pytest.raises(ValueError, match="lang_pos"):
        with_pos(feature, lang=words)
    with pytest.raises(TypeError, match="lang_pos"):
        UniFusionConfig(lang_pos=1)


def test_lang_pos_lets_a_word_be_attended_by_one_side_of_the_image():
    """Identical features everywhere: without positions every location reads the same words; with a
    trained position projection the left and right halves attend to different words."""
    block = _lang_block(True)
    _open_gate(block)
    feature = torch.randn(1, C, 1, 1).expand(1, C, GRID, GRID).contiguous()
    words = ReferenceTokens(torch.randn(1, 2, C), torch.randn(1, 2, C))
    pe = _sincos()
    out = block(feature, lang=words, lang_pos=pe)
    assert torch.allclose(out[..., 0], out[..., -1], atol=1e-5)  # no position yet: the same everywhere
    with torch.no_grad():
        block.lang_pos_proj.weight.normal_(0, 1.0)
    out = block(feature, lang=words, lang_pos=pe)
    assert (out[..., 0] - out[..., -1]).abs().max() > 1e-2


def test_local_flags_give_the_prior_to_video_frames_only():
    """Tokens marked non-local (an example from another image) get no key encoding: exactly what a zero
    key encoding gives; tokens marked local, or no flags, exactly what the prior gives everyone."""
    block = _block()
    _open_gate(block)
    torch.manual_seed(2)
    feature = torch.randn(2, C, GRID, GRID)
    keys, values = torch.randn(2, 2 * GRID * GRID, C), torch.randn(2, 2 * GRID * GRID, C)
    pos = _sincos()
    plain = ReferenceTokens(keys, values)
    with torch.no_grad():
        everyone = block.fuse(feature, plain, pos)
        local = ReferenceTokens(keys, values, local=torch.ones(2, 2 * GRID * GRID, dtype=torch.bool))
        assert torch.equal(block.fuse(feature, local, pos), everyone)
        nobody = ReferenceTokens(keys, values, local=torch.zeros(2, 2 * GRID * GRID, dtype=torch.bool))
        zero_keys = block.fuse(feature, plain, pos, key_pos=torch.zeros(1, C, GRID, GRID))
        assert torch.allclose(block.fuse(feature, nobody, pos), zero_keys, atol=1e-6)
        assert not torch.allclose(zero_keys, everyone, atol=1e-3)
        # half and half (an example, then the previous frame): each half as its own kind
        half = torch.zeros(2, 2 * GRID * GRID, dtype=torch.bool)
        half[:, GRID * GRID:] = True
        mixed = block.fuse(feature, ReferenceTokens(keys, values, local=half), pos)
        assert not torch.allclose(mixed, everyone, atol=1e-3) and not torch.allclose(mixed, zero_keys, atol=1e-3)
    cat = ReferenceTokens.cat([ReferenceTokens(keys[:, :GRID * GRID], values[:, :GRID * GRID],
                                               local=torch.zeros(2, GRID * GRID, dtype=torch.bool)),
                               ReferenceTokens(keys[:, GRID * GRID:], values[:, GRID * GRID:])])
    assert torch.equal(cat.local, half)
    with pytest.raises(ValueError, match="local must be a"):
        ReferenceTokens(keys, values, local=torch.zeros(2, 3, dtype=torch.bool))

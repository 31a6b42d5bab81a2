"""UniFusion: identity at init, learning, backends, padding, level sharing."""

import pytest
import torch

from unifusion_sam.fusion import ReferenceTokens, UniFusion, UniFusionConfig, cross_attention, flash_attn_available


def _refs(b=2, length=10, c=32, pad_from=None):
    keys, values = torch.randn(b, length, c), torch.randn(b, length, c)
    mask = None
    if pad_from is not None:
        mask = torch.zeros(b, length, dtype=torch.bool)
        for i, start in enumerate(pad_from):
            mask[i, start:] = True
    return ReferenceTokens(keys, values, mask)


def _trained_block(c=32):
    block = UniFusion(UniFusionConfig(dim=c, num_heads=4, head_dim=8))
    with torch.no_grad():
        for p in block.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return block


def test_identity_at_init_exactly():
    block = UniFusion(UniFusionConfig(dim=32, num_heads=4, head_dim=8))
    feature = torch.randn(2, 32, 6, 5)
    out = block(feature, lang=_refs(pad_from=[4, 10]), mask=_refs(length=30))
    assert (out - feature).abs().max().item() == 0.0


def test_one_step_on_reference_dependent_loss_moves_output():
    torch.manual_seed(1)
    block = UniFusion(UniFusionConfig(dim=32, num_heads=4, head_dim=8))
    feature = torch.randn(2, 32, 4, 4)
    ref = _refs(length=7)
    target = ref.values.mean(1)[:, :, None, None].expand_as(feature)  # needs the reference
    opt = torch.optim.SGD(block.parameters(), lr=0.1)
    loss = ((block(feature, mask=ref) - target) ** 2).mean()
    loss.backward()
    opt.step()
    with torch.no_grad():
        out = block(feature, mask=ref)
    assert (out - feature).abs().max().item() > 1e-4
    with torch.no_grad():
        new_loss = ((out - target) ** 2).mean()
    assert new_loss < loss


@pytest.mark.parametrize("pad", [None, [3, 9]])
@pytest.mark.parametrize("heads", [(4, 8), (8, 32)])
def test_backends_agree(pad, heads):
    trained = UniFusion(UniFusionConfig(dim=32, num_heads=heads[0], head_dim=heads[1]))
    with torch.no_grad():
        for p in trained.parameters():
            p.add_(0.1 * torch.randn_like(p))
    feature = torch.randn(2, 32, 5, 7)
    ref = _refs(pad_from=pad)
    outs = {}
    for backend in ("sdpa", "math"):
        trained.config.backend = backend
        outs[backend] = trained(feature, lang=ref)
    assert torch.allclose(outs["sdpa"], outs["math"], atol=1e-5, rtol=0)
    assert (outs["sdpa"] - feature).abs().max() > 1e-3  # the fusion actually did something


@pytest.mark.parametrize("pad", [None, [5, 12]])
def test_cross_attention_functions_agree(pad):
    q, k, v = torch.randn(2, 4, 20, 16), torch.randn(2, 4, 12, 16), torch.randn(2, 4, 12, 16)
    mask = None if pad is None else torch.arange(12)[None, :] >= torch.tensor(pad)[:, None]
    ref = cross_attention(q, k, v, mask, backend="math")
    assert torch.allclose(cross_attention(q, k, v, mask, backend="sdpa"), ref, atol=1e-5, rtol=0)
    # flash_attn requested on CPU/fp32 falls back to sdpa and still agrees
    assert torch.allclose(cross_attention(q, k, v, mask, backend="flash_attn"), ref, atol=1e-5, rtol=0)


@pytest.mark.skipif(not (torch.cuda.is_available() and flash_attn_available()), reason="needs CUDA and flash-attn")
@pytest.mark.parametrize("pad", [None, [5, 12]])
def test_flash_attn_agrees_with_math(pad):  # pragma: no cover - GPU only
    dev = torch.device("cuda")
    q, k, v = (torch.randn(2, 4, n, 32, device=dev, dtype=torch.float16) for n in (20, 12, 12))
    mask = None if pad is None else torch.arange(12, device=dev)[None, :] >= torch.tensor(pad, device=dev)[:, None]
    ref = cross_attention(q.float(), k.float(), v.float(), mask, backend="math")
    out = cross_attention(q, k, v, mask, backend="flash_attn").float()
    assert torch.allclose(out, ref, atol=2e-3)


@pytest.mark.parametrize("backend", ["sdpa", "math"])
def test_padded_keys_change_nothing(backend):
    block = _trained_block()
    block.config.backend = backend
    feature = torch.randn(2, 32, 4, 6)
    ref = _refs(pad_from=[4, 7])
    out = block(feature, lang=ref)
    keys, values = ref.keys.clone(), ref.values.clone()
    keys[ref.padding_mask] = 1e3 * torch.randn_like(keys[ref.padding_mask])
    values[ref.padding_mask] = -1e3
    out2 = block(feature, lang=ReferenceTokens(keys, values, ref.padding_mask))
    assert torch.equal(out, out2)


def test_sample_without_reference_is_untouched():
    block = _trained_block()
    feature = torch.randn(2, 32, 3, 3)
    ref = _refs(pad_from=[0, 5])  # sample 0 has no valid token
    out = block(feature, lang=ref)
    assert torch.equal(out[0], feature[0])
    assert not torch.allclose(out[1], feature[1])
    assert torch.isfinite(out).all()


def test_branches_are_summed():
    block = _trained_block()
    feature = torch.randn(1, 32, 4, 4)
    lang, mask = _refs(b=1), _refs(b=1, length=16)
    both = block(feature, lang=lang, mask=mask)
    expected = feature + block.fuse(feature, lang) + block.fuse(feature, mask)
    assert torch.allclose(both, expected, atol=1e-6)


def test_mask_references_concatenate_along_tokens():
    first, prev = _refs(b=2, length=6), _refs(b=2, length=4, pad_from=[2, 4])
    cat = ReferenceTokens.cat([first, prev])
    assert cat.keys.shape == (2, 10, 32)
    assert cat.padding_mask.tolist()[0] == [False] * 6 + [False, False, True, True]


def test_same_instance_serves_all_levels_and_gradients_reach_all_parameters():
    block = _trained_block()
    loss = 0
    for size in [(16, 16), (8, 8), (4, 4), (2, 3)]:
        feature = torch.randn(2, 32, *size)
        out = block(feature, lang=_refs(pad_from=[5, 10]), mask=_refs(length=size[0] * size[1]))
        assert out.shape == feature.shape
        loss = loss + out.pow(2).mean()
    loss.backward()
    for name, p in block.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_reference_tokens_from_maps():
    k, v = torch.randn(2, 32, 3, 4), torch.randn(2, 32, 3, 4)
    tokens = ReferenceTokens.from_maps(k, v)
    assert tokens.keys.shape == (2, 12, 32)
    assert torch.equal(tokens.keys[1, 5], k[1, :, 1, 1])


def test_config_round_trip_and_validation():
    cfg = UniFusionConfig(dim=64, num_heads=8, head_dim=256, backend="math")
    assert UniFusionConfig.from_json(cfg.to_json()) == cfg
    with pytest.raises(ValueError, match="num_heads"):
        UniFusionConfig(num_heads=-1)
    with pytest.raises(ValueError, match="backend"):
        UniFusionConfig(backend="xformers")
    with pytest.raises(TypeError, match="head_dim"):
        UniFusionConfig(head_dim=3.5)
    with pytest.raises(ValueError, match="unknown keys"):
        UniFusionConfig.from_dict({"dim": 8, "heads": 2})


def test_bad_feature_shape_raises():
    block = UniFusion(UniFusionConfig(dim=32, num_heads=4, head_dim=8))
    with pytest.raises(ValueError, match=r"\[B, 32, H, W\]"):
        block(torch.randn(2, 16, 4, 4), lang=_refs())


def _attention_weights(block, queries, keys):
    """Per-head softmax weights ``[heads, Q, K]`` of the block's projections on ``[Q, C]`` / ``[K, C]`` tokens."""
    heads, hd = block.config.num_heads, block.config.head_dim
    q = block.q_proj(block.norm_q(queries)).view(-1, heads, hd).transpose(0, 1)
    k = block.k_proj(block.norm_k(keys)).view(-1, heads, hd).transpose(0, 1)
    return (q @ k.transpose(1, 2) / hd**0.5).softmax(-1)


@pytest.mark.parametrize("heads", [(4, 16), (8, 256)])
def test_matching_init_attends_to_the_identical_key(heads):
    torch.manual_seed(0)
    block = UniFusion(UniFusionConfig(dim=64, num_heads=heads[0], head_dim=heads[1], match_logit=48.0))
    assert torch.equal(block.q_proj.weight, block.k_proj.weight)
    tokens = torch.randn(50, 64)
    with torch.no_grad():
        q = block.q_proj(block.norm_q(tokens)).view(50, heads[0], heads[1])
        self_logit = (q * q).sum(-1) / heads[1] ** 0.5
        weights = _attention_weights(block, tokens, tokens)
    assert 40.0 < self_logit.mean().item() < 56.0  # ~ match_logit
    # queries put nearly all of their attention on the key equal to them
    assert weights.diagonal(dim1=1, dim2=2).mean().item() > 0.9
    # PyTorch's default initialisation spreads the attention instead
    plain = UniFusion(UniFusionConfig(dim=64, num_heads=heads[0], head_dim=heads[1], match_logit=0.0))
    with torch.no_grad():
        assert _attention_weights(plain, tokens, tokens).diagonal(dim1=1, dim2=2).mean().item() < 0.5
    # and the block is still exactly the identity
    feature = torch.randn(1, 64, 3, 3)
    assert torch.equal(block(feature, mask=ReferenceTokens(torch.randn(1, 9, 64), torch.randn(1, 9, 64))), feature)


def test_match_logit_validation():
    with pytest.raises(ValueError, match="match_logit"):
        UniFusionConfig(match_logit=-1.0)
    with pytest.raises(ValueError, match="match_logit"):
        UniFusionConfig(match_logit=True)

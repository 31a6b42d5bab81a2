"""Training config: YAML + overrides, and clear errors before training starts."""

import sys
from pathlib import Path

import pytest
import torch
import yaml

import unifusion_sam.config
from unifusion_sam.sam.training import SamEmbeddingCache, SamTrainConfig
from unifusion_sam.training import apply_overrides, parse_config, resolve_mixed_precision
from unifusion_sam.training.config import DataSource

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "recipes"))
import train_sam_unifusion as recipe  # noqa: E402

DEFAULT = Path(recipe.DEFAULT_CONFIG)


def test_default_config_loads_and_overrides():
    cfg = parse_config(SamTrainConfig, DEFAULT, ["--max_steps", "7", "--image.lr", "1e-3", "--stage", "image", "--output_dir", "x"])
    assert cfg.max_steps == 7 and cfg.image.lr == 1e-3 and cfg.stage == "image" and cfg.output_dir == "x"
    assert [name for name, _ in cfg.stages()] == ["image"]
    assert cfg.stages()[0][1].steps == 7
    assert SamTrainConfig.from_json(cfg.to_json()) == cfg


def test_unknown_keys_are_errors(tmp_path):
    data = yaml.safe_load(DEFAULT.read_text())
    data["learning_rate"] = 1.0
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ValueError, match="learning_rate"):
        parse_config(SamTrainConfig, DEFAULT, ["--config", str(path)])
    with pytest.raises(ValueError, match="unknown config key 'image.lrr'"):
        apply_overrides(SamTrainConfig.from_yaml(DEFAULT), {"image.lrr": "1"})
    with pytest.raises(SystemExit):  # argparse rejects an unknown flag
        parse_config(SamTrainConfig, DEFAULT, ["--no_such_flag", "1"])


def test_missing_dataset_path_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope"):
        DataSource(kind="davis2017", task="vos", root=str(tmp_path / "nope"))
    with pytest.raises(ValueError, match="needs a root"):
        DataSource(kind="refcoco", task="ris")


def test_auto_mixed_precision_picks_bf16_only_where_it_is_native(monkeypatch):
    assert resolve_mixed_precision("no") == "no" and resolve_mixed_precision("fp16") == "fp16"
    monkeypatch.setattr(unifusion_sam.config, "_cpu_has_amx_bf16", lambda: True)
    assert resolve_mixed_precision("auto", cuda=False) == "bf16"
    monkeypatch.setattr(unifusion_sam.config, "_cpu_has_amx_bf16", lambda: False)
    assert resolve_mixed_precision("auto", cuda=False) == "no"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert resolve_mixed_precision("auto", cuda=True) == "bf16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert resolve_mixed_precision("auto", cuda=True) == "no"
    with pytest.raises(ValueError, match="fp8"):
        resolve_mixed_precision("fp8")
    # YAML reads a bare `no` as false: from a file or the command line it still means float32
    assert apply_overrides(SamTrainConfig.from_yaml(DEFAULT), {"mixed_precision": "no"}).mixed_precision == "no"
    assert SamTrainConfig.from_dict({**SamTrainConfig.from_yaml(DEFAULT).to_dict(), "mixed_precision": False}).mixed_precision == "no"


def test_all_zero_ratios_are_an_error():
    with pytest.raises(ValueError, match="ratios are all zero"):
        apply_overrides(SamTrainConfig.from_yaml(DEFAULT), {}).image.__class__(
            steps=5, data=[{"kind": "synthetic", "task": "ris", "ratio": 0}, {"kind": "synthetic", "task": "fss", "ratio": 0}]
        )


def test_bad_values_are_errors():
    cfg = SamTrainConfig.from_yaml(DEFAULT)
    with pytest.raises(ValueError, match="mixed_precision"):
        apply_overrides(cfg, {"mixed_precision": "fp8"})
    with pytest.raises(ValueError, match="stage"):
        apply_overrides(cfg, {"stage": "everything"})
    with pytest.raises(FileNotFoundError, match="sam_checkpoint"):
        apply_overrides(cfg, {"sam_checkpoint": "/no/such/sam.pth"})
    # YAML reads 1.0e-3 as a number and [1] as a list: a path or name field says it wants a string
    with pytest.raises(TypeError, match=r"sam_checkpoint must be a string or null, got 0\.001"):
        apply_overrides(cfg, {"sam_checkpoint": "1.0e-3"})
    with pytest.raises(TypeError, match=r"output_dir must be a string, got \[1\]"):
        apply_overrides(cfg, {"output_dir": "[1]"})
    assert apply_overrides(cfg, {"adapter": "null"}).adapter is None


def test_sam_checkpoint_of_another_size_fails_before_training(tmp_path):
    import torch

    from unifusion_sam.sam import build_sam

    path = tmp_path / "sam_tiny.pth"
    torch.save(build_sam("tiny").state_dict(), path)
    with pytest.raises(ValueError, match="does not match SAM size 'vit_b'"):
        recipe.main(["--sam", "vit_b", "--sam_checkpoint", str(path), "--output_dir", str(tmp_path / "o"),
                     "--tracker", "none", "--eval_samples", "0"])
    assert not (tmp_path / "o" / "checkpoints").exists()


class _CountingEncoder:
    """Stands in for a model: ``encode_image`` returns a distinct ``[N, 4, 8, 8]`` float tensor (1 KiB each)."""

    def __init__(self):
        self.calls = 0

    def encode_image(self, pixels):
        self.calls += pixels.shape[0]
        return pixels.mean(dim=(1, 2, 3), keepdim=True).expand(-1, 4, 8, 8).clone()


def test_embedding_cache_is_bounded_by_images_and_bytes():
    import torch


    model = _CountingEncoder()
    cache = SamEmbeddingCache(capacity=100, max_bytes=3 * 1024)  # room for three 1 KiB embeddings
    pixels = torch.arange(5, dtype=torch.float32).view(5, 1, 1, 1).expand(5, 3, 2, 2)
    keys = [f"img{i}" for i in range(5)]
    first = cache.embed(model, pixels, keys)
    assert model.calls == 5 and len(cache) == 3 and cache.bytes == 3 * 1024  # the two oldest went out
    again = cache.embed(model, pixels[2:], keys[2:])  # the three newest: all hits, nothing encoded
    assert model.calls == 5 and cache.hits == 3 and torch.equal(again, first[2:])
    cache.embed(model, pixels[:1], keys[:1])  # evicted earlier: encoded again
    assert model.calls == 6 and len(cache) == 3
    by_count = SamEmbeddingCache(capacity=2)
    by_count.embed(model, pixels, keys)
    assert len(by_count) == 2
    with pytest.raises(ValueError, match="capacity"):
        SamEmbeddingCache(capacity=-1)
    with pytest.raises(ValueError, match="embedding_cache_gb"):
        apply_overrides(SamTrainConfig.from_yaml(DEFAULT), {"embedding_cache_gb": -1.0})

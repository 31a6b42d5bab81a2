"""Tiny random SAM 2 models for tests (``tests/test_sam2_*.py``), built offline.

``FAMILIES`` are the two SAM 2 implementations: ``"meta_sam2"`` (Meta's ``sam2`` ``SAM2Base``, skipped
when ``sam2`` is not installed) and ``"hf_sam2"`` (``transformers.Sam2Model``). Both are ``sam2_tiny``:
a 16-wide, 5-block Hiera at input 256 (embedding 16 x 16, low-res logits 64 x 64).
"""

from __future__ import annotations

import copy
import importlib.util

import pytest
import torch

HAS_SAM2 = importlib.util.find_spec("sam2") is not None
needs_sam2 = pytest.mark.skipif(not HAS_SAM2, reason='Meta sam2 is not installed (pip install "unifusion-sam[sam2]")')
FAMILIES = [pytest.param("meta_sam2", marks=needs_sam2), "hf_sam2"]

_PRISTINE: dict[str, torch.nn.Module] = {}


def build_tiny_sam2(family: str) -> torch.nn.Module:
    """A fresh copy of one seeded ``sam2_tiny`` per implementation (built once per process)."""
    from unifusion_sam.sam import build_hf_sam, build_sam

    if family not in _PRISTINE:
        torch.manual_seed(0)
        _PRISTINE[family] = build_sam("sam2_tiny") if family == "meta_sam2" else build_hf_sam("sam2_tiny")
    return copy.deepcopy(_PRISTINE[family])


def make_model(family: str, text_encoder_parts=None, **overrides):
    """``UniFusionSam`` on a fresh tiny SAM 2 with the ``sam2-tiny`` preset and ``overrides``; the text encoder
    reuses the session's offline MiniLM (``text_encoder_parts``) when the config has one."""
    from unifusion_sam.encoders.text import TextReferenceEncoder
    from unifusion_sam.sam import UniFusionSam, load_preset
    from unifusion_sam.sam.adapter.config import merge_overrides

    sam = build_tiny_sam2(family)
    config = merge_overrides(load_preset("sam2-tiny"), {"sam_family": family, **overrides})
    text = None
    if config.text is not None and text_encoder_parts is not None:
        tokenizer, backbone = text_encoder_parts
        text = TextReferenceEncoder(config.text, backbone=copy.deepcopy(backbone), tokenizer=tokenizer)
    torch.manual_seed(0)
    return UniFusionSam(sam, config, text_encoder=text)

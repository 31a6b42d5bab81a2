"""Shared test settings: deterministic, offline, CPU."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="session")
def text_encoder_parts():
    """The offline MiniLM tokenizer and model, loaded once per session."""
    from transformers import AutoModel, AutoTokenizer

    from unifusion_sam.encoders.text import DEFAULT_TEXT_MODEL, resolve_text_model

    path = resolve_text_model(DEFAULT_TEXT_MODEL)
    return AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path)

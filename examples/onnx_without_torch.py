"""Segment an image from a sentence with an exported UniFusion-SAM model and nothing but onnxruntime, numpy,
tokenizers and Pillow: no PyTorch, no unifusion-sam. A template for a server or another language.

    pip install onnxruntime numpy tokenizers pillow
    python examples/onnx_without_torch.py exported/ photo.jpg "the dog on the left" mask.png

``exported/`` is what ``unifusion-sam export-onnx`` wrote; its ``export_config.json`` describes every graph.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image
from tokenizers import Tokenizer


def segment(folder: Path, image: np.ndarray, sentence: str) -> tuple[np.ndarray, float]:
    """``H x W x 3`` uint8 and a sentence -> an ``H x W`` bool mask and the object score."""
    config = json.loads((folder / "export_config.json").read_text())
    graph = {name: ort.InferenceSession(str(folder / g["file"]), providers=["CPUExecutionProvider"])
             for name, g in config["graphs"].items()}

    # SAM's preprocessing: resize the longest side to S (bilinear), normalise, pad bottom-right to S x S
    pre = config["preprocessing"]
    s, (h, w) = pre["image_size"], image.shape[:2]
    scale = s / max(h, w)
    nh, nw = int(h * scale + 0.5), int(w * scale + 0.5)
    resized = np.asarray(Image.fromarray(image).resize((nw, nh), Image.BILINEAR), dtype=np.float32)
    pixels = np.zeros((1, 3, s, s), np.float32)
    pixels[0, :, :nh, :nw] = ((resized - pre["pixel_mean"]) / pre["pixel_std"]).transpose(2, 0, 1)
    (features,) = graph["image"].run(None, {"pixels": pixels})

    # the sentence: tokenised as the model's transformers tokenizer does, then the text encoder
    text = config["text"]
    tokenizer = Tokenizer.from_file(str(folder / text["tokenizer"]))
    tokenizer.enable_truncation(text["max_length"])
    tokenizer.no_padding()
    encoded = tokenizer.encode(sentence)
    tokens = {"input_ids": np.array([encoded.ids], np.int64),
              "attention_mask": np.ones((1, len(encoded.ids)), np.int64),
              "token_type_ids": np.array([encoded.type_ids], np.int64)}
    words, pooled = graph["text"].run(None, {k: tokens[k] for k in text["inputs"]})

    # UniFusion's language branch, then SAM's decoder with the reference token as its only prompt
    feeds = {"features": features, "words": words, "word_padding": np.zeros(words.shape[:2], bool),
             "text_pooled": pooled, "has_text": np.ones(1, bool)}
    delta, token = graph["fuse_text"].run(None, {i.name: feeds[i.name] for i in graph["fuse_text"].get_inputs()})
    fused = features[:, :256] + delta
    feeds = {"fused": fused, "sparse": token[:, None, :], "features": features}
    logits, scores = graph["decoder"].run(None, {i.name: feeds[i.name] for i in graph["decoder"].get_inputs()})

    # back to the image: upsample to S x S, crop the padding, resize to the original size
    full = resize_bilinear(logits[0, 0], s, s)[:nh, :nw]
    return resize_bilinear(full, h, w) > 0, float(scores[0])


def resize_bilinear(x: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Bilinear resize of a 2-D array with half-pixel centres and no antialiasing (what PyTorch's
    ``interpolate(mode="bilinear", align_corners=False)`` computes)."""

    def axis(n_in: int, n_out: int):
        src = np.maximum((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0.0)
        lo = np.minimum(np.floor(src).astype(int), n_in - 1)
        return lo, np.minimum(lo + 1, n_in - 1), (src - lo).astype(np.float32)

    (y0, y1, wy), (x0, x1, wx) = axis(x.shape[0], out_h), axis(x.shape[1], out_w)
    top = x[y0][:, x0] * (1 - wx) + x[y0][:, x1] * wx
    bottom = x[y1][:, x0] * (1 - wx) + x[y1][:, x1] * wx
    return top * (1 - wy[:, None]) + bottom * wy[:, None]


def main(argv: list[str]) -> None:
    if len(argv) != 4:
        sys.exit("usage: onnx_without_torch.py EXPORTED_DIR IMAGE SENTENCE OUT_MASK_PNG")
    folder, image_path, sentence, out = Path(argv[0]), argv[1], argv[2], argv[3]
    image = np.asarray(Image.open(image_path).convert("RGB"))
    mask, score = segment(folder, image, sentence)
    Image.fromarray(mask.astype(np.uint8) * 255).save(out)
    print(f"score {score:.3f}, {int(mask.sum())} pixels -> {out}")


if __name__ == "__main__":
    main(sys.argv[1:])

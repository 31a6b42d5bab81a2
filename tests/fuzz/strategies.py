"""Hypothesis strategies shared by the fuzz tests: arrays of every rank, dtype and size (NaN, inf, empty,
extreme aspect ratios), images that are valid or not, masks that fit their image or not, sentences, and
values of every kind (for object ids, frame indices, config fields)."""

from __future__ import annotations

import math

import numpy as np
import torch
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

DTYPES = [np.uint8, np.int8, np.uint16, np.int32, np.int64, np.float16, np.float32, np.float64, np.bool_,
          np.complex64]
EXTREME_SHAPES = [(0, 5, 3), (5, 0, 3), (0, 0, 3), (1, 1, 3), (1, 1), (1, 3000, 3), (3000, 1, 3), (2, 1200),
                  (1, 1, 4), (7, 9, 2), (7, 9, 5), (7,), (), (2, 7, 9, 3), (1, 7, 9, 3), (7, 9, 3, 1), (3, 7, 9)]


def _fill(shape, dtype, seed, kind):
    rng = np.random.default_rng(seed)
    n = int(np.prod(shape)) if shape else 1
    if np.dtype(dtype) == np.bool_:
        return rng.integers(0, 2, shape).astype(bool)
    if np.dtype(dtype).kind in "fc":
        arr = rng.standard_normal(shape).astype(dtype) * 100
        if kind and n:
            arr.reshape(-1)[rng.integers(0, n)] = {"nan": np.nan, "inf": np.inf, "-inf": -np.inf}[kind]
        return arr
    info = np.iinfo(dtype)
    return rng.integers(max(info.min, -1000), min(info.max, 1000) + 1, shape).astype(dtype)


@st.composite
def arrays(draw, max_side: int = 24):
    """Any numpy array: rank 0..5, any of :data:`DTYPES`, sides 0..``max_side`` or an extreme shape, with
    NaN / inf in float arrays."""
    shape = draw(st.one_of(hnp.array_shapes(min_dims=0, max_dims=5, min_side=0, max_side=max_side),
                           st.sampled_from(EXTREME_SHAPES)))
    dtype = draw(st.sampled_from(DTYPES))
    kind = draw(st.sampled_from([None, None, "nan", "inf", "-inf"]))
    return _fill(shape, dtype, draw(st.integers(0, 2**16)), kind)


@st.composite
def valid_images(draw, min_side: int = 1, max_side: int = 48, extreme: bool = True):
    """``H x W x 3`` / ``H x W`` / ``H x W x 1`` / ``H x W x 4`` uint8 images (and PIL ones) the rules accept,
    including extreme aspect ratios (``1 x 3000``)."""
    if extreme and draw(st.integers(0, 9)) == 0:
        h, w = draw(st.sampled_from([(1, 1), (1, 900), (900, 1), (2, 700), (1, 2)]))
    else:
        h, w = draw(st.integers(min_side, max_side)), draw(st.integers(min_side, max_side))
    channels = draw(st.sampled_from([(3,), (3,), (), (1,), (4,)]))
    rgb = np.random.default_rng(draw(st.integers(0, 2**16))).integers(0, 256, (h, w, *channels), dtype=np.uint8)
    if draw(st.integers(0, 5)) == 0:
        from PIL import Image

        if rgb.ndim == 3 and rgb.shape[2] == 1:
            rgb = rgb[:, :, 0]
        return Image.fromarray(rgb)
    return rgb


def image_size(image) -> tuple[int, int]:
    """``(H, W)`` of a valid image (numpy or PIL)."""
    if isinstance(image, np.ndarray):
        return image.shape[0], image.shape[1]
    return image.height, image.width


def image_is_valid(x) -> bool:
    """The documented rule (``unifusion_sam.inference.inputs.to_rgb_array``) as an oracle."""
    if hasattr(x, "convert") and hasattr(x, "size"):
        return x.size[0] >= 1 and x.size[1] >= 1
    if not isinstance(x, np.ndarray) or x.dtype != np.uint8:
        return False
    ok = x.ndim == 2 or (x.ndim == 3 and x.shape[2] in (1, 3, 4))
    return ok and x.shape[0] >= 1 and x.shape[1] >= 1


NOT_ARRAYS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=8), st.binary(max_size=8),
    st.lists(st.integers(0, 255), max_size=4), st.lists(st.lists(st.integers(0, 255), max_size=3), max_size=3),
    st.builds(lambda s: torch.zeros(s, s, 3, dtype=torch.uint8), st.integers(0, 4)),
    st.just({"image": 1}), st.just(object()),
)


@st.composite
def masks_for(draw, size: tuple[int, int]):
    """A mask for an image of ``size``: the right size or another one, bool / 0-1 / 0-255 or non-binary
    values (NaN included), any dtype, sometimes another rank."""
    h, w = size
    shape = draw(st.sampled_from([(h, w), (h, w), (h, w), (h, w, 1), (h + 1, w), (h, w + 1), (w, h), (h, w, 3), (h * w,),
                                  (0, 0), (1, h, w)]))
    dtype = draw(st.sampled_from([np.bool_, np.uint8, np.uint8, np.int64, np.float32, np.float64, np.int8]))
    values = draw(st.sampled_from(["01", "0255", "empty", "full", "other", "nan"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    bits = rng.integers(0, 2, shape)
    if values == "empty":
        bits = np.zeros(shape, int)
    elif values == "full":
        bits = np.ones(shape, int)
    if np.dtype(dtype) == np.bool_:
        return bits.astype(bool)
    if values == "0255" and np.iinfo(np.int8).max < 255 and np.dtype(dtype) == np.int8:
        values = "01"
    arr = (bits * (255 if values == "0255" else 1)).astype(dtype)
    if values == "other" and arr.size:
        arr.reshape(-1)[0] = 7 if np.dtype(dtype).kind in "iu" else 0.5
    if values == "nan" and arr.size and np.dtype(dtype).kind == "f":
        arr.reshape(-1)[0] = np.nan
    return arr


def mask_is_valid(mask, size: tuple[int, int]) -> bool:
    """The documented mask rule (``to_bool_mask``) as an oracle."""
    if not isinstance(mask, np.ndarray):
        return False
    m = mask[:, :, 0] if mask.ndim == 3 and mask.shape[2] == 1 else mask
    if m.shape != tuple(size):
        return False
    if m.dtype == bool:
        return True
    with np.errstate(invalid="ignore"):
        values = np.unique(m)
    return bool(np.isin(values, (0, 1)).all() or np.isin(values, (0, 255)).all())


# control characters, combining marks, right-to-left text, emoji, NUL, lone surrogates are excluded by st.text
SENTENCES = st.one_of(
    st.text(max_size=40),
    st.text(alphabet=st.characters(codec="utf-8"), min_size=1, max_size=40),
    st.sampled_from(["", " ", "\t\n", "\x00", "\x00a dog", "a\x1b[31m dog", "\u200b", "\u202ethe dog",
                     "le chien à gauche", "左边的狗", "🐶🐶", "the dog " * 400, "x" * 20000]),
)


def sentence_is_valid(text) -> bool:
    return isinstance(text, str) and bool(text.strip())


KEYS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(-3, 300), st.floats(allow_nan=True), st.text(max_size=6),
    st.builds(np.int64, st.integers(-5, 300)), st.builds(np.uint8, st.integers(0, 255)),
    st.builds(np.float32, st.floats(-5, 300, width=32)), st.tuples(st.integers(0, 3)),
    st.just(math.inf), st.just(-1), st.just(0), st.just(1), st.just(255), st.just(256), st.just(2**70),
)
"""Values of every kind that can be dict keys (object ids, frame indices)."""
ANY_VALUE = st.one_of(KEYS, st.just([1]), st.just({"a": 1}), st.just(b"\x00"))
"""Values of every kind."""


# ------------------------------------------------------------------ structured files (JSON, YAML, pickles)
JSON_VALUES = [None, True, False, 0, -1, 1.5, 2**40, -(2**40), "", "x", "../../etc/passwd", [], [1, "a"], {},
               {"a": 1}, float("nan"), float("inf")]
"""Values that replace one value of a structured file: every JSON type, and the corner cases of each."""


def nodes(obj, path=()):
    """Every (path, value) of a JSON-like structure, breadth first (at most 400)."""
    out, queue = [], [(path, obj)]
    while queue and len(out) < 400:
        p, v = queue.pop(0)
        out.append((p, v))
        items = v.items() if isinstance(v, dict) else enumerate(v) if isinstance(v, list) else ()
        queue.extend((p + (k,), child) for k, child in items)
    return out


def mutate_structure(obj, data):
    """Remove one key / item, or replace one value by a value of another kind (drawn from ``data``). Returns
    ``(mutated obj, path of the change, new value or "<removed>")``."""
    where = nodes(obj)[1:]
    if not where:
        new = data.draw(st.sampled_from(JSON_VALUES), label="whole file")
        return new, (), new
    path, _ = where[data.draw(st.integers(0, len(where) - 1), label="node")]
    parent = obj
    for k in path[:-1]:
        parent = parent[k]
    if data.draw(st.booleans(), label="remove"):
        del parent[path[-1]]
        return obj, path, "<removed>"
    new = parent[path[-1]] = data.draw(st.sampled_from(JSON_VALUES), label="value")
    return obj, path, new

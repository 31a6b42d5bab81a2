"""Referring sentences for synthetic scenes and videos, and ``flip_sentence``.

Meaning of the words (what "unique" is checked against):

- attributes: an object matches ``[size] [colour] noun`` if it has that size category, colour and
  shape class (a generic noun such as "shape" matches every class); every sentence names the
  class or the colour of the object (and of the anchor of a relation).
- extremes, "the leftmost X" / "the X on the left" (and right / top / bottom): among the objects
  matching X (at least two), the one whose visible-mask centroid is furthest in that direction; used
  only when it leads the runner-up by at least ``EXTREME_MARGIN`` of the image side.
- relations, "the X left of the Y": Y matches exactly one object (the anchor); among the other
  objects matching X (at least two), exactly one is left of the anchor: its centroid is at least
  ``RELATION_MARGIN`` of the width left of the anchor's, while every other one is at most
  ``RELATION_SLACK`` left of it (so no object sits in the grey zone between the two).
- motion (videos), "the X moving right": the object moves in that direction in at least
  ``MOTION_YES`` of its steps, and every other object matching X in at most ``MOTION_NO``.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

EXTREME_MARGIN = 0.08
RELATION_MARGIN = 0.1
RELATION_SLACK = 0.02
MOTION_YES = 0.75
MOTION_NO = 0.34

SHAPE_WORDS: dict[str, tuple[str, ...]] = {
    "circle": ("circle", "disc"), "square": ("square", "box"), "triangle": ("triangle",),
    "star": ("star",), "ring": ("ring", "donut"), "cross": ("cross", "plus sign"),
}
GENERIC_WORDS: tuple[str, ...] = ("shape", "object", "thing")
SIZE_WORDS: dict[str, tuple[str, ...]] = {"small": ("small", "little"), "large": ("large", "big")}
EXTREME_PREFIX: dict[str, tuple[str, ...]] = {
    "left": ("leftmost",), "right": ("rightmost",), "top": ("topmost", "highest"), "bottom": ("bottommost", "lowest"),
}
EXTREME_SUFFIX: dict[str, tuple[str, ...]] = {
    "left": ("on the left",), "right": ("on the right",), "top": ("at the top", "on top"), "bottom": ("at the bottom",),
}
RELATION_WORDS: dict[str, tuple[str, ...]] = {
    "left": ("left of", "to the left of", "on the left of"), "right": ("right of", "to the right of", "on the right of"),
    "top": ("above", "over"), "bottom": ("below", "under", "beneath"),
}
MOTION_WORDS: dict[str, tuple[str, ...]] = {
    "left": ("moving left", "moving to the left", "going left"),
    "right": ("moving right", "moving to the right", "going right"),
    "top": ("moving up", "moving upwards", "going up"),
    "bottom": ("moving down", "moving downwards", "going down"),
}
ARTICLES: tuple[str, ...] = ("the", "the", "the", "a", "")
DIRECTIONS: tuple[str, ...] = ("left", "right", "top", "bottom")
ATTRIBUTES: tuple[str, ...] = ("size", "colour", "kind")

_FLIP = {"left": "right", "right": "left", "leftmost": "rightmost", "rightmost": "leftmost"}
_FLIP_RE = re.compile(r"\b(leftmost|rightmost|left|right)\b", re.IGNORECASE)


def flip_sentence(text: str) -> str:
    """Swap left/right words for a horizontally flipped image (an involution); keeps capitalisation."""

    def swap(m: re.Match[str]) -> str:
        word = m.group(0)
        out = _FLIP[word.lower()]
        if word.isupper():
            return out.upper()
        return out.capitalize() if word[0].isupper() else out

    return _FLIP_RE.sub(swap, text)


@dataclass(frozen=True)
class Obj:
    """What the sentence generator knows about one object."""

    id: int
    kind: str
    colour: str
    size: str
    cx: float = 0.0
    cy: float = 0.0
    motion: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)  # step fraction left/right/up/down


def _matches(o: Obj, attrs: dict[str, str]) -> bool:
    return all(getattr(o, k) == v for k, v in attrs.items())


def _noun_phrase(rng: np.random.Generator, attrs: dict[str, str]) -> str:
    words = []
    if "size" in attrs:
        words.append(_pick(rng, SIZE_WORDS[attrs["size"]]))
    if "colour" in attrs:
        words.append(attrs["colour"])
    words.append(_pick(rng, SHAPE_WORDS[attrs["kind"]]) if "kind" in attrs else _pick(rng, GENERIC_WORDS))
    return " ".join(words)


def _join(*parts: str) -> str:
    """Join words, dropping empty ones; "a" becomes "an" before a vowel."""
    text = " ".join(p for p in parts if p)
    return re.sub(r"\b([Aa]) (?=[aeiou])", r"\1n ", text)


def _pick(rng: np.random.Generator, options: Sequence[str]) -> str:
    return options[int(rng.integers(len(options)))]


def _subsets(target: Obj) -> list[dict[str, str]]:
    """Attribute sets that can describe ``target``: always its class or its colour, size optional."""
    out = []
    for n in range(1, len(ATTRIBUTES) + 1):
        for keys in itertools.combinations(ATTRIBUTES, n):
            if "kind" in keys or "colour" in keys:
                out.append({k: getattr(target, k) for k in keys})
    return out


def _coord(o: Obj, direction: str) -> float:
    """Larger = further in ``direction``."""
    return {"left": -o.cx, "right": o.cx, "top": -o.cy, "bottom": o.cy}[direction]


def _unique_attrs(objs: Sequence[Obj], target: Obj) -> list[dict[str, str]]:
    return [a for a in _subsets(target) if [o.id for o in objs if _matches(o, a)] == [target.id]]


def describe_object(objs: Sequence[Obj], target: Obj, height: int, width: int, rng: np.random.Generator,
                    extra_word_prob: float = 0.25) -> tuple[str, str] | None:
    """Shortest unambiguous sentence for ``target`` among ``objs`` (with some variety).

    Returns ``(sentence, kind)`` with kind ``"attribute"``, ``"extreme"`` or ``"relation"``, or
    ``None`` when no sentence identifies the target robustly.
    """
    # (cost, kind, payload); cost = attribute words + 1 for an extreme, attribute words of both
    # nouns for a relation (so that relations compete with extremes)
    cands: list[tuple[int, str, object]] = []
    unique = {o.id: _unique_attrs(objs, o) for o in objs}
    for attrs in unique[target.id]:
        cands.append((len(attrs), "attribute", attrs))
    for attrs in _subsets(target):
        group = [o for o in objs if _matches(o, attrs)]
        if len(group) < 2:
            continue
        for d in DIRECTIONS:
            side = height if d in ("top", "bottom") else width
            ranked = sorted(group, key=lambda o, d=d: -_coord(o, d))
            if ranked[0].id == target.id and _coord(ranked[0], d) - _coord(ranked[1], d) >= EXTREME_MARGIN * side:
                cands.append((len(attrs) + 1, "extreme", (attrs, d)))
        for anchor in objs:
            anchor_attrs = unique[anchor.id] if anchor.id != target.id else []
            others = [o for o in group if o.id != anchor.id]
            if not anchor_attrs or len(others) < 2:
                continue
            shortest = min(len(a) for a in anchor_attrs)
            for d in DIRECTIONS:
                side = height if d in ("top", "bottom") else width
                gap = [_coord(o, d) - _coord(anchor, d) for o in others]
                hits = [o for o, g in zip(others, gap) if g >= RELATION_MARGIN * side]
                grey = [o for o, g in zip(others, gap) if RELATION_SLACK * side < g < RELATION_MARGIN * side]
                if [o.id for o in hits] == [target.id] and not grey:
                    for a_attrs in anchor_attrs:
                        if len(a_attrs) == shortest:
                            cands.append((len(attrs) + len(a_attrs), "relation", (attrs, d, a_attrs)))
    if not cands:
        return None
    best = min(c[0] for c in cands)
    limit = best + (1 if rng.random() < extra_word_prob else 0)
    pool = [c for c in cands if c[0] <= limit]
    _, kind, payload = pool[int(rng.integers(len(pool)))]
    if kind == "attribute":
        article = _pick(rng, ARTICLES)
        text = _join(article, _noun_phrase(rng, payload))  # type: ignore[arg-type]
    elif kind == "extreme":
        attrs, d = payload  # type: ignore[misc]
        article = _pick(rng, ("the", "the", ""))
        if rng.random() < 0.5:
            text = _join(article, _pick(rng, EXTREME_PREFIX[d]), _noun_phrase(rng, attrs))
        else:
            text = _join(article, _noun_phrase(rng, attrs), _pick(rng, EXTREME_SUFFIX[d]))
    else:
        attrs, d, a_attrs = payload  # type: ignore[misc]
        article = _pick(rng, ("the", "the", "a", ""))
        text = _join(article, _noun_phrase(rng, attrs), _pick(rng, RELATION_WORDS[d]), "the",
                     _noun_phrase(rng, a_attrs))
    return text, kind


def describe_moving_object(objs: Sequence[Obj], target: Obj, rng: np.random.Generator,
                           extra_word_prob: float = 0.25) -> tuple[str, str] | None:
    """Sentence for a video object: static attributes + a motion phrase when its motion is clear.

    Returns ``(sentence, kind)`` with kind ``"motion"`` or ``"attribute"`` (objects whose motion is
    not clear-cut are described by attributes only), or ``None``.
    """
    cands: list[tuple[int, str, object]] = []
    for di, d in enumerate(DIRECTIONS):
        if target.motion[di] < MOTION_YES:
            continue
        for attrs in _subsets(target):
            group = [o for o in objs if _matches(o, attrs) and o.id != target.id]
            if all(o.motion[di] <= MOTION_NO for o in group):
                cands.append((len(attrs), "motion", (attrs, d)))
    if not cands:
        cands = [(len(a), "attribute", a) for a in _unique_attrs(objs, target)]
    if not cands:
        return None
    best = min(c[0] for c in cands)
    limit = best + (1 if rng.random() < extra_word_prob else 0)
    pool = [c for c in cands if c[0] <= limit]
    _, kind, payload = pool[int(rng.integers(len(pool)))]
    article = _pick(rng, ("the", "the", "a", ""))
    if kind == "motion":
        attrs, d = payload  # type: ignore[misc]
        text = _join(article, _noun_phrase(rng, attrs), _pick(rng, MOTION_WORDS[d]))
    else:
        text = _join(article, _noun_phrase(rng, payload))  # type: ignore[arg-type]
    return text, kind

"""Hard negative captions for the reranker: a `shapes` caption with one judged attribute changed.

In-batch contrastive training rarely pits an image against a caption that differs from its own in
one word, so a CLIP model can rank samples by colour and still be blind to shape. Following NegCLIP
(Yuksekgonul et al. 2023), each training caption gets a negative: the same sentence with one colour,
shape, place or relation swapped for another of its kind, so the only way to tell them apart is to
see that attribute. Relations are only swapped for their opposite ('left of' ↔ 'right of', 'above'
↔ 'below'): another relation may also hold between the two places, and the negative must be false.
The article before a swapped word follows it ('a red box' → 'an orange box').
"""

from __future__ import annotations

import zlib

import numpy as np

from dalle_jax.data.shapes.vocabulary import (COLOURS, POSITION_PHRASES, RELATION_PHRASES,
                                              SHAPE_WORDS, article)
from dalle_jax.data.shapes.caption_parser import parse, spans

# kind → meaning → the words or phrases that say it (the grammar of `data.shapes.scenes`).
_PHRASES = {"colour": {c: (c,) for c in COLOURS}, "shape": SHAPE_WORDS,
            "position": POSITION_PHRASES, "relation": RELATION_PHRASES}
_OPPOSITE = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}
KINDS = tuple(_PHRASES)


def _pick(options, rng: np.random.Generator):
    return options[int(rng.integers(len(options)))]


def _swap_one(text: str, found: list, rng: np.random.Generator) -> str:
    s = _pick(found, rng)
    if s.kind == "relation":
        meaning = _OPPOSITE[s.meaning]
    else:
        meaning = _pick([m for m in _PHRASES[s.kind] if m != s.meaning], rng)
    new = _pick(_PHRASES[s.kind][meaning], rng)
    head = text[:s.start]
    for art in ("a ", "an "):  # the article before a swapped word follows it
        if head == art or head.endswith(" " + art):
            head = head[: len(head) - len(art)] + article(new) + " "
            break
    return head + new + text[s.end:]


def negative_caption(caption: str, rng: np.random.Generator, avoid=frozenset(),
                     tries: int = 8, kinds: tuple[str, ...] = KINDS) -> str:
    """`caption` (lower-cased, as the tokenizer sees it) with one colour, shape, place or relation
    (one of `kinds`) replaced by a different one, chosen with `rng`. A negative naming a (colour,
    shape) pair in `avoid` (the held-out pairs, which training must not mention) is drawn again,
    up to `tries` times. "" when the caption names none of `kinds`, or every draw named an avoided
    pair."""
    if not set(kinds) <= set(KINDS):
        raise ValueError(f"negative kinds {kinds} must be among {KINDS}")
    text = caption.lower()
    found = [s for s in spans(text) if s.kind in kinds]
    for _ in range(tries if found else 0):
        negative = _swap_one(text, found, rng)
        if not avoid or not {(o.colour, o.shape) for o in parse(negative).objects} & avoid:
            return negative
    return ""


def negative_captions(captions, seed: int, avoid=frozenset(),
                      kinds: tuple[str, ...] = KINDS) -> list[str]:
    """One negative per caption (see `negative_caption`; one of `kinds` swapped), drawn from an
    rng seeded by `seed` and the captions themselves, so that the same batch always gets the same
    negatives, resumed runs included."""
    rng = np.random.default_rng([seed, zlib.crc32("\n".join(captions).encode("utf-8"))])
    return [negative_caption(c, rng, frozenset(avoid), kinds=kinds) for c in captions]

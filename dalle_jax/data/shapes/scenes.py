"""Sampling scenes (what an image shows) and their captions, deterministically from an rng."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from dalle_jax.data.shapes.styles import STYLES, Style
from dalle_jax.data.shapes.vocabulary import (
    BACKGROUNDS, COLOURS, POSITION_PHRASES, POSITIONS, RELATION_PHRASES, SHAPE_WORDS, SHAPES,
    SIZE_WORDS, WORDS, article,
)


def _pick(rng: np.random.Generator, options: Sequence):
    return options[int(rng.integers(len(options)))]


def _object(rng, position, sizes, pair=None):
    colour, shape = pair or (_pick(rng, tuple(COLOURS)), _pick(rng, SHAPES))
    return {"shape": shape, "colour": colour, "size": _pick(rng, sizes), "position": position}


def _relation(first: str, second: str, rng) -> str:
    """A relation of the first grid cell to the second that holds (one at random if two do)."""
    (r1, c1), (r2, c2) = divmod(POSITIONS.index(first), 3), divmod(POSITIONS.index(second), 3)
    holds = []
    if c1 != c2:
        holds.append("left of" if c1 < c2 else "right of")
    if r1 != r2:
        holds.append("above" if r1 < r2 else "below")
    return _pick(rng, holds)


def sample_objects_scene(rng: np.random.Generator, heldout: frozenset, want_heldout: bool,
                         style: Style = STYLES["objects"]) -> dict:
    """One or two objects drawn in `style`. With `want_heldout`, at least one (colour, shape)
    pair is held out; otherwise none is."""
    n = 1 + int(rng.integers(2))
    cells = rng.permutation(len(POSITIONS))[:n]
    objects = []
    for i, cell in enumerate(cells):
        forced = _pick(rng, sorted(heldout)) if want_heldout and i == 0 else None
        while True:
            obj = _object(rng, POSITIONS[cell], style.sizes, forced)
            if forced or (obj["colour"], obj["shape"]) not in heldout or want_heldout:
                break
        objects.append(obj)
    if n == 2 and rng.integers(2):
        objects.reverse()  # the held-out object is not always the first named
    relation = _relation(objects[0]["position"], objects[1]["position"], rng) if n == 2 else "none"
    background = _pick(rng, style.backgrounds)
    return {"objects": objects, "relation": relation, "background": background}


def _noun(obj, rng, with_size) -> str:
    words = [obj["colour"], _pick(rng, SHAPE_WORDS[obj["shape"]])]
    if with_size:
        words.insert(0, _pick(rng, SIZE_WORDS[obj["size"]]))
    return f"{article(words[0])} {' '.join(words)}"


def objects_caption(scene: dict, rng: np.random.Generator) -> str:
    """A caption naming every object's colour and shape, and the relation (or a place/size)."""
    objs = scene["objects"]
    if len(objs) == 1:
        obj = objs[0]
        shape = _pick(rng, SHAPE_WORDS[obj["shape"]])
        size = _pick(rng, SIZE_WORDS[obj["size"]])
        place = _pick(rng, POSITION_PHRASES[obj["position"]])
        templates = (
            lambda: _noun(obj, rng, False),
            lambda: _noun(obj, rng, True),
            lambda: f"{_noun(obj, rng, False)} {place}",
            lambda: f"{article(shape)} {shape}, coloured {obj['colour']}, {place}",
            lambda: f"{article(size)} {size} {shape} in {obj['colour']}",
            lambda: f"there is {_noun(obj, rng, True)} {place}",
            lambda: f"{place}, {_noun(obj, rng, False)}",
        )
    else:
        rel = _pick(rng, RELATION_PHRASES[scene["relation"]])
        a, b = objs
        templates = (
            lambda: f"{_noun(a, rng, False)} {rel} {_noun(b, rng, False)}",
            lambda: f"{_noun(a, rng, True)} {rel} {_noun(b, rng, True)}",
            lambda: f"there is {_noun(a, rng, False)} {rel} {_noun(b, rng, False)}",
        )
    return _pick(rng, templates)()


def sample_word_scene(rng: np.random.Generator) -> dict:
    """A word, its letter colour and the background."""
    return {"word": _pick(rng, WORDS), "colour": _pick(rng, tuple(COLOURS)),
            "background": _pick(rng, tuple(BACKGROUNDS))}


def word_caption(scene: dict, rng: np.random.Generator) -> str:
    """A caption naming the word and its colour."""
    w, c = scene["word"], scene["colour"]
    return _pick(rng, (
        f"the word '{w}' in {c} letters",
        f"'{w}' written in {c}",
        f"{c} text that says '{w}'",
        f"the text '{w}' in {c}",
        f"a sign reading '{w}' in {c} letters",
    ))

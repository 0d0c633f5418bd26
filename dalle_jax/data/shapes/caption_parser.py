"""What a `shapes` caption asks for: objects (colour, shape, maybe size and place) and a relation.

The captions come from a small grammar (`data.shapes.scenes`): every colour has one word, shapes,
sizes, places and relations have a few synonyms each. Parsing finds those words in order, so the
judge knows what to check in an image; a caption outside the grammar is a ValueError.
"""

from __future__ import annotations

import dataclasses
import re

from dalle_jax.data.shapes.vocabulary import (COLOURS, POSITION_PHRASES, RELATION_PHRASES,
                                              SHAPE_WORDS, SIZE_WORDS)


@dataclasses.dataclass(frozen=True)
class Wanted:
    """One object a caption names; size and position are None where it does not say."""

    colour: str
    shape: str
    size: str | None = None
    position: str | None = None


@dataclasses.dataclass(frozen=True)
class Request:
    """The objects of a caption, in order, and the relation of the first to the second."""

    objects: tuple[Wanted, ...]
    relation: str | None = None


def _alternation(phrases: dict[str, tuple[str, ...]]) -> list[tuple[str, str]]:
    """(phrase, meaning) pairs, longest phrase first so that 'to the left of' beats 'left of'."""
    pairs = [(p, meaning) for meaning, ps in phrases.items() for p in ps]
    return sorted(pairs, key=lambda pair: -len(pair[0]))


_TOKENS = (
    [(p, ("relation", m)) for p, m in _alternation(RELATION_PHRASES)]
    + [(p, ("position", m)) for p, m in _alternation(POSITION_PHRASES)]
    + [(c, ("colour", c)) for c in COLOURS]
    + [(p, ("size", m)) for p, m in _alternation(SIZE_WORDS)]
    + [(p, ("shape", m)) for p, m in _alternation(SHAPE_WORDS)]
)
_PATTERN = re.compile("|".join(rf"\b{re.escape(p)}\b" for p, _ in sorted(
    _TOKENS, key=lambda t: -len(t[0]))))
_MEANING = {p: m for p, m in _TOKENS}


@dataclasses.dataclass(frozen=True)
class Span:
    """Where a caption names something: caption[start:end] says `meaning`, one of `kind`
    ('relation', 'position', 'colour', 'size' or 'shape')."""

    start: int
    end: int
    kind: str
    meaning: str


def spans(caption: str) -> list[Span]:
    """The grammar's words and phrases in `caption`, in order (matched ignoring case)."""
    return [Span(m.start(), m.end(), *_MEANING[m.group(0)])
            for m in _PATTERN.finditer(caption.lower())]


def parse(caption: str) -> Request:
    """The request of a `shapes` objects caption (one object, or two and a relation)."""
    words = [(s.kind, s.meaning) for s in spans(caption)]
    objects, relation, current, position = [], None, {}, None
    for kind, value in words:
        if kind == "relation":
            relation = value
        elif kind == "position":
            position = value
        else:  # an object is complete once it has a colour and a shape, in either order
            if kind in current:
                raise ValueError(f"caption {caption!r}: an object with two {kind}s")
            current[kind] = value
            if "colour" in current and "shape" in current:
                objects.append(current)
                current = {}
    if current or not objects or len(objects) > 2:
        raise ValueError(f"caption {caption!r} is not a `shapes` objects caption")
    if len(objects) == 2 and relation is None:
        raise ValueError(f"caption {caption!r} names two objects but no relation")
    if len(objects) == 1:
        objects[0]["position"] = position
    return Request(tuple(Wanted(**o) for o in objects), relation if len(objects) == 2 else None)

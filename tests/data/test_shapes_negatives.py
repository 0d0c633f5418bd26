"""Hard negative captions for CLIP: one judged attribute swapped, grammar kept, held-out pairs
never named, the same negatives for the same batch."""

import re

import numpy as np
import pytest

from dalle_jax.data.shapes import scenes
from dalle_jax.data.hard_negatives import parse_kinds
from dalle_jax.data.shapes.negatives import KINDS, negative_caption, negative_captions
from dalle_jax.data.shapes.vocabulary import COLOURS, DEFAULT_HELDOUT_PAIRS, SHAPES
from dalle_jax.data.shapes.caption_parser import parse


def _captions(n, seed=0):
    rng = np.random.default_rng(seed)
    return [scenes.objects_caption(scenes.sample_objects_scene(rng, frozenset(), False), rng)
            for _ in range(n)]


def _differences(a, b):
    """Which of colour / shape / position / relation differ between two parsed captions."""
    diffs = [("relation", a.relation, b.relation)] if a.relation != b.relation else []
    for x, y in zip(a.objects, b.objects):
        diffs += [(k, getattr(x, k), getattr(y, k)) for k in ("colour", "shape", "position")
                  if getattr(x, k) != getattr(y, k)]
    return diffs


def test_each_negative_changes_exactly_one_judged_attribute():
    rng = np.random.default_rng(1)
    kinds = set()
    for caption in _captions(400):
        negative = negative_caption(caption, rng)
        original, changed = parse(caption), parse(negative)
        assert len(changed.objects) == len(original.objects), (caption, negative)
        diffs = _differences(original, changed)
        assert len(diffs) == 1, (caption, negative, diffs)
        kind, old, new = diffs[0]
        if kind == "relation":  # only the opposite relation is sure to be false
            assert {old, new} in ({"left of", "right of"}, {"above", "below"}), (caption, negative)
        kinds.add(kind)
        # the article agrees with the word after it, as in the grammar's own captions
        assert not re.search(r"\ba [aeiou]|\ban [^aeiou]", negative), negative
    assert kinds == {"colour", "shape", "position", "relation"}


def test_negatives_never_name_a_held_out_pair_and_repeat_for_the_same_batch():
    avoid = frozenset(DEFAULT_HELDOUT_PAIRS)
    captions = _captions(300, seed=2)
    negatives = negative_captions(captions, seed=0, avoid=avoid)
    assert negative_captions(captions, seed=0, avoid=avoid) == negatives
    assert negative_captions(captions, seed=1, avoid=avoid) != negatives
    named = {(o.colour, o.shape) for n in negatives if n for o in parse(n).objects}
    assert named and not named & avoid
    assert sum(n == "" for n in negatives) < 10  # a redraw almost always finds another
    # Only a caption whose every swap lands on an avoided pair goes without one.
    every_swap = frozenset({(c, "square") for c in COLOURS} | {("red", s) for s in SHAPES})
    assert negative_caption("a red box", np.random.default_rng(0), avoid=every_swap) == ""
    assert negative_caption("a red box", np.random.default_rng(0),
                            avoid=every_swap - {("red", "star")}, tries=200) == "a red star"
    assert negative_caption("the word 'sun' in white letters", np.random.default_rng(0)) == ""


def test_negatives_of_one_kind_change_only_that_kind():
    rng = np.random.default_rng(3)
    for kind in ("colour", "shape", "position", "relation"):
        for caption in _captions(60, seed=4):
            negative = negative_caption(caption, rng, kinds=(kind,))
            if negative:
                assert [d[0] for d in _differences(parse(caption), parse(negative))] == [kind]
    assert negative_caption("a red box", rng, kinds=("position",)) == ""
    with pytest.raises(ValueError, match="size"):
        negative_caption("a red box", rng, kinds=("size",))


def test_a_batch_of_negatives_swaps_only_the_kinds_asked_for():
    captions = _captions(200, seed=5)
    negatives = negative_captions(captions, seed=0, kinds=parse_kinds(" shape, relation ", KINDS))
    seen = {d[0] for c, n in zip(captions, negatives, strict=True) if n
            for d in _differences(parse(c), parse(n))}
    assert seen == {"shape", "relation"}
    for bad in ("shape,size", "", ","):
        with pytest.raises(ValueError, match="each must be one of colour, shape, position"):
            parse_kinds(bad, KINDS)


def test_the_dataset_offers_its_negatives_by_name_and_never_a_heldout_pair():
    """`data.hard_negatives.for_data`: `shapes` object scenes offer caption and image negatives
    (the same for the same batch), the `words` variant and other datasets none."""
    from dalle_jax.data import hard_negatives
    from tests.helpers.configs import load

    data = load("clip", "tiny").data
    offered = hard_negatives.for_data(data)
    assert offered.caption_kinds == KINDS and offered.image_kinds == ("shape", "position")
    captions = _captions(100, seed=3)
    negatives = offered.captions(captions, ("shape",))
    assert negatives == offered.captions(captions, ("shape",))
    heldout = {tuple(p) for p in data.shapes.get("heldout_pairs", DEFAULT_HELDOUT_PAIRS)}
    for n in filter(None, negatives):
        assert not {(o.colour, o.shape) for o in parse(n).objects} & heldout
    data.shapes.variant = "words"
    assert hard_negatives.for_data(data) is None
    data.dataset = "image_text_folder"
    assert hard_negatives.for_data(data) is None

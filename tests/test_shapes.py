"""The `shapes` dataset: captions agree with attributes and with pixels; held-out pairs stay out."""

import glob
import os
import re

import numpy as np
import pytest
import tensorflow_datasets as tfds

from dalle_jax.data.shapes import shapes
from dalle_jax.data.shapes.vocabulary import (
    BACKGROUNDS, COLOURS, DEFAULT_HELDOUT_PAIRS, POSITION_PHRASES, POSITIONS, RELATION_PHRASES,
    RELATIONS, SHAPE_WORDS, SHAPES, SIZE_WORDS, SIZES,
)

COUNTS = dict(num_train=240, num_validation=40, num_test=40, num_heldout=60)


def _examples(summary, split):
    source = tfds.builder_from_directory(summary["path"]).as_data_source(split)
    return [source[i] for i in range(len(source))]


def _objects(example):
    o = example["objects"]
    return [dict(shape=SHAPES[s], colour=list(COLOURS)[c], size=SIZES[z], position=POSITIONS[p])
            for s, c, z, p in zip(o["shape"], o["colour"], o["size"], o["position"])]


def _words_in(caption, table):
    """Keys of `table` (key -> synonyms) named in `caption`, in order of appearance."""
    found = []
    for key, words in table.items():
        for w in words:
            for m in re.finditer(rf"\b{re.escape(w)}\b", caption):
                found.append((m.start(), key))
    return [k for _, k in sorted(found)]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    return shapes.prepare(str(tmp_path_factory.mktemp("data")), resolution=48, seed=1, **COUNTS)


@pytest.fixture(scope="module")
def splits(prepared):
    return {s: _examples(prepared, s) for s in shapes.SPLITS}


def test_summary_and_counts(prepared, splits):
    assert prepared["splits"] == {"train": 240, "validation": 40, "test": 40, "heldout": 60}
    assert {s: len(v) for s, v in splits.items()} == prepared["splits"]
    assert prepared["skipped"] == {"corrupt_image": 0, "missing_caption": 0, "empty_caption": 0,
                                   "missing_image": 0}
    image = splits["train"][0]["image"]
    assert image.shape == (48, 48, 3) and image.dtype == np.uint8


def test_captions_agree_with_attributes(splits):
    colours = {c: (c,) for c in COLOURS}
    for split, examples in splits.items():
        for ex in examples:
            caption, objs = ex["caption"].decode(), _objects(ex)
            assert _words_in(caption, colours) == [o["colour"] for o in objs], caption
            assert _words_in(caption, SHAPE_WORDS) == [o["shape"] for o in objs], caption
            sizes = _words_in(caption, SIZE_WORDS)
            assert sizes in ([], [o["size"] for o in objs]), caption
            relation = RELATIONS[ex["relation"]]
            if len(objs) == 2:
                assert _words_in(caption, {relation: RELATION_PHRASES[relation]}), caption
            else:
                assert relation == "none"
                assert set(_words_in(caption, POSITION_PHRASES)) <= {objs[0]["position"]}, caption


def test_single_object_colour_is_measured_from_pixels(splits):
    checked = 0
    for ex in splits["train"]:
        caption = ex["caption"].decode()
        named = _words_in(caption, {c: (c,) for c in COLOURS})
        if len(named) != 1:
            continue
        pixels = ex["image"].reshape(-1, 3)
        background = np.array(BACKGROUNDS[list(BACKGROUNDS)[ex["background"]]])
        fg = pixels[(pixels != background).any(axis=1)]
        values, counts = np.unique(fg, axis=0, return_counts=True)
        assert tuple(values[counts.argmax()]) == COLOURS[named[0]], caption
        assert counts.max() > 10
        checked += 1
    assert checked > 50


def test_relation_matches_measured_centroids(splits):
    checked = 0
    for ex in splits["train"] + splits["heldout"]:
        objs = _objects(ex)
        if len(objs) != 2 or objs[0]["colour"] == objs[1]["colour"]:
            continue
        (ya, xa), (yb, xb) = (np.argwhere((ex["image"] == COLOURS[o["colour"]]).all(-1)).mean(0)
                              for o in objs)
        relation = RELATIONS[ex["relation"]]
        assert {"left of": xa < xb, "right of": xa > xb, "above": ya < yb, "below": ya > yb}[relation]
        checked += 1
    assert checked > 30


def test_heldout_pairs_only_in_heldout(splits):
    heldout = set(DEFAULT_HELDOUT_PAIRS)
    for split, examples in splits.items():
        for ex in examples:
            pairs = {(o["colour"], o["shape"]) for o in _objects(ex)}
            assert bool(pairs & heldout) == (split == "heldout"), (split, pairs)


def test_deterministic_for_seed_and_reused(prepared, splits, tmp_path):
    again = shapes.prepare(str(tmp_path), resolution=48, seed=1, **COUNTS)
    assert again["config"] == prepared["config"]
    for a, b in zip(splits["validation"], _examples(again, "validation")):
        np.testing.assert_array_equal(a["image"], b["image"])
        assert a["caption"] == b["caption"]
    files = glob.glob(os.path.join(again["path"], "*.array_record*"))
    mtimes = {f: os.path.getmtime(f) for f in files}
    assert shapes.prepare(str(tmp_path), resolution=48, seed=1, **COUNTS) == again
    assert {f: os.path.getmtime(f) for f in files} == mtimes  # reused, not regenerated
    other = shapes.prepare(str(tmp_path), resolution=48, seed=2, **COUNTS)
    assert other["config"] != again["config"]
    assert [e["caption"] for e in _examples(other, "validation")] != [e["caption"] for e in splits["validation"]]


def test_words_variant(tmp_path):
    summary = shapes.prepare(str(tmp_path), variant="words", resolution=32, num_train=30,
                             num_validation=5, num_test=5, num_heldout=5)
    for ex in _examples(summary, "train"):
        caption, word = ex["caption"].decode(), ex["word"].decode()
        colour = list(COLOURS)[ex["colour"]]
        assert f"'{word}'" in caption and re.search(rf"\b{colour}\b", caption), caption
        assert (ex["image"] == COLOURS[colour]).all(-1).sum() > 15, caption


@pytest.mark.parametrize("kwargs, message", [
    (dict(resolution=16), "resolution=16"),
    (dict(resolution=300), "resolution=300"),
    (dict(variant="sprites"), "'sprites'"),
    (dict(num_train=0), "num_train=0"),
    (dict(heldout_pairs=[("mauve", "circle")]), "'mauve'"),
    (dict(heldout_pairs=[("red", "blob")]), "'blob'"),
])
def test_bad_options_are_named(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        shapes.prepare(str(tmp_path), **kwargs)

"""The `shapes` dataset: captions agree with attributes and with pixels; held-out pairs stay out."""

import glob
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image, ImageDraw

from dalle_jax.data.shapes import render, shapes, styles
from dalle_jax.data.shapes.vocabulary import (
    BACKGROUNDS, COLOURS, DEFAULT_HELDOUT_PAIRS, POSITION_PHRASES, POSITIONS, RELATION_PHRASES,
    RELATIONS, SHAPE_WORDS, SHAPES, SIZE_WORDS, SIZES, WORDS,
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


@pytest.fixture(scope="module", params=["objects", "bold"])
def prepared(request, tmp_path_factory):
    """Both object variants: every test of their captions and pixels holds for each."""
    return shapes.prepare(str(tmp_path_factory.mktemp("data")), variant=request.param,
                          resolution=48, seed=1, **COUNTS)


def _variant(prepared) -> str:
    return prepared["config"].split("-", 1)[0]


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
    for ex in splits["train"]:
        assert ex["num_objects"] == len(_objects(ex)) in (1, 2)
        assert (RELATIONS[ex["relation"]] == "none") == (ex["num_objects"] == 1)
    assert {ex["num_objects"] for ex in splits["train"]} == {1, 2}


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
        holds = {"left of": xa < xb, "right of": xa > xb, "above": ya < yb, "below": ya > yb}
        assert holds[relation]
        checked += 1
    assert checked > 30


def test_heldout_pairs_only_in_heldout(splits):
    heldout = set(DEFAULT_HELDOUT_PAIRS)
    for split, examples in splits.items():
        for ex in examples:
            pairs = {(o["colour"], o["shape"]) for o in _objects(ex)}
            assert bool(pairs & heldout) == (split == "heldout"), (split, pairs)


def test_deterministic_for_seed_and_reused(prepared, splits, tmp_path):
    variant = _variant(prepared)
    again = shapes.prepare(str(tmp_path), variant=variant, resolution=48, seed=1, **COUNTS)
    assert again["config"] == prepared["config"]
    for a, b in zip(splits["validation"], _examples(again, "validation")):
        np.testing.assert_array_equal(a["image"], b["image"])
        assert a["caption"] == b["caption"]
    files = glob.glob(os.path.join(again["path"], "*.array_record*"))
    assert len(files) >= 4  # at least one shard per split
    mtimes = {f: os.path.getmtime(f) for f in files}
    assert shapes.prepare(str(tmp_path), variant=variant, resolution=48, seed=1, **COUNTS) == again
    assert {f: os.path.getmtime(f) for f in files} == mtimes  # reused, not regenerated
    other = shapes.prepare(str(tmp_path), variant=variant, resolution=48, seed=2, **COUNTS)
    assert other["config"] != again["config"]
    others = _examples(other, "validation")
    assert [e["caption"] for e in others] != [e["caption"] for e in splits["validation"]]
    assert any((a["image"] != b["image"]).any() for a, b in zip(others, splits["validation"]))


def test_bold_draws_large_centred_objects_on_white(prepared, splits):
    """`bold`: every object large and drawn around its cell's centre, on white; `objects` jitters
    both sizes over five backgrounds. Other variants share the scenes, not the pixels."""
    bold = _variant(prepared) == "bold"
    cell = 48 / 3
    sizes, backgrounds, offsets = set(), set(), []
    for ex in splits["train"]:
        backgrounds.add(list(BACKGROUNDS)[ex["background"]])
        objects = _objects(ex)
        colours = [o["colour"] for o in objects]
        for o in objects:
            sizes.add(o["size"])
            symmetric = o["shape"] in ("circle", "square", "hexagon", "cross", "diamond")
            if symmetric and colours.count(o["colour"]) == 1:
                ys, xs = np.nonzero((ex["image"] == COLOURS[o["colour"]]).all(-1))
                row, col = divmod(POSITIONS.index(o["position"]), 3)
                offsets.append(max(abs((xs.min() + xs.max() + 1) / 2 - (col + 0.5) * cell),
                                   abs((ys.min() + ys.max() + 1) / 2 - (row + 0.5) * cell)))
    if bold:
        assert sizes == {"large"} and backgrounds == {"white"} and max(offsets) <= 1.0
    else:
        assert sizes == set(SIZES) and len(backgrounds) == len(BACKGROUNDS)
        assert max(offsets) > 1.0


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
    (dict(heldout_pairs=[("red", "circle", "big")]), "'big'"),
    (dict(heldout_pairs=[]), "heldout_pairs=\\[\\]"),
    (dict(num_heldout=-3), "num_heldout=-3"),
    (dict(resolution=64.5), "resolution=64.5"),
    (dict(seed=-1), "seed=-1"),
])
def test_bad_options_are_named(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        shapes.prepare(str(tmp_path), **kwargs)


@pytest.mark.parametrize("variant", list(styles.STYLES))
def test_objects_stay_inside_their_cell_at_the_smallest_size(variant):
    """An object at its cell's centre, moved by the largest jitter, keeps inside the cell, so the
    objects of a two-object scene (always in different cells) never overlap."""
    resolution, cell = shapes.MIN_RESOLUTION, shapes.MIN_RESOLUTION / 3
    style = styles.STYLES[variant]
    for shape in SHAPES:
        for size in style.sizes:
            for dx in (-1, 1):
                for dy in (-1, 1):
                    img = Image.new("RGB", (resolution, resolution), (0, 0, 0))
                    j = style.jitter[size] * cell
                    cx, cy = 1.5 * cell + dx * j, 1.5 * cell + dy * j  # the centre cell
                    r = style.radius[size] * cell
                    render.draw_shape(ImageDraw.Draw(img), shape, cx, cy, r, (255, 0, 0))
                    ys, xs = np.nonzero(np.asarray(img)[..., 0])
                    assert len(xs) > 0, (shape, size)
                    assert cell <= xs.min() and xs.max() + 1 <= 2 * cell, (shape, size, dx)
                    assert cell <= ys.min() and ys.max() + 1 <= 2 * cell, (shape, size, dy)


def test_custom_heldout_pairs(tmp_path):
    pairs = [("purple", "hexagon"), ("cyan", "heart")]
    name = shapes.make_config(heldout_pairs=pairs).name
    assert shapes.make_config(heldout_pairs=pairs[::-1] + pairs[:1]).name == name  # canonical
    assert name != shapes.make_config().name
    summary = shapes.prepare(str(tmp_path), resolution=32, num_train=40, num_validation=4,
                             num_test=4, num_heldout=12, heldout_pairs=pairs)
    assert summary["config"].endswith(name.rsplit("-", 1)[1])
    for split in shapes.SPLITS:
        for ex in _examples(summary, split):
            found = {(o["colour"], o["shape"]) for o in _objects(ex)} & set(pairs)
            assert bool(found) == (split == "heldout"), split


def test_reading_back_needs_no_tensorflow(prepared):
    """A process in which TensorFlow cannot be imported reads images and captions."""
    code = """
import sys
class Hide:  # TensorFlow looks uninstalled to every import
    def __init__(self, inner): self.inner = inner
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] == "tensorflow" or not hasattr(self.inner, "find_spec"):
            return None
        return self.inner.find_spec(name, path, target)
sys.meta_path[:] = [Hide(f) for f in sys.meta_path]
import tensorflow_datasets as tfds
ex = tfds.builder_from_directory(sys.argv[1]).as_data_source("test")[0]
assert ex["image"].shape == (48, 48, 3) and ex["image"].dtype.name == "uint8"
assert ex["caption"] and not any(m.split(".")[0] == "tensorflow" for m in sys.modules)
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", code, prepared["path"]], capture_output=True,
                         text=True, timeout=60)
    assert out.stdout.strip() == "ok", out.stderr[-2000:]


def test_every_word_fits_its_image():
    """The font shrinks for long words: every word's letters lie inside the image."""
    for resolution in (shapes.MIN_RESOLUTION, 64, shapes.MAX_RESOLUTION):
        for word in WORDS:
            scene = {"word": word, "colour": "red", "background": "white"}
            image = render.render_word(scene, resolution, np.random.default_rng(0))
            ys, xs = np.nonzero((image == COLOURS["red"]).all(-1))
            assert len(xs) > 10, (resolution, word)
            assert xs.min() > 0 and xs.max() < resolution - 1, (resolution, word)
            assert ys.min() > 0 and ys.max() < resolution - 1, (resolution, word)


def test_prepare_signature_is_keyword_only():
    """`prepare(data_dir, *, variant, resolution, num_*, seed, heldout_pairs)` as documented."""
    import inspect

    params = inspect.signature(shapes.prepare).parameters
    assert list(params) == ["data_dir", "variant", "resolution", "num_train", "num_validation",
                            "num_test", "num_heldout", "seed", "heldout_pairs"]
    assert all(p.kind is p.KEYWORD_ONLY for name, p in params.items() if name != "data_dir")
    assert params["num_train"].default == 20000 and params["resolution"].default == 64


def test_unprepared_builder_leaves_no_temporary_directory(tmp_path, monkeypatch):
    # tfds' own DatasetInfo makes an empty `tmp…tfds` directory per unprepared builder and keeps it.
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr("tempfile.tempdir", str(scratch))
    builder = shapes.make_builder(str(tmp_path / "data"), resolution=32, num_train=4,
                                  num_validation=1, num_test=1, num_heldout=1)
    assert builder.builder_config.resolution == 32
    assert os.listdir(scratch) == []

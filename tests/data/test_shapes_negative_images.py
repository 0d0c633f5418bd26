"""Hard negative images for CLIP: the same scene with one object's shape or place changed, read
back from pixels and caption, compared with the renderer's own drawing of the changed scene."""

import copy

import numpy as np
import pytest

from dalle_jax.data.shapes import render, scenes
from dalle_jax.data.shapes.negative_images import negative_image, negative_images
from dalle_jax.data.shapes.vocabulary import COLOURS, DEFAULT_HELDOUT_PAIRS, POSITIONS, SHAPES
from dalle_jax.data.shapes.caption_parser import parse


def _scene(index, heldout=False):
    """(scene, rng state before rendering, image, caption) of one generated example."""
    rng = np.random.default_rng([0, 0, index])
    scene = scenes.sample_objects_scene(rng, frozenset(DEFAULT_HELDOUT_PAIRS), heldout)
    state = copy.deepcopy(rng.bit_generator.state)
    image = render.render_objects(scene, 64, rng)
    return scene, state, image, scenes.objects_caption(scene, rng)


def _redrawn_scene(scene, k, **changes):
    changed = copy.deepcopy(scene)
    changed["objects"][k].update(changes)
    return changed


def _redrawn(scene, state, k, shape=None, **changes):
    """The renderer's image of `scene` with object k's shape (and `changes`) replaced, jitter as
    before."""
    changed = _redrawn_scene(scene, k, **changes, **({"shape": shape} if shape else {}))
    rng = np.random.default_rng()
    rng.bit_generator.state = copy.deepcopy(state)
    return render.render_objects(changed, 64, rng)


def _mask(image, colour):
    return np.all(image == np.asarray(COLOURS[colour], np.uint8), axis=-1)


def test_one_object_gets_another_shape_where_the_renderer_would_draw_it():
    ious, made = [], 0
    for index in range(120):
        scene, state, image, caption = _scene(index)
        negative = negative_image(image, caption, np.random.default_rng(index))
        colours = [o["colour"] for o in scene["objects"]]
        if negative is None:
            assert len(set(colours)) < len(colours), caption  # only a repeated colour stops it
            continue
        made += 1
        changed = [k for k, o in enumerate(scene["objects"])
                   if not np.array_equal(_mask(image, o["colour"]), _mask(negative, o["colour"]))]
        assert len(changed) == 1, caption
        k = changed[0]
        old = scene["objects"][k]
        new_mask = _mask(negative, old["colour"])
        # Every other pixel is as it was: the old outline became background, the rest is intact.
        touched = _mask(image, old["colour"]) | new_mask
        np.testing.assert_array_equal(negative[~touched], image[~touched])
        # The new outline is another shape, drawn where the renderer draws that shape.
        iou = {}
        for shape in SHAPES:
            drawn = _mask(_redrawn(scene, state, k, shape), old["colour"])
            iou[shape] = (drawn & new_mask).sum() / (drawn | new_mask).sum()
        best = max(iou, key=iou.get)
        assert best != old["shape"], (caption, iou)
        ious.append(iou[best])
    assert made >= 100
    assert np.mean(ious) > 0.85 and min(ious) > 0.5, ious


def test_negatives_avoid_held_out_pairs_repeat_per_batch_and_say_which_are_missing():
    examples = [_scene(i) for i in range(40)]
    images = np.stack([e[2] for e in examples])
    captions = [e[3] for e in examples]
    avoid = frozenset(DEFAULT_HELDOUT_PAIRS)
    out, has = negative_images(images, captions, seed=0, avoid=avoid)
    again, has_again = negative_images(images, captions, seed=0, avoid=avoid)
    np.testing.assert_array_equal(out, again)
    np.testing.assert_array_equal(has, has_again)
    assert not np.array_equal(negative_images(images, captions, seed=1, avoid=avoid)[0], out)
    assert out.dtype == np.uint8 and out.shape == images.shape
    assert has.sum() >= 30
    np.testing.assert_array_equal(out[~has], images[~has])  # no negative: the image itself
    assert all(not np.array_equal(out[i], images[i]) for i in np.flatnonzero(has))
    # A red box whose every other red shape is held out can only become a red star.
    scene, state, image, _ = next(e for e in examples if len(e[0]["objects"]) == 1)
    (obj,) = scene["objects"]
    colour = obj["colour"]
    only_star = frozenset((colour, s) for s in SHAPES if s not in ("star", obj["shape"]))
    shape_of = {s: _mask(_redrawn(scene, state, 0, s), colour) for s in SHAPES}
    for seed in range(5):
        negative = negative_image(image, f"a {colour} {obj['shape']}", np.random.default_rng(seed),
                                  only_star)
        new = _mask(negative, colour)
        ious = {s: (m & new).sum() / (m | new).sum() for s, m in shape_of.items()}
        assert max(ious, key=ious.get) == "star", ious
    # Captions that name nothing to change, or a colour the image lacks, get no negative.
    assert negative_image(image, "a large purple sun", np.random.default_rng(0)) is None
    absent = next(c for c in COLOURS if not _mask(image, c).any())
    assert negative_image(image, f"a {absent} circle", np.random.default_rng(0)) is None


def _near(expected, actual):
    """The same outline within a pixel: centroids within 1.5 px, areas within a third."""
    (ey, ex), (ay, ax) = (np.argwhere(m).mean(0) for m in (expected, actual))
    return np.hypot(ey - ay, ex - ax) <= 1.5 and abs(actual.sum() / expected.sum() - 1) < 1 / 3


def test_objects_trade_places_or_a_named_place_moves_where_the_renderer_would_draw_them():
    traded = moved = 0
    for index in range(80):
        scene, state, image, caption = _scene(index)
        negative = negative_image(image, caption, np.random.default_rng(index), kinds=("position",))
        objects, request = scene["objects"], parse(caption)
        if negative is None:
            assert (len(objects) == 1 and request.objects[0].position is None
                    or len({o["colour"] for o in objects}) < len(objects)), caption
            continue
        if len(objects) == 2:  # each is drawn where the renderer puts it in the other's cell
            traded += 1
            a, b = objects
            expected = _redrawn(_redrawn_scene(scene, 0, position=b["position"]), state, 1,
                                position=a["position"])
        else:  # a lone object named in its place moves to another cell, outline kept
            moved += 1
            ys, xs = np.nonzero(_mask(negative, objects[0]["colour"]))
            cell = POSITIONS[3 * int(ys.mean() // (64 / 3)) + int(xs.mean() // (64 / 3))]
            assert cell != objects[0]["position"], caption
            expected = _redrawn(scene, state, 0, position=cell)
        for o in objects:
            assert _near(_mask(expected, o["colour"]), _mask(negative, o["colour"])), caption
    assert traded >= 20 and moved >= 10, (traded, moved)
    with pytest.raises(ValueError, match="negative image kinds .'size',. must be among"):
        negative_image(image, caption, np.random.default_rng(0), kinds=("size",))

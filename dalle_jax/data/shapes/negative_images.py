"""Hard negative images for the reranker: a `shapes` scene redrawn with one object's shape changed.

Reranking asks the opposite question from the one caption negatives train (`negatives`): not
"which caption fits this image" but "which of these images fits this caption", among samples
that mostly agree on colour and place and differ in outline. So each training caption can also
get a negative image: its own scene with one object erased and a different shape of the same
colour, size and centre drawn in its place. The caption is then false of it, and the only way to
rank the two images is to see the outline.

The scene is read back from the pixels and the caption alone: rendering has no antialiasing, so
an object is exactly the pixels of its colour, and the background is the commonest colour of the
image's border. The object's size and true centre come from comparing its bounding box with the same
shape rendered at both sizes (a triangle's box is not centred on the point it was drawn around).
An object whose colour appears twice in the caption, or not at all in the image, is not changed;
an image with no object left to change gets no negative, and the caller is told which.
"""

from __future__ import annotations

import functools
import zlib

import numpy as np
from PIL import Image, ImageDraw

from dalle_jax.data.shapes.render import RADIUS, draw_shape
from dalle_jax.data.shapes.vocabulary import COLOURS, SHAPES
from dalle_jax.evaluation.caption_parser import parse


@functools.lru_cache(maxsize=None)
def _reference_box(shape: str, size: str, resolution: int) -> tuple[float, float, float, float]:
    """(width, height, x offset, y offset) of `shape`'s pixel box at `size`, the offsets from the
    centre it is drawn around to the centre of its box."""
    canvas = Image.new("L", (resolution, resolution), 0)
    centre = resolution / 2
    draw_shape(ImageDraw.Draw(canvas), shape, centre, centre, RADIUS[size] * resolution / 3, 255)
    ys, xs = np.nonzero(np.asarray(canvas))
    return (xs.max() - xs.min() + 1, ys.max() - ys.min() + 1,
            (xs.min() + xs.max() + 1) / 2 - centre, (ys.min() + ys.max() + 1) / 2 - centre)


def _background(image: np.ndarray) -> np.ndarray:
    """The most common colour of an (R, R, 3) uint8 image's border (objects stay inside their
    cells, so the border is almost all background)."""
    border = np.concatenate([image[0], image[-1], image[1:-1, 0], image[1:-1, -1]]).astype(np.int32)
    packed = (border[:, 0] << 16) | (border[:, 1] << 8) | border[:, 2]
    values, counts = np.unique(packed, return_counts=True)
    mode = int(values[np.argmax(counts)])
    return np.array([mode >> 16, (mode >> 8) & 255, mode & 255], np.uint8)


def negative_image(image: np.ndarray, caption: str, rng: np.random.Generator,
                   avoid=frozenset()) -> np.ndarray | None:
    """`image` (R, R, 3) uint8 of `caption`'s scene with one object (chosen with `rng`) redrawn as
    another shape (never a (colour, shape) pair in `avoid`), or None when no object can be
    changed (see the module docstring)."""
    try:
        objects = parse(caption).objects
    except ValueError:
        return None
    colours = [o.colour for o in objects]
    candidates = []
    for o in objects:
        mask = np.all(image == np.asarray(COLOURS[o.colour], np.uint8), axis=-1)
        shapes = [s for s in SHAPES if s != o.shape and (o.colour, s) not in avoid]
        if colours.count(o.colour) == 1 and mask.any() and shapes:
            candidates.append((o, mask, shapes))
    if not candidates:
        return None
    o, mask, shapes = candidates[int(rng.integers(len(candidates)))]
    resolution = image.shape[0]
    ys, xs = np.nonzero(mask)
    box = np.array([xs.max() - xs.min() + 1, ys.max() - ys.min() + 1], np.float64)
    size = min(RADIUS, key=lambda s: np.abs(box - _reference_box(o.shape, s, resolution)[:2]).sum())
    _, _, dx, dy = _reference_box(o.shape, size, resolution)
    cx, cy = (xs.min() + xs.max() + 1) / 2 - dx, (ys.min() + ys.max() + 1) / 2 - dy
    out = image.copy()
    out[mask] = _background(image)
    canvas = Image.fromarray(out)
    new = shapes[int(rng.integers(len(shapes)))]
    draw_shape(ImageDraw.Draw(canvas), new, cx, cy, RADIUS[size] * resolution / 3,
               tuple(COLOURS[o.colour]))
    return np.asarray(canvas)


def negative_images(images: np.ndarray, captions, seed: int,
                    avoid=frozenset()) -> tuple[np.ndarray, np.ndarray]:
    """(negatives (B, R, R, 3) uint8, has (B,) bool): one `negative_image` per (image, caption),
    the image itself where there is none (has False). The rng is seeded by `seed` and the
    captions, so the same batch always gets the same negatives, resumed runs included."""
    images = np.asarray(images)
    rng = np.random.default_rng([seed, zlib.crc32("\n".join(captions).encode("utf-8"))])
    out, has = images.copy(), np.zeros(len(images), bool)
    for i, (image, caption) in enumerate(zip(images, captions)):
        negative = negative_image(image, caption, rng, frozenset(avoid))
        if negative is not None:
            out[i], has[i] = negative, True
    return out, has

"""Hard negative images for the reranker: a `shapes` scene redrawn with one shape or place changed.

Reranking asks the opposite question from the one caption negatives train (`negatives`): not
"which caption fits this image" but "which of these images fits this caption", among samples
that mostly agree on colour and place and differ in outline. So each training caption can also
get a negative image: its own scene with one object erased and a different shape of the same
colour, size and centre drawn in its place. The caption is then false of it, and the only way to
rank the two images is to see the outline. Places work the same way: two objects trade places,
which inverts every relation between them, or a lone object whose place the caption names moves
to another cell, keeping its offset from the cell's centre.

The scene is read back from the pixels and the caption alone: rendering has no antialiasing, so
an object is exactly the pixels of its colour, and the background is the commonest colour of the
image's border. The object's radius and true centre come from comparing its bounding box with the same
shape rendered at every radius a variant draws (a triangle's box is not centred on the point it
was drawn around).
An object whose colour appears twice in the caption, or not at all in the image, is not changed;
an image with no object left to change gets no negative, and the caller is told which.
"""

from __future__ import annotations

import dataclasses
import functools
import zlib

import numpy as np
from PIL import Image, ImageDraw

from dalle_jax.data.shapes.render import draw_shape
from dalle_jax.data.shapes.styles import RADII
from dalle_jax.data.shapes.vocabulary import COLOURS, SHAPES
from dalle_jax.data.shapes.caption_parser import parse


@functools.lru_cache(maxsize=None)
def _reference_box(shape: str, radius: float, resolution: int
                   ) -> tuple[float, float, float, float]:
    """(width, height, x offset, y offset) of `shape`'s pixel box at `radius` (a share of a
    cell's side), the offsets from the centre it is drawn around to the centre of its box."""
    canvas = Image.new("L", (resolution, resolution), 0)
    centre = resolution / 2
    draw_shape(ImageDraw.Draw(canvas), shape, centre, centre, radius * resolution / 3, 255)
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


@dataclasses.dataclass(frozen=True)
class _Found:
    """An object of the caption as drawn: its pixels, radius (a share of a cell's side) and the
    centre it was drawn around."""

    colour: str
    shape: str
    mask: np.ndarray
    radius: float
    centre: tuple[float, float]


def _find(image: np.ndarray, objects) -> list[_Found]:
    """The caption's objects whose colour is theirs alone and present in the image."""
    colours = [o.colour for o in objects]
    found = []
    for o in objects:
        mask = np.all(image == np.asarray(COLOURS[o.colour], np.uint8), axis=-1)
        if colours.count(o.colour) != 1 or not mask.any():
            continue
        ys, xs = np.nonzero(mask)
        box = np.array([xs.max() - xs.min() + 1, ys.max() - ys.min() + 1], np.float64)
        boxes = {r: _reference_box(o.shape, r, image.shape[0]) for r in RADII}
        radius = min(boxes, key=lambda r: np.abs(box - boxes[r][:2]).sum())
        _, _, dx, dy = boxes[radius]
        centre = ((xs.min() + xs.max() + 1) / 2 - dx, (ys.min() + ys.max() + 1) / 2 - dy)
        found.append(_Found(o.colour, o.shape, mask, radius, centre))
    return found


def _redraw(image: np.ndarray, erase: list[_Found], draws: list[tuple]) -> np.ndarray:
    """`image` with the objects `erase` painted over by the background, then each of `draws`
    ((shape, colour, radius, (cx, cy))) drawn."""
    out = image.copy()
    background = _background(image)
    for f in erase:
        out[f.mask] = background
    canvas = Image.fromarray(out)
    pen = ImageDraw.Draw(canvas)
    cell = image.shape[0] / 3
    for shape, colour, radius, (cx, cy) in draws:
        draw_shape(pen, shape, cx, cy, radius * cell, tuple(COLOURS[colour]))
    return np.asarray(canvas)


def _cell_offset(centre, cell: float) -> tuple[int, tuple[float, float]]:
    """(grid cell index, offset of `centre` from that cell's centre)."""
    col, row = (min(2, max(0, int(c // cell))) for c in centre)
    return 3 * row + col, (centre[0] - (col + 0.5) * cell, centre[1] - (row + 0.5) * cell)


def _moved(offset, index: int, cell: float) -> tuple[float, float]:
    """The point at `offset` from the centre of grid cell `index`."""
    row, col = divmod(index, 3)
    return ((col + 0.5) * cell + offset[0], (row + 0.5) * cell + offset[1])


def _shape_swap(image, request, found, rng, avoid) -> np.ndarray | None:
    choices = [(f, [s for s in SHAPES if s != f.shape and (f.colour, s) not in avoid])
               for f in found]
    choices = [c for c in choices if c[1]]
    if not choices:
        return None
    f, shapes = choices[int(rng.integers(len(choices)))]
    new = shapes[int(rng.integers(len(shapes)))]
    return _redraw(image, [f], [(new, f.colour, f.radius, f.centre)])


def _position_swap(image, request, found, rng, avoid) -> np.ndarray | None:
    cell = image.shape[0] / 3
    if len(request.objects) == 2 and len(found) == 2:  # trading places inverts every relation
        (a, (ia, oa)), (b, (ib, ob)) = [(f, _cell_offset(f.centre, cell)) for f in found]
        return _redraw(image, found, [(a.shape, a.colour, a.radius, _moved(oa, ib, cell)),
                                      (b.shape, b.colour, b.radius, _moved(ob, ia, cell))])
    if len(request.objects) == 1 and request.objects[0].position and found:
        (f,) = found
        index, offset = _cell_offset(f.centre, cell)
        others = [i for i in range(9) if i != index]
        target = others[int(rng.integers(len(others)))]
        return _redraw(image, [f], [(f.shape, f.colour, f.radius, _moved(offset, target, cell))])
    return None


_SWAPS = {"shape": _shape_swap, "position": _position_swap}
KINDS = tuple(_SWAPS)


def negative_image(image: np.ndarray, caption: str, rng: np.random.Generator,
                   avoid=frozenset(), kinds: tuple[str, ...] = ("shape",)) -> np.ndarray | None:
    """`image` (R, R, 3) uint8 of `caption`'s scene changed so that the caption is false of it, by
    one of `kinds` chosen with `rng` among those that apply: 'shape' redraws one object as another
    shape (never a (colour, shape) pair in `avoid`); 'position' makes two objects trade places
    (which inverts their relation), or moves a lone object whose place the caption names to
    another cell. None when no kind applies (see the module docstring)."""
    if not set(kinds) <= set(KINDS):
        raise ValueError(f"negative image kinds {kinds} must be among {KINDS}")
    try:
        request = parse(caption)
    except ValueError:
        return None
    found = _find(image, request.objects)
    for k in rng.permutation(len(kinds)):
        out = _SWAPS[kinds[k]](image, request, found, rng, avoid)
        if out is not None:
            return out
    return None


def negative_images(images: np.ndarray, captions, seed: int, avoid=frozenset(),
                    kinds: tuple[str, ...] = ("shape",)) -> tuple[np.ndarray, np.ndarray]:
    """(negatives (B, R, R, 3) uint8, has (B,) bool): one `negative_image` per (image, caption),
    the image itself where there is none (has False). The rng is seeded by `seed` and the
    captions, so the same batch always gets the same negatives, resumed runs included."""
    images = np.asarray(images)
    rng = np.random.default_rng([seed, zlib.crc32("\n".join(captions).encode("utf-8"))])
    out, has = images.copy(), np.zeros(len(images), bool)
    for i, (image, caption) in enumerate(zip(images, captions)):
        negative = negative_image(image, caption, rng, frozenset(avoid), kinds)
        if negative is not None:
            out[i], has[i] = negative, True
    return out, has

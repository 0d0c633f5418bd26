"""Does an image show what its caption asks for? Colour from pixels, shape from a classifier of
rendered outlines, position from the object's centre; the generator is never consulted.

For each object the caption names, its mask is the pixels nearer to that colour than to any other
object colour or background colour (and within `MAX_DISTANCE`), split into connected regions. The
colour counts as present when a region covers at least `MIN_AREA` of a small object's area; the
shape is what `shape_classifier` reads from the region; the position is the 3×3 cell of the
region's centre (or, for two objects, whether their centres stand in the caption's relation).
"""

from __future__ import annotations

import itertools
import math

import numpy as np
from scipy import ndimage

from dalle_jax.data.shapes.styles import SMALLEST_RADIUS
from dalle_jax.data.shapes.vocabulary import BACKGROUNDS, COLOURS, POSITIONS, SHAPES
from dalle_jax.evaluation import shape_classifier
from dalle_jax.data.shapes.caption_parser import Request

_NAMES = list(COLOURS) + [f"background:{b}" for b in BACKGROUNDS]
_PALETTE = np.asarray(list(COLOURS.values()) + list(BACKGROUNDS.values()), np.float32)
MAX_DISTANCE = 80.0  # RGB distance beyond which a pixel is no colour of the palette
MIN_AREA = 0.3  # share of a small object's area that must show the colour


def colour_masks(image: np.ndarray) -> dict[str, np.ndarray]:
    """{object colour: boolean mask} of a uint8 image (R, R, 3): each pixel to its nearest colour."""
    d = np.linalg.norm(image[:, :, None, :].astype(np.float32) - _PALETTE, axis=-1)
    nearest = np.argmin(d, axis=-1)
    close = np.min(d, axis=-1) <= MAX_DISTANCE
    return {c: (nearest == i) & close for i, c in enumerate(COLOURS)}


def _cell(mask: np.ndarray) -> str:
    ys, xs = np.nonzero(mask)
    side = mask.shape[0] / 3
    row, col = min(int(ys.mean() // side), 2), min(int(xs.mean() // side), 2)
    return POSITIONS[3 * row + col]


def _centre(mask: np.ndarray) -> tuple[float, float]:
    ys, xs = np.nonzero(mask)
    return float(xs.mean()), float(ys.mean())


def _related(a: np.ndarray, b: np.ndarray, relation: str) -> bool:
    (ax, ay), (bx, by) = _centre(a), _centre(b)
    return {"left of": ax < bx, "right of": ax > bx, "above": ay < by, "below": ay > by}[relation]


def components(mask: np.ndarray, min_area: float, most: int = 3) -> list[np.ndarray]:
    """The `most` largest connected regions of a mask with at least `min_area` pixels."""
    labels, n = ndimage.label(mask)
    if n == 0:
        return []
    areas = ndimage.sum(mask, labels, index=np.arange(1, n + 1))
    order = np.argsort(-areas)[:most]
    return [labels == i + 1 for i in order if areas[i] >= min_area]


def judge(image: np.ndarray, request: Request, classifier: dict) -> dict:
    """{'colour', 'shape', 'position', 'all'}: True/False, position None when nothing is asked;
    and 'read': the shape the classifier read for each named object (None where its colour is
    missing), so that failures can be counted by shape.

    Each named object takes one connected region of its colour (two objects of one colour take
    different regions); of all such readings the one that satisfies the most checks is judged.
    """
    small_area = math.pi * (SMALLEST_RADIUS * image.shape[0] / 3) ** 2
    masks = colour_masks(image)
    options = [components(masks[w.colour], MIN_AREA * small_area) for w in request.objects]
    if not all(options):
        return _missing(request)
    best = None
    for regions in itertools.product(*options):
        if len(regions) == 2 and regions[0] is regions[1]:
            continue
        shapes = [SHAPES[int(shape_classifier.classify(classifier,
                                                       shape_classifier.crop_mask(r)[None])[0])]
                  for r in regions]
        shape_ok = all(s == w.shape for s, w in zip(shapes, request.objects))
        position = _position(request, regions)
        score = shape_ok + (position is not False)
        if best is None or score > best[0]:
            best = (score, shape_ok, position, tuple(shapes))
    if best is None:  # one region for two objects of the same colour
        return _missing(request)
    _, shape_ok, position, read = best
    return {"colour": True, "shape": shape_ok, "position": position,
            "all": shape_ok and position is not False, "read": read}


def _missing(request: Request) -> dict:
    """The judgement of an image that lacks a named colour (or a second region of it)."""
    return {"colour": False, "shape": False,
            "position": None if _asks_position(request) is None else False, "all": False,
            "read": (None,) * len(request.objects)}


def _asks_position(request: Request) -> bool | None:
    return True if request.relation or request.objects[0].position else None


def _position(request: Request, regions) -> bool | None:
    if request.relation is not None:
        return _related(regions[0], regions[1], request.relation)
    if request.objects[0].position is not None:
        return _cell(regions[0]) == request.objects[0].position
    return None

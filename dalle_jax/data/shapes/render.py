"""Drawing scenes with PIL, without antialiasing: every object pixel has exactly its colour."""

from __future__ import annotations

import functools
import math

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from dalle_jax.data.shapes.styles import STYLES, Style
from dalle_jax.data.shapes.vocabulary import BACKGROUNDS, COLOURS, POSITIONS


def _regular(cx, cy, r, n, phase=-math.pi / 2, inner=None):
    """Vertices of a regular n-gon (or an n-pointed star when `inner` is given)."""
    pts = []
    steps = 2 * n if inner else n
    for k in range(steps):
        rad = (inner if inner and k % 2 else 1.0) * r
        a = phase + 2 * math.pi * k / steps
        pts.append((cx + rad * math.cos(a), cy + rad * math.sin(a)))
    return pts


def _heart(cx, cy, r):
    """A heart curve scaled to radius r."""
    pts = []
    for k in range(48):
        t = 2 * math.pi * k / 48
        x = 16 * math.sin(t) ** 3
        y = 13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t) - math.cos(4 * t)
        pts.append((cx + r * x / 17, cy - r * (y + 2) / 17))
    return pts


def _cross(cx, cy, r):
    """A plus sign with arms a third of its width."""
    w = r / 3
    return [(cx - w, cy - r), (cx + w, cy - r), (cx + w, cy - w), (cx + r, cy - w),
            (cx + r, cy + w), (cx + w, cy + w), (cx + w, cy + r), (cx - w, cy + r),
            (cx - w, cy + w), (cx - r, cy + w), (cx - r, cy - w), (cx - w, cy - w)]


def draw_shape(draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, r: float, fill) -> None:
    """Draws one filled shape of radius r centred at (cx, cy)."""
    if shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif shape == "square":
        s = r * 0.85
        draw.rectangle([cx - s, cy - s, cx + s, cy + s], fill=fill)
    elif shape == "triangle":
        draw.polygon(_regular(cx, cy + r * 0.15, r, 3), fill=fill)
    elif shape == "star":
        draw.polygon(_regular(cx, cy, r, 5, inner=0.45), fill=fill)
    elif shape == "heart":
        draw.polygon(_heart(cx, cy, r), fill=fill)
    elif shape == "cross":
        draw.polygon(_cross(cx, cy, r), fill=fill)
    elif shape == "diamond":
        draw.polygon([(cx, cy - r), (cx + r * 0.7, cy), (cx, cy + r), (cx - r * 0.7, cy)], fill=fill)
    elif shape == "hexagon":
        draw.polygon(_regular(cx, cy, r, 6, phase=0.0), fill=fill)
    else:
        raise ValueError(f"unknown shape {shape!r}")


def render_objects(scene: dict, resolution: int, rng: np.random.Generator,
                   style: Style = STYLES["objects"]) -> np.ndarray:
    """uint8 (R, R, 3) image of `scene['objects']` on its background, drawn in `style`: each
    object at its size's radius, its centre shifted inside its cell by up to its size's jitter
    (drawn from `rng`; no draw where the jitter is 0)."""
    img = Image.new("RGB", (resolution, resolution), BACKGROUNDS[scene["background"]])
    draw = ImageDraw.Draw(img)
    cell = resolution / 3
    for obj in scene["objects"]:
        row, col = divmod(POSITIONS.index(obj["position"]), 3)
        jitter = style.jitter[obj["size"]]
        jx, jy = rng.uniform(-1, 1, size=2) * jitter * cell if jitter else (0.0, 0.0)
        cx, cy = (col + 0.5) * cell + jx, (row + 0.5) * cell + jy
        draw_shape(draw, obj["shape"], cx, cy, style.radius[obj["size"]] * cell,
                   COLOURS[obj["colour"]])
    return np.asarray(img)


@functools.lru_cache(maxsize=None)
def word_mask(word: str, resolution: int) -> Image.Image:
    """A tight '1'-mode mask of `word` in Pillow's built-in scalable font, without antialiasing,
    at the largest size (from a guess by the word's length down) at which it fits in 90% of the
    image's width and height. Measured from the drawn pixels, not the font's metrics."""
    size = max(8, int(resolution * 0.9 / max(3, len(word)) * 1.6))
    while True:
        font = ImageFont.load_default(size=size)
        canvas = Image.new("1", (4 * resolution, 2 * resolution), 0)
        draw = ImageDraw.Draw(canvas)
        draw.fontmode = "1"  # no antialiasing: letter pixels are exactly the colour
        draw.text((resolution // 2, resolution // 2), word, fill=1, font=font)
        mask = canvas.crop(canvas.getbbox())
        if size <= 8 or max(mask.size) <= 0.9 * resolution:
            return mask
        size -= 1


def render_word(scene: dict, resolution: int, rng: np.random.Generator) -> np.ndarray:
    """uint8 (R, R, 3) image of `scene['word']` in solid (not antialiased) coloured letters,
    placed at a random spot that keeps it inside the image."""
    img = Image.new("RGB", (resolution, resolution), BACKGROUNDS[scene["background"]])
    mask = word_mask(scene["word"], resolution)
    (w, h), last = mask.size, resolution - 1  # a margin of at least one pixel on each side
    x = int(rng.integers(1, max(1, last - w) + 1))
    y = int(rng.integers(1, max(1, last - h) + 1))
    img.paste(COLOURS[scene["colour"]], (x, y), mask)
    return np.asarray(img)

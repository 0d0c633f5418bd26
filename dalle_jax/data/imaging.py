"""Image normalisation shared by every dataset: any PIL image to an RGB square of a given size."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageOps

# Colour that transparent pixels are composited onto.
_BACKGROUND = (255, 255, 255)


def _high_depth_to_l(img: Image.Image) -> Image.Image:
    """Scales a 16/32-bit integer or float greyscale image to 8-bit 'L'.

    'I;16*' is read as 0..65535. 'I' and 'F' are read on the first scale their values fit
    (F: 0..1; then 0..255; then 0..65535), so a uniform or dark image keeps its brightness; only
    values outside all of these are stretched over their own range.
    """
    arr = np.asarray(img, dtype=np.float64)
    lo, hi = 0.0, 65535.0
    if not img.mode.startswith("I;16"):
        scales = ((1.0, 255.0, 65535.0) if img.mode == "F" else (255.0, 65535.0))
        vmin, vmax = float(arr.min()), float(arr.max())
        fits = [s for s in scales if vmin >= 0.0 and vmax <= s]
        if fits:
            hi = fits[0]
        else:
            lo, hi = vmin, max(vmax, vmin + 1.0)
    arr = np.clip((arr - lo) / (hi - lo), 0.0, 1.0) * 255.0
    return Image.fromarray(np.round(arr).astype(np.uint8), mode="L")


def to_rgb(img: Image.Image) -> Image.Image:
    """Converts an image of any PIL mode to 'RGB'.

    EXIF orientation is applied; transparency (RGBA, LA, P with a transparent index, PA) is
    composited onto white; high bit-depth greyscale (I;16*, I, F) is scaled to 8 bits rather than
    clipped; CMYK, YCbCr, LAB, HSV, 1 and L go through PIL's own conversion.
    """
    img = ImageOps.exif_transpose(img)
    if img.mode.startswith("I;16") or img.mode in ("I", "F"):
        img = _high_depth_to_l(img)
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode == "La":  # premultiplied; PIL converts it only to LA
        img = img.convert("LA")
    if img.mode in ("PA", "LA", "RGBa"):
        img = img.convert("RGBA")
    if img.mode == "RGBA":
        canvas = Image.new("RGB", img.size, _BACKGROUND)
        canvas.paste(img, mask=img.getchannel("A"))
        return canvas
    return img.convert("RGB")


def resize_center_crop(img: Image.Image, resolution: int) -> np.ndarray:
    """Resizes so the shorter side is `resolution`, centre-crops to a square; returns uint8 (R, R, 3).

    Images smaller than `resolution` are upscaled by the same rule.
    """
    if resolution <= 0:
        raise ValueError(f"resolution must be positive, got {resolution}")
    img = to_rgb(img)
    w, h = img.size
    scale = resolution / min(w, h)
    new_w, new_h = max(resolution, round(w * scale)), max(resolution, round(h * scale))
    if (new_w, new_h) != (w, h):
        img = img.resize((new_w, new_h), Image.Resampling.BICUBIC, reducing_gap=3.0)
    left, top = (new_w - resolution) // 2, (new_h - resolution) // 2
    img = img.crop((left, top, left + resolution, top + resolution))
    return np.asarray(img, dtype=np.uint8)

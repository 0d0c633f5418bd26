"""Builds import fixtures at test time: good images of many PIL modes and formats, and bad files.

`make_folder(root)` returns the expected outcome: the keys of every good image (with their number
of caption lines) and the count of each skip reason.
"""

from __future__ import annotations

import io
import json
import os
import tarfile

import numpy as np
from PIL import Image

RGB = np.arange(16 * 24 * 3, dtype=np.uint8).reshape(16, 24, 3)


def _bytes(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def good_images() -> dict[str, bytes]:
    """file name -> encoded bytes, one per mode/format worth covering."""
    rgb = Image.fromarray(RGB)
    rgba = Image.fromarray(np.dstack([RGB, np.full((16, 24), 128, np.uint8)]))
    p_transparent = Image.new("P", (20, 20), 0)
    p_transparent.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    p_transparent.info["transparency"] = 0
    i16 = Image.fromarray(np.full((12, 12), 65535, np.uint16))
    thirds = np.zeros((10, 30, 3), np.uint8)
    thirds[:, :10] = (255, 0, 0)
    thirds[:, 10:20] = (0, 255, 0)
    thirds[:, 20:] = (0, 0, 255)
    return {
        "rgb.jpg": _bytes(rgb, "JPEG"),
        "upper.JPG": _bytes(rgb, "JPEG"),
        "grey.png": _bytes(rgb.convert("L"), "PNG"),
        "greyalpha.png": _bytes(rgb.convert("LA"), "PNG"),
        "palette.gif": _bytes(rgb.convert("P"), "GIF"),
        "ptrans.png": _bytes(p_transparent, "PNG"),
        "rgba.png": _bytes(rgba, "PNG"),
        "cmyk.jpg": _bytes(rgb.convert("CMYK"), "JPEG"),
        "i16.png": _bytes(i16, "PNG"),
        "bilevel.bmp": _bytes(rgb.convert("1"), "BMP"),
        "photo.webp": _bytes(rgb, "WEBP"),
        "scan.tiff": _bytes(rgb, "TIFF"),
        "float.tif": _bytes(Image.fromarray(np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8)), "TIFF"),
        "int32.tif": _bytes(Image.fromarray(np.arange(64, dtype=np.int32).reshape(8, 8) * 1000), "TIFF"),
        "ycbcr.tif": _bytes(rgb.convert("YCbCr"), "TIFF"),
        "tiny.png": _bytes(Image.new("RGB", (3, 5), (10, 200, 30)), "PNG"),
        "thirds.png": _bytes(Image.fromarray(thirds), "PNG"),
    }


def _write(path: str, data: bytes) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def make_folder(root: str) -> tuple[dict[str, int], dict[str, int]]:
    """Writes a folder fixture; returns ({key: caption lines}, {reason: count})."""
    expected = {}
    for i, (name, data) in enumerate(good_images().items()):
        sub = "nested/deeper" if i % 3 == 0 else ""
        path = os.path.join(root, sub, name)
        _write(path, data)
        _write(os.path.splitext(path)[0] + ".txt", f"caption of {name}\n".encode())
        expected[os.path.join(sub, name)] = 1
    # Captions that need care: cp1252, UTF-8 with BOM, UTF-16 with BOM, several lines.
    _write(os.path.join(root, "cafe.png"), _bytes(Image.fromarray(RGB), "PNG"))
    _write(os.path.join(root, "cafe.txt"), "un café crème".encode("cp1252"))
    _write(os.path.join(root, "bom.png"), _bytes(Image.fromarray(RGB), "PNG"))
    _write(os.path.join(root, "bom.txt"), "\ufeffwith a bom".encode("utf-8"))
    _write(os.path.join(root, "wide.png"), _bytes(Image.fromarray(RGB), "PNG"))
    _write(os.path.join(root, "wide.txt"), "sixteen bits\n".encode("utf-16"))
    _write(os.path.join(root, "multi.png"), _bytes(Image.fromarray(RGB), "PNG"))
    _write(os.path.join(root, "multi.txt"), b"first line\n\n  second line  \nthird line\n")
    expected.update({"cafe.png": 1, "bom.png": 1, "wide.png": 1, "multi.png": 3})
    # Bad files.
    png = _bytes(Image.fromarray(RGB), "PNG")
    jpg = _bytes(Image.fromarray(RGB), "JPEG")
    bad = {
        "zero.jpg": (b"", "corrupt_image"),
        "truncated.png": (png[: len(png) // 2], "corrupt_image"),
        "truncated.jpg": (jpg[: len(jpg) // 2], "corrupt_image"),
        "garbage.png": (b"this is not an image at all" * 10, "corrupt_image"),
        "nocaption.png": (png, "missing_caption"),
        "emptycap.png": (png, "empty_caption"),
        "spacecap.png": (png, "empty_caption"),
    }
    for name, (data, _) in bad.items():
        _write(os.path.join(root, "bad", name), data)
        if name == "emptycap.png":
            _write(os.path.join(root, "bad", "emptycap.txt"), b"")
        elif name == "spacecap.png":
            _write(os.path.join(root, "bad", "spacecap.txt"), b"  \n\t\n")
        elif name != "nocaption.png":
            _write(os.path.join(root, "bad", os.path.splitext(name)[0] + ".txt"), b"a caption")
    _write(os.path.join(root, "notes.md"), b"ignored: not an image")
    reasons = {}
    for _, reason in bad.values():
        reasons[reason] = reasons.get(reason, 0) + 1
    return expected, reasons


def make_tar(path: str) -> tuple[dict[str, int], dict[str, int]]:
    """A webdataset shard with good and bad samples; returns ({key: lines}, {reason: count})."""
    png = _bytes(Image.fromarray(RGB), "PNG")
    members = [
        ("000000.jpg", _bytes(Image.fromarray(RGB), "JPEG")), ("000000.txt", b"a first sample"),
        ("000000.json", b"{}"),
        ("000001.png", png), ("000001.txt", b"two\nlines"),
        ("000002.png", png),  # no caption
        ("000003.jpg", b"\xff\xd8 broken"), ("000003.txt", b"a broken jpeg"),
        ("000004.webp", _bytes(Image.fromarray(RGB).convert("RGBA"), "WEBP")), ("000004.txt", "ünïcode".encode()),
        ("000005.png", png), ("000005.txt", b"   "),
    ]
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return ({"000000": 1, "000001": 2, "000004": 1},
            {"missing_caption": 1, "corrupt_image": 1, "empty_caption": 1})


def make_manifests(root: str) -> dict[str, str]:
    """A CSV and a JSONL manifest over images in `root/img`; returns {kind: path}."""
    png = _bytes(Image.fromarray(RGB), "PNG")
    _write(os.path.join(root, "img", "a.png"), png)
    _write(os.path.join(root, "img", "b.png"), png)
    absolute = os.path.join(root, "img", "b.png")
    rows = [
        {"file": "img/a.png", "text": "relative path"},
        {"file": absolute, "text": "absolute path"},
        {"file": "img/missing.png", "text": "no such file"},
        {"file": "img/a.png", "text": ""},
    ]
    csv_path = os.path.join(root, "manifest.csv")
    with open(csv_path, "w", encoding="utf-8", newline="") as f:
        f.write("file,text\n")
        for r in rows:
            f.write(f"{r['file']},\"{r['text']}\"\n")
    jsonl_path = os.path.join(root, "manifest.jsonl")
    with open(jsonl_path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    return {"csv": csv_path, "jsonl": jsonl_path}

"""Finding (image, caption) candidates in a source, before any image is decoded.

Three kinds of source, mixed freely under one folder:
- a folder tree of images with same-stem caption files (`x.jpg` + `x.txt`);
- a CSV or JSONL manifest of (image path, caption), paths relative to the manifest's folder;
- webdataset `.tar` shards as img2dataset writes them (`key.jpg` + `key.txt`, adjacent members).
Each candidate is either an `Item` (image bytes to decode, caption lines) or a `Skip` with a reason.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import os
import tarfile
from typing import Callable, Iterator

from dalle_jax.data.captions import caption_lines, decode_caption

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff")
MANIFEST_EXTENSIONS = (".csv", ".jsonl")


class SourceError(ValueError):
    """The source cannot be imported at all (missing, empty, malformed manifest)."""


@dataclasses.dataclass
class Item:
    """A candidate example: `read()` gives the image bytes; `lines` the caption lines."""

    key: str
    path: str
    read: Callable[[], bytes]
    lines: list[str]


@dataclasses.dataclass
class Skip:
    """A candidate that cannot become an example, and why."""

    path: str
    reason: str  # corrupt_image | missing_caption | empty_caption | missing_image
    detail: str = ""


def _read_file(path: str) -> Callable[[], bytes]:
    def read() -> bytes:
        with open(path, "rb") as f:
            return f.read()
    return read


def _item_or_skip(key: str, path: str, read, caption: bytes | str | None, caption_path: str):
    if caption is None:
        return Skip(path, "missing_caption", f"no {caption_path}")
    text = caption if isinstance(caption, str) else decode_caption(caption)
    lines = caption_lines(text)
    if not lines:
        return Skip(path, "empty_caption", f"{caption_path} has no text")
    return Item(key, path, read, lines)


def _folder(root: str, image_field: str, caption_field: str) -> Iterator[Item | Skip]:
    """Images with same-stem .txt captions, and any .tar shards or manifests, under `root`."""
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        by_lower = {f.lower(): f for f in files}
        for name in sorted(files):
            path = os.path.join(folder, name)
            stem, ext = os.path.splitext(name)
            ext = ext.lower()
            if ext in IMAGE_EXTENSIONS:
                txt = by_lower.get(stem.lower() + ".txt")
                caption = None
                if txt is not None:
                    with open(os.path.join(folder, txt), "rb") as f:
                        caption = f.read()
                key = os.path.relpath(path, root)
                yield _item_or_skip(key, path, _read_file(path), caption,
                                    os.path.join(folder, txt or stem + ".txt"))
            elif ext == ".tar":
                yield from _tar(path, prefix=os.path.relpath(path, root))
            elif ext in MANIFEST_EXTENSIONS:
                try:  # a stray CSV/JSONL inside a folder must not stop the import
                    rows = list(_manifest(path, os.path.relpath(path, root), image_field, caption_field))
                except SourceError as e:
                    logging.warning("ignoring %s: not a manifest (%s)", path, e)
                    continue
                yield from rows


def _tar(path: str, prefix: str | None = None) -> Iterator[Item | Skip]:
    """Members grouped by key (path up to the first dot of the basename), adjacent as webdataset writes."""
    prefix = prefix or os.path.basename(path)

    def flush(key, members):
        images = [ext for ext in members if "." + ext.split(".")[-1] in IMAGE_EXTENSIONS]
        if not images:
            return None
        data = members[images[0]]
        where = f"{path}:{key}.{images[0]}"
        return _item_or_skip(f"{prefix}/{key}", where, lambda: data, members.get("txt"),
                             f"{path}:{key}.txt")

    try:
        tar = tarfile.open(path, "r|*")
    except (tarfile.TarError, OSError) as e:
        yield Skip(path, "corrupt_image", f"unreadable tar: {e}")
        return
    key, members = None, {}
    try:
        for member in tar:
            if not member.isfile():
                continue
            folder, base = os.path.split(member.name)
            if base.startswith("."):
                continue
            stem, _, ext = base.partition(".")
            this = os.path.join(folder, stem)
            if this != key:
                if key is not None and (out := flush(key, members)):
                    yield out
                key, members = this, {}
            members[ext.lower()] = tar.extractfile(member).read()
    except (tarfile.TarError, OSError, EOFError) as e:
        yield Skip(path, "corrupt_image", f"tar ends early: {e}")
    finally:
        tar.close()
    if key is not None and (out := flush(key, members)):
        yield out


def _manifest(path: str, prefix: str | None = None, image_field: str = "image",
              caption_field: str = "caption") -> Iterator[Item | Skip]:
    """Rows of a CSV (with a header) or JSONL manifest."""
    prefix = prefix or os.path.basename(path)
    base = os.path.dirname(os.path.abspath(path))
    with open(path, "rb") as f:
        text = decode_caption(f.read())
    if path.lower().endswith(".csv"):
        reader = csv.DictReader(text.splitlines())
        fields = reader.fieldnames or []
        rows = list(reader)
    else:
        rows = []
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise SourceError(f"{path} line {n} is not JSON: {e}") from None
        fields = sorted({k for r in rows for k in r})
    for field in (image_field, caption_field):
        if rows and field not in fields:
            raise SourceError(f"manifest {path} has no field {field!r} (it has {list(fields)})")
    for n, row in enumerate(rows):
        rel = str(row.get(image_field) or "")
        image = rel if os.path.isabs(rel) else os.path.join(base, rel)
        if not rel or not os.path.isfile(image):
            yield Skip(f"{path}:{n + 1}", "missing_image", f"no image file {rel!r}")
            continue
        caption = row.get(caption_field)
        yield _item_or_skip(f"{prefix}/{n}:{rel}", image, _read_file(image),
                            "" if caption is None else str(caption), f"{path}:{n + 1} {caption_field}")


def discover(source: str, image_field: str = "image", caption_field: str = "caption") -> Iterator[Item | Skip]:
    """Streams the candidates of `source` (a folder, a manifest or a .tar), in a stable order.

    Only the current candidate's bytes are held in memory. A missing or unsupported source raises
    at once; an empty one when the stream ends without a candidate.
    """
    if not os.path.exists(source):
        raise SourceError(f"source {source!r} does not exist")
    lower = source.lower()
    if os.path.isdir(source):
        found = _folder(source, image_field, caption_field)
    elif lower.endswith(".tar"):
        found = _tar(source)
    elif lower.endswith(MANIFEST_EXTENSIONS):
        found = _manifest(source, None, image_field, caption_field)
    else:
        raise SourceError(f"source {source!r} is not a folder, a .tar shard or a .csv/.jsonl manifest")
    return _not_empty(found, source)


def _not_empty(found: Iterator[Item | Skip], source: str) -> Iterator[Item | Skip]:
    any_found = False
    for candidate in found:
        any_found = True
        yield candidate
    if not any_found:
        raise SourceError(f"source {source!r} is empty: no images, manifests or .tar shards in it")

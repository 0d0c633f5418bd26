"""Finding (image, caption) candidates in a source, before any image is decoded.

Three kinds of source, mixed freely under one folder:
- a folder tree of images with same-stem caption files (`x.jpg` + `x.txt`);
- a CSV or JSONL manifest of (image path, caption), paths relative to the manifest's folder;
- webdataset `.tar` shards as img2dataset writes them (`key.jpg` + `key.txt`, adjacent members).
Each candidate is either an `Item` (image bytes to decode, caption lines) or a `Skip` with a reason.
An image in a folder that has no caption file but is named by a manifest in the same source is
the manifest's business, not a `missing_caption`.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import logging
import os
import tarfile
from typing import Callable, Iterator

from dalle_jax.data.captions import caption_lines, decode_caption

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff")
MANIFEST_EXTENSIONS = (".csv", ".jsonl")
TAR_EXTENSIONS = (".tar",)


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
    """A candidate that cannot become an example, and why (`key` tells same-path skips apart)."""

    path: str
    reason: str  # corrupt_image | missing_caption | empty_caption | missing_image
    detail: str = ""
    key: str = ""


def _read_file(path: str) -> Callable[[], bytes]:
    def read() -> bytes:
        with open(path, "rb") as f:
            return f.read()
    return read


def _item_or_skip(key: str, path: str, read, caption: bytes | str | None, caption_path: str):
    if caption is None:
        return Skip(path, "missing_caption", f"no {caption_path}", key)
    text = caption if isinstance(caption, str) else decode_caption(caption)
    lines = caption_lines(text)
    if not lines:
        return Skip(path, "empty_caption", f"{caption_path} has no text", key)
    return Item(key, path, read, lines)


def _is(name: str, extensions: tuple[str, ...]) -> bool:
    return os.path.splitext(name)[1].lower() in extensions


def _walk(root: str) -> Iterator[tuple[str, list[str]]]:
    """(folder, sorted file names) for every folder under `root`, in a stable order."""
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        yield folder, sorted(f for f in files if not f.startswith("."))


def _folder(root: str, image_field: str, caption_field: str) -> Iterator[Item | Skip]:
    """Images with same-stem .txt captions, and any .tar shards or manifests, under `root`."""
    manifests: dict[str, list[Item | Skip]] = {}
    for folder, files in _walk(root):
        for name in files:
            if _is(name, MANIFEST_EXTENSIONS):
                path = os.path.join(folder, name)
                try:  # a stray CSV/JSONL inside a folder must not stop the import
                    manifests[path] = list(_manifest(path, os.path.relpath(path, root),
                                                     image_field, caption_field))
                except SourceError as e:
                    log.warning("ignoring %s: not a manifest (%s)", path, e)
    named = {os.path.realpath(c.path) for rows in manifests.values() for c in rows}
    for folder, files in _walk(root):
        by_lower = {f.lower(): f for f in files}
        for name in files:
            path = os.path.join(folder, name)
            if _is(name, IMAGE_EXTENSIONS):
                stem = os.path.splitext(name)[0]
                txt = by_lower.get(stem.lower() + ".txt")
                if txt is None and os.path.realpath(path) in named:
                    continue  # captioned by a manifest
                caption = None
                if txt is not None:
                    try:
                        with open(os.path.join(folder, txt), "rb") as f:
                            caption = f.read()
                    except OSError as e:  # broken link, no permission: skip, never stop
                        yield Skip(path, "missing_caption", f"unreadable {txt}: {e}",
                                   os.path.relpath(path, root))
                        continue
                yield _item_or_skip(os.path.relpath(path, root), path, _read_file(path), caption,
                                    os.path.join(folder, txt or stem + ".txt"))
            elif _is(name, TAR_EXTENSIONS):
                yield from _tar(path, prefix=os.path.relpath(path, root))
            elif path in manifests:
                yield from manifests[path]


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
        yield Skip(path, "corrupt_image", f"unreadable tar: {e}", prefix)
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
        yield Skip(path, "corrupt_image", f"tar ends early: {e}", prefix)
    finally:
        tar.close()
    if key is not None and (out := flush(key, members)):
        yield out


def _manifest_rows(path: str) -> tuple[list[str], list[dict]]:
    """(field names, rows) of a CSV (with a header) or JSONL manifest; decoded leniently."""
    with open(path, "rb") as f:
        text = decode_caption(f.read())
    if path.lower().endswith(".csv"):
        reader = csv.DictReader(io.StringIO(text, newline=""))  # quoted captions may hold newlines
        rows = list(reader)
        return list(reader.fieldnames or []), rows
    rows = []
    for n, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise SourceError(f"{path} line {n} is not JSON: {e}") from None
        if not isinstance(row, dict):
            raise SourceError(f"{path} line {n} is not a JSON object")
        rows.append(row)
    return sorted({k for r in rows for k in r}), rows


def _manifest(path: str, prefix: str | None = None, image_field: str = "image",
              caption_field: str = "caption") -> Iterator[Item | Skip]:
    """Candidates of a CSV or JSONL manifest; raises `SourceError` if a named field is absent."""
    prefix = prefix or os.path.basename(path)
    base = os.path.dirname(os.path.abspath(path))
    fields, rows = _manifest_rows(path)
    for field in (image_field, caption_field):
        if rows and field not in fields:
            raise SourceError(f"manifest {path} has no field {field!r} (it has {fields})")
    for n, row in enumerate(rows, 1):
        rel = str(row.get(image_field) or "").strip()
        key = f"{prefix}/{n}:{rel}"
        image = os.path.join(base, os.path.expanduser(rel))  # an absolute `rel` stays as it is
        if not rel or not os.path.isfile(image):
            yield Skip(f"{path}:{n}", "missing_image", f"no image file {rel!r}", key)
            continue
        caption = row.get(caption_field)
        if isinstance(caption, list):  # JSONL may give a caption as a list of lines
            caption = "\n".join(str(c) for c in caption)
        yield _item_or_skip(key, image, _read_file(image), "" if caption is None else str(caption),
                            f"{path}:{n} {caption_field}")


def discover(source: str, image_field: str = "image", caption_field: str = "caption") -> Iterator[Item | Skip]:
    """Streams the candidates of `source` (a folder, a manifest or a .tar), in a stable order.

    Only the current candidate's bytes are held in memory (plus a folder's manifests' rows). A
    missing or unsupported source raises at once; an empty one when the stream ends without a
    candidate.
    """
    if not os.path.exists(source):
        raise SourceError(f"source {source!r} does not exist")
    if os.path.isdir(source):
        found = _folder(source, image_field, caption_field)
    elif _is(source, TAR_EXTENSIONS):
        found = _tar(source)
    elif _is(source, MANIFEST_EXTENSIONS):
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

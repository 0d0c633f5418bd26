"""Caption text: lenient decoding of caption bytes, and splitting a caption field into lines."""

from __future__ import annotations

from typing import Any

import numpy as np


def decode_caption(data: bytes) -> str:
    """Caption bytes to text: UTF-8 (BOM stripped), UTF-16 with a BOM, else cp1252 leniently."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16", errors="replace")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("cp1252", errors="replace")


def caption_lines(value: Any) -> list[str]:
    """The non-empty, stripped lines of a caption field: str, bytes, or a sequence of them."""
    if isinstance(value, (bytes, np.bytes_)):
        value = decode_caption(bytes(value))
    if isinstance(value, str):
        return [line.strip() for line in value.splitlines() if line.strip()]
    return [line for item in np.asarray(value).reshape(-1).tolist() for line in caption_lines(item)]

"""Deterministic in-memory records for loader tests."""

import numpy as np

WORDS = ["red", "blue", "green", "circle", "square", "star", "above", "below"]


def records(n: int = 40, res: int = 8) -> list[dict]:
    """`n` records: a random uint8 image and a two-line caption naming the record's index."""
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        words = " ".join(rng.choice(WORDS, size=3))
        out.append({
            "image": rng.integers(0, 256, size=(res, res, 3), dtype=np.uint8),
            "caption": f"item {i} {words}\nsecond line {i}",
        })
    return out

"""The summary every preparer returns (and `prepare` prints as one JSON line)."""

from __future__ import annotations

from typing import Mapping

# Why a candidate example was not imported.
SKIP_REASONS = ("corrupt_image", "missing_caption", "empty_caption", "missing_image")


def prepared_summary(
    dataset: str, config: str, path: str, splits: Mapping[str, int],
    skipped: Mapping[str, int] | None = None,
) -> dict:
    """`{"dataset", "config", "path", "splits", "skipped"}` with a count for every skip reason."""
    counts = dict.fromkeys(SKIP_REASONS, 0)
    counts.update(skipped or {})
    return {"dataset": dataset, "config": config, "path": str(path), "splits": dict(splits),
            "skipped": counts}

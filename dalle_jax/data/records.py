"""Fields of a dataset record (a nested dict) named by '/'-separated keys such as 'captions/text'."""

from __future__ import annotations

from typing import Any


def lookup_field(example: dict, key: str) -> Any:
    """`example['a']['b']` for key 'a/b'; a KeyError names the key and what is there."""
    value = example
    for part in key.split("/"):
        if not isinstance(value, dict) or part not in value:
            have = sorted(value) if isinstance(value, dict) else type(value).__name__
            raise KeyError(f"field {key!r} not in example (has {have})")
        value = value[part]
    return value


def record_of(fields: dict[str, Any]) -> dict:
    """The nested record holding each value at its key: {'a/b': 1, 'c': 2} → {'a': {'b': 1}, 'c': 2}."""
    out: dict = {}
    for key, value in fields.items():
        *parents, last = key.split("/")
        node = out
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return out

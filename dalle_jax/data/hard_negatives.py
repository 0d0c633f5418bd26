"""Hard negatives a dataset offers its contrastive model: captions and images with one attribute
changed, so that telling them from the true pair takes seeing that attribute.

A dataset whose captions have such attributes registers a provider in `PROVIDERS`; `for_data`
gives the reranker's trainer its `HardNegatives`, or None for a dataset without them. The trainer
never needs to know which dataset it is.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Callable

import ml_collections
import numpy as np


@dataclasses.dataclass(frozen=True)
class HardNegatives:
    """A dataset's negatives. Both functions draw from the data seed and the batch's captions,
    so a batch always gets the same negatives, resumed runs included."""

    # What a negative caption / image may change (e.g. 'colour', 'shape').
    caption_kinds: tuple[str, ...]
    image_kinds: tuple[str, ...]
    # (captions, kinds) → one negative caption each ('' where none can be made).
    captions: Callable[[list[str], tuple[str, ...]], list[str]]
    # (uint8 images (B, R, R, 3), captions, kinds) → (negative images, has (B,) bool).
    images: Callable[[np.ndarray, list[str], tuple[str, ...]], tuple[np.ndarray, np.ndarray]]


# dataset name → module with `hard_negatives(data_config) → HardNegatives | None` (imported on use).
PROVIDERS = {"shapes": "dalle_jax.data.shapes.hard_negatives"}


def for_data(data: ml_collections.ConfigDict) -> HardNegatives | None:
    """The hard negatives of `config.data`'s dataset, or None where it has none."""
    module = PROVIDERS.get(data.dataset)
    return importlib.import_module(module).hard_negatives(data) if module else None


def parse_kinds(text: str, allowed: tuple[str, ...]) -> tuple[str, ...]:
    """'shape,position' → ('shape', 'position'); a ValueError names an unknown or missing kind
    (one not in `allowed`)."""
    kinds = tuple(k.strip() for k in text.split(",") if k.strip())
    bad = [k for k in kinds if k not in allowed]
    if bad or not kinds:
        raise ValueError(f"negative kinds {text!r}: each must be one of {', '.join(allowed)}")
    return kinds

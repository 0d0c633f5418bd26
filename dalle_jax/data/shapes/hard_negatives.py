"""`shapes`' hard negatives for the reranker (`data.hard_negatives`): object scenes have a colour,
shape, place and relation to swap in a caption (`negatives`) and a shape or place to change in an
image (`negative_images`); neither ever shows a held-out (colour, shape) pair."""

from __future__ import annotations

import ml_collections

from dalle_jax.data.hard_negatives import HardNegatives
from dalle_jax.data.shapes import negative_images, negatives
from dalle_jax.data.shapes.styles import STYLES
from dalle_jax.data.shapes.vocabulary import DEFAULT_HELDOUT_PAIRS


def hard_negatives(data: ml_collections.ConfigDict) -> HardNegatives | None:
    """The negatives of a `shapes` data config; None for the `words` variant (nothing to swap)."""
    if data.shapes.variant not in STYLES:
        return None
    avoid = frozenset(tuple(p) for p in data.shapes.get("heldout_pairs", DEFAULT_HELDOUT_PAIRS))
    return HardNegatives(
        caption_kinds=negatives.KINDS, image_kinds=negative_images.KINDS,
        captions=lambda captions, kinds: negatives.negative_captions(
            captions, data.seed, avoid, kinds),
        images=lambda images, captions, kinds: negative_images.negative_images(
            images, captions, data.seed, avoid, kinds))

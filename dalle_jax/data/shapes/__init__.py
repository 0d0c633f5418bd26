"""The built-in synthetic `shapes` dataset: coloured shapes or coloured words, with captions.

The names below are plain Python (no TF); the builder and `prepare()` are in `shapes.shapes`,
imported on use because preparing needs TensorFlow.
"""

from dalle_jax.data.shapes.vocabulary import (
    BACKGROUNDS, COLOURS, DEFAULT_HELDOUT_PAIRS, POSITIONS, RELATIONS, SHAPES, SIZES, WORDS,
)

__all__ = ["BACKGROUNDS", "COLOURS", "DEFAULT_HELDOUT_PAIRS", "POSITIONS", "RELATIONS", "SHAPES",
           "SIZES", "WORDS"]

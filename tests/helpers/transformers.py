"""A tiny DalleTransformer and a batch of its stream, for the transformer's tests."""

import jax
from flax import nnx

from dalle_jax.models.dalle.transformer import DalleTransformer

TEXT, GRID, TV, IV = 8, 4, 50, 32


def model(**kw):
    """A 4-layer DalleTransformer of width 32 (keyword arguments override), seeded."""
    args = dict(text_vocab=TV, text_len=TEXT, image_vocab=IV, grid=GRID, width=32, depth=4,
                heads=2, head_dim=16, conv_kernel=3, block_size=8, rngs=nnx.Rngs(0))
    args.update(kw)
    return DalleTransformer(**args)


def batch(seed=0, b=2):
    """(text, image codes) for `b` examples, the text ending in 3 pad slots."""
    k1, k2 = jax.random.split(jax.random.key(seed))
    text = jax.random.randint(k1, (b, TEXT), 1, TV).at[:, 5:].set(0)  # 3 pad slots
    image = jax.random.randint(k2, (b, GRID, GRID), 0, IV)
    return text, image

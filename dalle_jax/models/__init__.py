"""Flax NNX models: the dVAE / VQ-VAE image tokenizer (stage 1); the transformer and CLIP follow.

Parameters are created unsharded and carry logical axis names in their metadata; the training code
places them on the mesh (`dalle_jax.parallel.partitioning`), so eager sharding is turned off here.
"""

from flax import nnx

nnx.use_eager_sharding(False)

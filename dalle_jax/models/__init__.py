"""Flax NNX models: the dVAE (`dvae/`, stage 1), the transformer (`dalle/`, stage 2) and CLIP.

Parameters are created unsharded and carry logical axis names in their metadata; the training code
places them on the mesh (`dalle_jax.parallel.partitioning`), so eager sharding is turned off here.
"""

from flax import nnx

nnx.use_eager_sharding(False)

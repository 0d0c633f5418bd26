"""Small synthetic image batches for the training tests."""

import numpy as np


def fixed_batch(resolution=32, n=8, seed=0):
    """Flat-coloured squares on a background: something a tiny model can learn in a few steps."""
    rng = np.random.default_rng(seed)
    images = np.zeros((n, resolution, resolution, 3), np.uint8)
    for img in images:
        img[:] = rng.integers(0, 256, 3)
        y, x = rng.integers(0, resolution // 2, 2)
        img[y:y + resolution // 2, x:x + resolution // 2] = rng.integers(0, 256, 3)
    return images

"""Image tokenizers for inference (stage 1): what they share, and `load_codec(reference)`.

A codec turns uint8 images into a grid of codes and codes back into images in [0, 1]. Two kinds:

    load_codec("workdirs/dvae_shapes")            # a dVAE or VQ-VAE workdir trained here
    load_codec("vqgan:weights/vqgan-f16-16384")   # taming's VQGAN, a converted directory
    load_codec("vqgan:f16-16384:last.ckpt")       # taming's checkpoint, converted as it loads (torch)

Every codec has `reference` (the string `load_codec` takes back, written beside the codes it makes),
`label` (names its codes' dataset), `step`, `vocab_size`, `grid_scale` (image side ÷ grid side),
`resolution`, `image_key` and `caption_key` (what `data encode` reads by default), `encode`,
`decode` and `on_this_host`. Calls run batch-sharded over the codec's mesh: a batch that does not
divide over the batch shards is padded and trimmed.
"""

from __future__ import annotations

import os

import jax
import numpy as np

from dalle_jax.parallel.mesh import batch_sharding, num_batch_shards

VQGAN = "vqgan:"


class ImageCodec:
    """Checks and batch sharding shared by the codecs. A subclass sets `mesh`, `model`,
    `vocab_size`, `grid_scale` and the jitted `_encode(model, uint8 images)` and
    `_decode(model, codes)`, both returning arrays every process reads whole."""

    mesh: jax.sharding.Mesh
    vocab_size: int
    grid_scale: int

    def _sharded(self, x: np.ndarray) -> tuple[jax.Array, int]:
        n = len(x)
        pad = (-n) % num_batch_shards(self.mesh)
        if pad:
            x = np.concatenate([x, np.repeat(x[-1:], pad, axis=0)])
        return jax.device_put(x, batch_sharding(self.mesh, x.ndim)), n

    def encode(self, images_uint8: np.ndarray) -> np.ndarray:
        """uint8 images (B, H, W, 3), H and W multiples of f = `grid_scale` → int32 codes
        (B, H/f, W/f)."""
        images_uint8 = np.asarray(images_uint8)
        if images_uint8.ndim != 4 or images_uint8.shape[-1] != 3:
            raise ValueError(f"images must be (B, H, W, 3), got {images_uint8.shape}")
        f = self.grid_scale
        if images_uint8.shape[1] % f or images_uint8.shape[2] % f:
            raise ValueError(f"image sides {images_uint8.shape[1:3]} must be multiples of {f}, "
                             "the codec's pixels per code")
        x, n = self._sharded(images_uint8)
        return np.asarray(self._encode(self.model, x))[:n]

    def decode(self, codes: np.ndarray) -> np.ndarray:
        """int codes (B, g, g) → float images in [0, 1] (B, fg, fg, 3), f = `grid_scale`."""
        codes = np.asarray(codes)
        if codes.ndim != 3:
            raise ValueError(f"codes must be (B, g, g), got {codes.shape}")
        if codes.size and (codes.min() < 0 or codes.max() >= self.vocab_size):
            raise ValueError(f"codes must lie in [0, {self.vocab_size}), got "
                             f"[{codes.min()}, {codes.max()}]")
        c, n = self._sharded(codes.astype(np.int32))
        return np.asarray(self._decode(self.model, c))[:n]


def local_path(reference: str) -> str:
    """The file or directory a codec reference reads: the workdir, the converted directory or
    the checkpoint."""
    if reference.startswith(VQGAN):
        return reference[len(VQGAN):].split(":", 1)[-1]
    return reference


def load_codec(reference: str, *, mesh_axes: dict | None = None) -> ImageCodec:
    """A stage-1 workdir (`TrainedDVAE`) or `vqgan:DIR` / `vqgan:PRESET:CKPT` (`TrainedVQGAN`);
    see the module docstring. A FileNotFoundError names a reference that is not there."""
    from dalle_jax.generation.dvae import TrainedDVAE
    from dalle_jax.generation.vqgan import TrainedVQGAN

    path = local_path(reference)
    if "://" not in path and not os.path.exists(path):
        raise FileNotFoundError(f"image tokenizer {reference!r}: {path!r} is not there")
    if reference.startswith(VQGAN):
        return TrainedVQGAN.load(reference[len(VQGAN):], mesh_axes=mesh_axes)
    return TrainedDVAE.load(reference, mesh_axes=mesh_axes)

"""The stage-1 model: encoder, quantizer (gumbel or vq) and decoder, with `encode` / `decode`.

`DVAE.from_config(config.model)` builds it. Images go in as floats in [0, 1]
(B, H, W, 3); `encode` gives integer codes (B, H/f, W/f), f = 2^`downsample` (8 in the paper);
`decode` gives images in [0, 1].
The training forward pass lives in `dalle_jax.training.dvae.loss`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from dalle_jax.models.dvae import pixels
from dalle_jax.models.dvae.encoder_decoder import DOWNSAMPLE, Decoder, Encoder
from dalle_jax.models.dvae.quantizers import DistanceLogits, VectorQuantizer, nearest_codes

QUANTIZERS = ("gumbel", "vq")
GUMBEL_LOGITS = ("conv", "distance", "tied")
DISTANCE_LOGITS = ("distance", "tied")  # the gumbel logits that come with a codebook
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


class DVAE(nnx.Module):
    """A dVAE (`quantizer='gumbel'`) or a VQ-VAE (`quantizer='vq'`) over RGB images."""

    def __init__(self, *, quantizer: str = "gumbel", vocab_size: int = 8192, n_hid: int = 256,
                 n_blk_per_group: int = 2, n_init: int = 128, embed_dim: int = 64,
                 dtype: str = "float32", gumbel_logits: str = "conv", downsample: int = DOWNSAMPLE,
                 rngs: nnx.Rngs):
        if quantizer not in QUANTIZERS:
            raise ValueError(f"model.quantizer={quantizer!r}; choose one of {QUANTIZERS}")
        if gumbel_logits not in GUMBEL_LOGITS:
            raise ValueError(f"model.gumbel_logits={gumbel_logits!r}; choose one of {GUMBEL_LOGITS}")
        if dtype not in DTYPES:
            raise ValueError(f"model.dtype={dtype!r}; choose one of {sorted(DTYPES)}")
        self.quantizer = quantizer
        self.vocab_size = vocab_size
        vq = quantizer == "vq"
        distance = not vq and gumbel_logits in DISTANCE_LOGITS
        self.tied = not vq and gumbel_logits == "tied"
        self.encoder = Encoder(n_hid=n_hid, n_blk_per_group=n_blk_per_group, vocab_size=vocab_size,
                               output_channels=embed_dim if vq or distance else None,
                               dtype=DTYPES[dtype], downsample=downsample, rngs=rngs)
        self.decoder = Decoder(n_init=n_init, n_hid=n_hid, n_blk_per_group=n_blk_per_group,
                               vocab_size=vocab_size,
                               input_channels=embed_dim if vq or self.tied else None,
                               dtype=DTYPES[dtype], downsample=downsample, rngs=rngs)
        self.codebook = VectorQuantizer(vocab_size, embed_dim, rngs=rngs) if vq else None
        self.distance = DistanceLogits(vocab_size, embed_dim, rngs=rngs) if distance else None

    @classmethod
    def from_config(cls, model: ml_collections.ConfigDict, seed: int = 0) -> "DVAE":
        """Builds the model that `config.model` describes."""
        return cls(quantizer=model.quantizer, vocab_size=model.vocab_size, n_hid=model.n_hid,
                   n_blk_per_group=model.n_blk_per_group, n_init=model.n_init,
                   embed_dim=model.embed_dim, dtype=model.dtype,
                   gumbel_logits=model.get("gumbel_logits", "conv"),
                   downsample=model.get("downsample", DOWNSAMPLE), rngs=nnx.Rngs(seed))

    def encoder_output(self, images: jax.Array) -> jax.Array:
        """Images in [0, 1] → logits (gumbel) or vectors (vq), (B, g, g, ·)."""
        return self.encode_mapped(pixels.map_pixels(images))

    def encode_mapped(self, x_mapped: jax.Array) -> jax.Array:
        """Pixels already mapped by `pixels.map_pixels` → logits (gumbel) or vectors (vq)."""
        out = self.encoder(x_mapped)
        return out if self.distance is None else self.distance(out)

    def encode(self, images: jax.Array) -> jax.Array:
        """Images in [0, 1] (B, H, W, 3) → codes (B, H/f, W/f) int32 (argmax; no gumbel noise)."""
        return self.codes_of(self.encoder_output(images))

    def codes_of(self, out: jax.Array) -> jax.Array:
        """Codes (B, g, g) int32 from an `encoder_output`: argmax logits, or nearest codebook row."""
        if self.codebook is None:
            return jnp.argmax(out, axis=-1).astype(jnp.int32)
        return nearest_codes(out, self.codebook.codebook[...]).astype(jnp.int32)

    def decode_stats(self, codes: jax.Array) -> jax.Array:
        """Codes (B, g, g) → decoder output (B, fg, fg, 6): μ then ln b."""
        if self.tied:
            return self.decoder(self.distance.codebook[...][codes])
        if self.codebook is None:
            return self.decoder.decode_codes(codes)
        return self.decoder(self.codebook.lookup(codes))

    def decode_relaxed(self, z: jax.Array) -> jax.Array:
        """Gumbel: one-hot or relaxed codes (B, g, g, V) → decoder output (training)."""
        if self.tied:
            return self.decoder(z @ self.distance.codebook[...])
        return self.decoder(z)

    def decode(self, codes: jax.Array) -> jax.Array:
        """Codes (B, g, g) → images in [0, 1] (B, fg, fg, 3)."""
        mu, _ = pixels.split_stats(self.decode_stats(codes))
        return pixels.reconstruction(mu)

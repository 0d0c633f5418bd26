"""A contrastive text–image model (CLIP-style) that scores DALL·E samples against their prompt.

Two encoders map into one `embed_dim` space. The text encoder embeds BPE ids (the same tokenizer
and padding as stage 2) with learned positions, runs pre-norm transformer blocks in which padding
keys are masked, and averages the non-padding positions. The image encoder is a vision
transformer: non-overlapping `patch`×`patch` patches of the pixels in [−1, 1] and a linear
embedding of each, or, with `stem_channels`, a convolutional stem in their place (Xiao et al.
2021, "Early convolutions help transformers see better"): log2(patch) 3×3 ReLU convolutions of
stride 2, `stem_channels` wide and doubling at each, then a linear map of each position. A token
then sees about two patches across, so a small object's outline lies inside one token's view
instead of being cut between linear patches. Then learned positions, the same blocks without a
mask, and the mean over the tokens. Each side ends in a LayerNorm and a linear projection;
embeddings are L2-normalised. `logit_scale` is the learned log inverse temperature of the
symmetric InfoNCE loss (`training.clip.loss`). The blocks are the stage-2 transformer's
(`transformer.Layers`, `transformer.block`), run under `lax.scan`; with `dtype='bfloat16'` the
stem and the blocks compute in bfloat16 (float32 parameters, float32 attention softmax and
pooling), as the stage-2 transformer does.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from dalle_jax.text_ids import PAD_ID
from dalle_jax.models.dalle.attention_masks import MASKED
from dalle_jax.models.dvae.encoder_decoder import Conv
from dalle_jax.models.dalle.transformer import (DTYPES, Layers, block, compute_params, layer_norm,
                                          normal_param, ones_param, zeros_param)


def _attention(q, k, v, key_mask=None):
    """Softmax attention of (B, L, H, D) over all keys, or those where key_mask (B, L) is True."""
    scores = jnp.einsum("bqhd,bkhd->bhqk", q * q.shape[-1] ** -0.5, k,
                        preferred_element_type=jnp.float32)
    if key_mask is not None:
        scores = jnp.where(key_mask[:, None, None, :], scores, MASKED)
    return jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(scores, axis=-1).astype(v.dtype), v)


class Tower(nnx.Module):
    """Transformer blocks over embedded tokens, a masked mean, LayerNorm and a projection."""

    def __init__(self, *, width: int, depth: int, heads: int, embed_dim: int, dtype=jnp.float32,
                 rngs: nnx.Rngs):
        self.dtype = dtype
        self.layers = Layers(depth=depth, width=width, heads=heads, head_dim=width // heads,
                             mlp_ratio=4, rngs=rngs)
        self.final_scale = ones_param((width,), ("norm",))
        self.final_bias = zeros_param((width,), ("norm",))
        self.proj = normal_param(rngs, (width, embed_dim), ("embed", None), std=width ** -0.5)

    def __call__(self, x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
        """(B, L, W) embedded tokens, optional (B, L) mask of real ones → unit vectors (B, E)."""
        attn = lambda q, k, v: _attention(q, k, v, mask)
        x = jax.lax.scan(lambda x, p: (block(compute_params(p, self.dtype), x, attn), None),
                         x.astype(self.dtype), self.layers.stacked())[0].astype(jnp.float32)
        weights = jnp.ones(x.shape[:2]) if mask is None else mask.astype(x.dtype)
        pooled = (x * weights[..., None]).sum(1) / jnp.maximum(weights.sum(1, keepdims=True), 1.0)
        e = layer_norm(pooled, self.final_scale[...], self.final_bias[...]) @ self.proj[...]
        return e * jax.lax.rsqrt(jnp.sum(jnp.square(e), -1, keepdims=True) + 1e-12)


class Clip(nnx.Module):
    """`text_embedding(text)`, `image_embedding(images)` and `logits(images, text)`."""

    def __init__(self, *, text_vocab: int, text_len: int, resolution: int, patch: int,
                 width: int, text_depth: int, image_depth: int, heads: int, embed_dim: int,
                 init_temperature: float = 0.07, stem_channels: int = 0, dtype: str = "float32",
                 rngs: nnx.Rngs):
        if resolution % patch:
            raise ValueError(f"clip resolution {resolution} is not a multiple of patch {patch}")
        if width % heads:
            raise ValueError(f"clip width {width} is not a multiple of heads {heads}")
        if dtype not in DTYPES:
            raise ValueError(f"clip dtype={dtype!r}; choose one of {sorted(DTYPES)}")
        self.text_vocab, self.text_len, self.resolution, self.patch = text_vocab, text_len, resolution, patch
        patches = (resolution // patch) ** 2
        if stem_channels < 0:
            raise ValueError(f"clip stem_channels must be ≥ 0, got {stem_channels}")
        if stem_channels and (patch < 2 or patch & (patch - 1)):
            raise ValueError(f"a clip conv stem (stem_channels={stem_channels}) halves the image "
                             f"log2(patch) times, so patch must be a power of 2 ≥ 2, got {patch}")
        halvings = patch.bit_length() - 1 if stem_channels else 0
        widths = [stem_channels * 2 ** i for i in range(halvings)]
        self.stem = (nnx.List([Conv(n_in, n_out, 3, stride=2, dtype=DTYPES[dtype], rngs=rngs)
                               for n_in, n_out in zip([3, *widths], widths)]) if widths else None)
        channels = widths[-1] if widths else patch * patch * 3
        self.token_embed = normal_param(rngs, (text_vocab, width), ("vocab", "embed"))
        self.text_pos = normal_param(rngs, (text_len, width), (None, "embed"))
        self.patch_embed = normal_param(rngs, (channels, width), (None, "embed"),
                                        std=channels ** -0.5)
        self.patch_bias = zeros_param((width,), ("norm",))
        self.image_pos = normal_param(rngs, (patches, width), (None, "embed"))
        self.text_tower = Tower(width=width, depth=text_depth, heads=heads, embed_dim=embed_dim,
                                dtype=DTYPES[dtype], rngs=rngs)
        self.image_tower = Tower(width=width, depth=image_depth, heads=heads, embed_dim=embed_dim,
                                 dtype=DTYPES[dtype], rngs=rngs)
        self.logit_scale = nnx.Param(jnp.full((), math.log(1 / init_temperature), jnp.float32))

    @classmethod
    def from_config(cls, model: ml_collections.ConfigDict, seed: int = 0) -> "Clip":
        """Builds the model that `config.model` describes."""
        return cls(text_vocab=model.text_vocab, text_len=model.text_len,
                   resolution=model.resolution, patch=model.patch, width=model.width,
                   text_depth=model.text_depth, image_depth=model.image_depth, heads=model.heads,
                   embed_dim=model.embed_dim, init_temperature=model.init_temperature,
                   stem_channels=model.get("stem_channels", 0),
                   dtype=model.get("dtype", "float32"), rngs=nnx.Rngs(seed))

    def text_embedding(self, text: jax.Array) -> jax.Array:
        """(B, T) ids → (B, E) unit vectors; padding is masked out (an empty caption keeps slot 0)."""
        if text.shape[1] != self.text_len:
            raise ValueError(f"text has {text.shape[1]} slots but clip text_len is {self.text_len}")
        mask = (jnp.asarray(text) != PAD_ID).at[:, 0].set(True)
        x = self.token_embed[...][jnp.clip(text, 0, self.text_vocab - 1)] + self.text_pos[...]
        return self.text_tower(x, mask)

    def image_embedding(self, images_uint8: jax.Array) -> jax.Array:
        """(B, R, R, 3) uint8 (or floats in [0, 1]) images → (B, E) unit vectors."""
        b, h, w, c = images_uint8.shape
        if (h, w, c) != (self.resolution, self.resolution, 3):
            raise ValueError(f"clip takes ({self.resolution}, {self.resolution}, 3) images, got "
                             f"{images_uint8.shape[1:]}")
        x = images_uint8.astype(jnp.float32)
        x = x / 255.0 if images_uint8.dtype == jnp.uint8 else x
        p, x = self.patch, 2 * x - 1
        if self.stem is None:  # (B, R/p, R/p, p·p·3) patches
            x = x.reshape(b, h // p, p, w // p, p, c).transpose(0, 1, 3, 2, 4, 5)
            x = x.reshape(b, h // p, w // p, p * p * c)
        else:  # (B, R/p, R/p, C) feature maps
            for conv in self.stem:
                x = jax.nn.relu(conv(x))
        x = x.astype(jnp.float32).reshape(b, (h // p) * (w // p), -1)
        x = x @ self.patch_embed[...] + self.patch_bias[...]
        return self.image_tower(x + self.image_pos[...])

    def scale(self) -> jax.Array:
        """The inverse temperature exp(logit_scale), capped at 100."""
        return jnp.exp(jnp.minimum(self.logit_scale[...], math.log(100.0)))

    def logits(self, images: jax.Array, text: jax.Array) -> jax.Array:
        """(B_images, B_texts) scaled cosine similarities."""
        return self.scale() * self.image_embedding(images) @ self.text_embedding(text).T

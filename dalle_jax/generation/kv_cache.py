"""Key/value-cached decoding of the DALL·E transformer, one image position at a time.

The text is run once (`prefill`): every layer's keys and values of the text positions go into a
cache of shape (depth, B, L, H, D), L the stream length. Each later position (`decode_step`)
projects its own q, k, v, and attends to the cached keys its layer's static pattern allows: a
numpy table built at trace time lists, for every position and pattern, the earlier positions it
sees (`key_tables`), so a row layer gathers text_len + grid keys, not L. The position always sees
itself, so its own key joins the softmax directly and the cache is written once per step, after
all layers. Numbers match the full forward pass (`DalleTransformer.__call__`) on the same prefix.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from dalle_jax.models.dalle import attention_masks
from dalle_jax.models.dalle.attention_masks import MASKED
from dalle_jax.models.dalle.attention import attend
from dalle_jax.models.dalle.transformer import (DalleTransformer, attention_inputs, block_output,
                                          compute_params, head_logits, layer_norm)


class KeyTables(NamedTuple):
    """For each distinct pattern: `index` (P, L, K) earlier positions each position sees, padded
    with 0; `valid` (P, L, K) which entries are real; `kind` (depth,) the pattern of each layer."""

    index: np.ndarray
    valid: np.ndarray
    kind: np.ndarray


@functools.lru_cache(maxsize=16)
def key_tables(kinds: tuple[str, ...], text_len: int, grid: int, kernel: int) -> KeyTables:
    """The static key lists of `kinds` (one pattern per layer) for a stream of text_len + grid²."""
    distinct = sorted(set(kinds), key=kinds.index)
    masks = [attention_masks.stream_mask(k, text_len, grid, kernel) for k in distinct]
    length = masks[0].shape[0]
    if not all(m[np.arange(length), np.arange(length)].all() for m in masks):
        raise ValueError("every position must see itself for cached decoding")
    earlier = [np.tril(m, -1) for m in masks]
    width = max(1, max(int(e.sum(1).max()) for e in earlier))
    index = np.zeros((len(distinct), length, width), np.int32)
    valid = np.zeros((len(distinct), length, width), bool)
    for p, e in enumerate(earlier):
        for q in range(length):
            keys = np.flatnonzero(e[q])
            index[p, q, :len(keys)] = keys
            valid[p, q, :len(keys)] = True
    kind = np.asarray([distinct.index(k) for k in kinds], np.int32)
    return KeyTables(index, valid, kind)


class Cache(NamedTuple):
    """Keys and values of every layer, (depth, B, L, H, D) each, filled up to the current position."""

    keys: jax.Array
    values: jax.Array


def _tables(model: DalleTransformer) -> KeyTables:
    return key_tables(model.kinds, model.text_len, model.grid, model.conv_kernel)


def image_logits(model: DalleTransformer, x: jax.Array) -> jax.Array:
    """Final LayerNorm and image head on hidden states (..., W) → float32 logits (..., image_vocab)."""
    h = layer_norm(x, model.final_scale[...], model.final_bias[...])
    return head_logits(h, model.image_head[...])


def _layer_params(model: DalleTransformer) -> dict:
    return compute_params(model.layers.stacked(), model.dtype)


def prefill(model: DalleTransformer, text: jax.Array) -> tuple[Cache, jax.Array]:
    """Runs the text (B, T): (cache holding its keys and values, logits (B, V) of image code 0)."""
    b, t = text.shape
    if t != model.text_len:
        raise ValueError(f"text has {t} slots but the model's text_len is {model.text_len}")
    causal = np.tril(np.ones((t, t), bool))  # text → text is causal in every pattern

    def layer(x, p):
        qkv = attention_inputs(p, x)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        return block_output(p, x, attend(q, k, v, causal, impl="dense")), (k, v)

    x = model.embed_text(text).astype(model.dtype)
    x, (keys, values) = jax.lax.scan(layer, x, _layer_params(model))
    pad = ((0, 0), (0, 0), (0, model.length - t), (0, 0), (0, 0))
    return Cache(jnp.pad(keys, pad), jnp.pad(values, pad)), image_logits(model, x[:, -1])


def _attend_one(q, k_self, v_self, keys, values, valid):
    """One query (B, H, D) over its gathered keys (B, K, H, D) where `valid` (K,), plus itself."""
    q = q * (q.shape[-1] ** -0.5)
    scores = jnp.einsum("bhd,bkhd->bhk", q, keys).astype(jnp.float32)
    scores = jnp.where(valid, scores, MASKED)
    own = jnp.sum(q * k_self, axis=-1).astype(jnp.float32)[..., None]  # (B, H, 1)
    weights = jax.nn.softmax(jnp.concatenate([scores, own], axis=-1), axis=-1).astype(q.dtype)
    return jnp.einsum("bhk,bkhd->bhd", weights[..., :-1], values) + weights[..., -1:] * v_self


def decode_step(model: DalleTransformer, cache: Cache, codes: jax.Array,
                index: jax.Array) -> tuple[Cache, jax.Array]:
    """Feeds image code `index` (a traced int, 0 ≤ index < g²) for every row of `codes` (B,):
    (cache with its keys and values written, logits (B, V) of image code index + 1)."""
    tables = _tables(model)
    pos = model.text_len + index
    x = model.embed_image(codes[:, None], index).astype(model.dtype)  # (B, 1, W)

    def layer(x, layer_in):
        p, keys, values, kind = layer_in
        qkv = attention_inputs(p, x)[:, 0]  # (B, 3, H, D)
        q, k, v = qkv[:, 0], qkv[:, 1], qkv[:, 2]
        seen = jnp.asarray(tables.index)[kind, pos]
        a = _attend_one(q, k, v, keys[:, seen], values[:, seen], jnp.asarray(tables.valid)[kind, pos])
        return block_output(p, x, a[:, None]), (k, v)

    x, (k_new, v_new) = jax.lax.scan(
        layer, x, (_layer_params(model), cache.keys, cache.values, jnp.asarray(tables.kind)))
    at = (0, 0, pos, 0, 0)
    cache = Cache(jax.lax.dynamic_update_slice(cache.keys, k_new[:, :, None], at),
                  jax.lax.dynamic_update_slice(cache.values, v_new[:, :, None], at))
    return cache, image_logits(model, x[:, 0])

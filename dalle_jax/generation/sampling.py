"""Sampling image codes from the DALL·E transformer under `jit`, with the key/value cache.

`sample_codes(model, text, rng, settings)` draws all grid² codes of each row of `text` in raster
order. Logits pass through classifier-free guidance (when `guidance` ≠ 1: the batch runs twice,
once with the caption and once with an empty one, and the logits mixed as u + s·(c − u)), then
temperature, then top-k and top-p (nucleus) filtering, then a categorical draw. Image completion
(paper §3) keeps the first `keep` codes of `prefix` and samples only the rest.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from dalle_jax.text_ids import PAD_ID
from dalle_jax.generation import kv_cache
from dalle_jax.models.dalle.attention_masks import MASKED
from dalle_jax.models.dalle.transformer import DalleTransformer


class Settings(NamedTuple):
    """How codes are drawn. top_k 0 and top_p 1 mean no filtering; guidance 1 means none."""

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    guidance: float = 1.0

    def check(self, image_vocab: int) -> "Settings":
        """Itself, or a ValueError naming the first bad value."""
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if not 0 <= self.top_k <= image_vocab:
            raise ValueError(f"top_k must be in [0, {image_vocab}] (0: off), got {self.top_k}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1] (1: off), got {self.top_p}")
        if not self.guidance >= 0:
            raise ValueError(f"guidance must be ≥ 0 (1: off), got {self.guidance}")
        return self


def filter_logits(logits: jax.Array, settings: Settings) -> jax.Array:
    """Temperature, then top-k, then top-p on float32 logits (B, V); dropped entries at −1e30."""
    logits = logits / settings.temperature
    if settings.top_k:
        kth = jax.lax.top_k(logits, settings.top_k)[0][:, -1:]
        logits = jnp.where(logits < kth, MASKED, logits)
    if settings.top_p < 1:
        ordered = jnp.sort(logits, axis=-1)[:, ::-1]
        probs = jax.nn.softmax(ordered, axis=-1)
        before = jnp.cumsum(probs, axis=-1) - probs  # mass of the tokens ranked above each
        kept = jnp.where(before < settings.top_p, ordered, jnp.inf)
        cutoff = jnp.min(kept, axis=-1, keepdims=True)  # the smallest logit still kept
        logits = jnp.where(logits < cutoff, MASKED, logits)
    return logits


def guided(logits: jax.Array, guidance: float) -> jax.Array:
    """Mixes the conditional first half and unconditional second half of (2B, V) logits."""
    cond, uncond = jnp.split(logits, 2)
    return uncond + guidance * (cond - uncond)


def empty_text(text: jax.Array) -> jax.Array:
    """Captions with every slot padding: what training's caption dropout feeds the model."""
    return jnp.full_like(text, PAD_ID)


def _drawer(settings: Settings, rng: jax.Array, prefix: jax.Array, keep):
    """draw(logits, j) → (code j of every row, the logits it came from): guidance, filters, a
    categorical draw from fold_in(rng, j), or the prefix's code where j < keep."""
    use_guidance = settings.guidance != 1

    def draw(logits, j):
        logits = guided(logits, settings.guidance) if use_guidance else logits
        code = jax.random.categorical(jax.random.fold_in(rng, j), filter_logits(logits, settings),
                                      axis=-1)
        return jnp.where(j < keep, prefix[:, j], code).astype(jnp.int32), logits
    return draw


def _prepare(model, text, settings, prefix):
    b, n = text.shape[0], model.grid * model.grid
    if settings.guidance != 1:
        text = jnp.concatenate([text, empty_text(text)])
    prefix = jnp.zeros((b, n), jnp.int32) if prefix is None else prefix.reshape(b, n)
    return text, prefix


def _doubled(code: jax.Array, settings: Settings) -> jax.Array:
    return jnp.concatenate([code, code]) if settings.guidance != 1 else code


def _result(model, codes_nb, raws_nbv, return_logits):
    b = codes_nb.shape[1]
    codes = codes_nb.T.reshape(b, model.grid, model.grid)
    return (codes, raws_nbv.transpose(1, 0, 2)) if return_logits else codes


def sample_codes(model: DalleTransformer, text: jax.Array, rng: jax.Array,
                 settings: Settings = Settings(), prefix: jax.Array | None = None,
                 keep: jax.Array | int = 0, return_logits: bool = False):
    """Codes (B, g, g) sampled for text (B, T), and, if `return_logits`, the raw logits
    (B, g², V) each code was drawn from (guided when guidance ≠ 1, before filtering).

    prefix (B, g, g) and keep: the first `keep` codes in raster order are copied from `prefix`
    instead of sampled (image completion); keep may be traced.
    """
    n = model.grid * model.grid
    text, prefix = _prepare(model, text, settings, prefix)
    draw = _drawer(settings, rng, prefix, keep)
    cache, logits = kv_cache.prefill(model, text)

    def step(carry, j):
        cache, logits = carry
        code, raw = draw(logits, j)
        cache, logits = kv_cache.decode_step(model, cache, _doubled(code, settings), j)
        return (cache, logits), (code, raw if return_logits else None)

    (_, logits), (codes, raws) = jax.lax.scan(step, (cache, logits), jnp.arange(n - 1))
    last, raw = draw(logits, n - 1)
    codes = jnp.concatenate([codes, last[None]])
    return _result(model, codes, jnp.concatenate([raws, raw[None]]) if return_logits else None,
                   return_logits)


def sample_codes_uncached(model: DalleTransformer, text: jax.Array, rng: jax.Array,
                          settings: Settings = Settings(), prefix: jax.Array | None = None,
                          keep: jax.Array | int = 0, return_logits: bool = False):
    """`sample_codes` without the cache: a full forward pass over the whole stream for every code
    (what the peer does by default). The same draws; the reference for tests and benchmarks."""
    b, n = text.shape[0], model.grid * model.grid
    text, prefix = _prepare(model, text, settings, prefix)
    draw = _drawer(settings, rng, prefix, keep)

    def step(codes, j):
        logits = model(text, _doubled(codes.T, settings))[1][:, j]  # codes ≥ j are not seen
        code, raw = draw(logits, j)
        return codes.at[j].set(code), (raw if return_logits else None)

    codes, raws = jax.lax.scan(step, jnp.zeros((n, b), jnp.int32), jnp.arange(n))
    return _result(model, codes, raws, return_logits)

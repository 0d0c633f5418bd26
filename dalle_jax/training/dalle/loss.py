"""The stage-2 objective: cross-entropy of the next token over the [text ; image codes] stream.

Text and image cross-entropies are each averaged over their own token count and then weighted
(paper: 1/8 text, 7/8 image). Text targets are the text tokens after the first (padding included:
each pad is a token of the stream); image targets are all grid² codes.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import optax

from dalle_jax.models.dalle.transformer import DalleTransformer


def dalle_loss(model: DalleTransformer, text: jax.Array, image: jax.Array, *,
               text_weight: float = 1 / 8, image_weight: float = 7 / 8) -> tuple[jax.Array, dict]:
    """(loss, aux) for text ids (B, T) and image codes (B, g, g)."""
    text_logits, image_logits = model(text, image)
    image_targets = image.reshape(image.shape[0], -1)
    text_ce = optax.softmax_cross_entropy_with_integer_labels(text_logits, text[:, 1:]).mean()
    image_ce = optax.softmax_cross_entropy_with_integer_labels(image_logits, image_targets).mean()
    loss = text_weight * text_ce + image_weight * image_ce
    return loss, {
        "text_loss": text_ce,
        "image_loss": image_ce,
        "bits_per_image_token": image_ce / math.log(2),
        "image_accuracy": jnp.mean(_top_scored(image_logits, image_targets)),
    }


def _top_scored(logits: jax.Array, targets: jax.Array) -> jax.Array:
    """Whether each target scores the top logit (argmax's test, but ties count as hits): one max
    and a gather, where XLA's CPU argmax is a slow (value, index) reduction."""
    picked = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
    return picked >= logits.max(-1)

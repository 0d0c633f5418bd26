"""The contrastive objective of the reranker: symmetric InfoNCE, and retrieval accuracy.

Within a batch of B (image, caption) pairs, image i should pick caption i among the B captions and
caption i should pick image i; the loss is the mean of the two cross-entropies. Retrieval counts
a pick as right when the picked caption's tokens equal the true ones (the same caption can belong
to several images of a batch, and choosing any of them is right).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from dalle_jax.models.clip import Clip


def clip_loss(model: Clip, images: jax.Array, text: jax.Array) -> tuple[jax.Array, dict]:
    """(loss, aux) for a batch of uint8 images (B, R, R, 3) and their text ids (B, T)."""
    logits = model.logits(images, text)
    labels = jnp.arange(logits.shape[0])
    image_to_text = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    text_to_image = optax.softmax_cross_entropy_with_integer_labels(logits.T, labels).mean()
    same_text = jnp.all(text[:, None, :] == text[None, :, :], axis=-1)  # (B, B)
    picked_text = jnp.argmax(logits, axis=1)
    picked_image = jnp.argmax(logits, axis=0)
    return (image_to_text + text_to_image) / 2, {
        "image_to_text_loss": image_to_text,
        "text_to_image_loss": text_to_image,
        "image_to_text_accuracy": jnp.mean(same_text[labels, picked_text]),
        "text_to_image_accuracy": jnp.mean(same_text[picked_image, labels]),
        "temperature": jnp.exp(-model.logit_scale[...]),
    }

"""The contrastive objective of the reranker: symmetric InfoNCE, and retrieval accuracy.

Within a batch of B (image, caption) pairs, image i should pick caption i among the B captions and
caption i should pick image i; the loss is the mean of the two cross-entropies. Retrieval counts
a pick as right when the picked caption's tokens equal the true ones (the same caption can belong
to several images of a batch, and choosing any of them is right). Optional hard negative captions
add columns to the image → caption side (NegCLIP, Yuksekgonul et al. 2023), and optional hard
negative images (`data.shapes.negative_images`) add columns to the caption → image side.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from dalle_jax.text_ids import PAD_ID
from dalle_jax.models.dalle.attention_masks import MASKED
from dalle_jax.models.clip import Clip


def clip_loss(model: Clip, images: jax.Array, text: jax.Array,
              negative_text: jax.Array | None = None,
              negative_images: jax.Array | None = None,
              has_negative_image: jax.Array | None = None) -> tuple[jax.Array, dict]:
    """(loss, aux) for a batch of uint8 images (B, R, R, 3) and their text ids (B, T).

    With `negative_text` (B, T), the ids of one hard negative caption per image (all padding where
    there is none), image i also has to rank caption i above the B negatives (NegCLIP's extra
    columns of the image → caption softmax), and `negative_accuracy` is the share of images that
    score their own caption above their own negative.

    With `negative_images` (B, R, R, 3) and `has_negative_image` (B,) bool, caption i also has to
    rank image i above the negative images that exist (extra columns of the caption → image
    softmax), and `negative_image_accuracy` is the share of captions that score their own image
    above their own negative image.

    `in_batch_loss` in aux is the plain symmetric loss over the batch, without the negatives'
    columns, so that runs with and without negatives compare.
    """
    b = images.shape[0]
    if negative_images is None:
        image_e = model.image_embedding(images)
    else:  # one pass of the image tower over both
        both = model.image_embedding(
            jnp.concatenate([images, negative_images.astype(images.dtype)]))
        image_e, negative_image_e = both[:b], both[b:]
    text_e = model.text_embedding(text)
    scale = model.scale()
    logits = scale * image_e @ text_e.T
    labels = jnp.arange(logits.shape[0])
    aux = {}
    if negative_images is None:
        text_logits = logits.T
    else:
        has = jnp.ones((b,), bool) if has_negative_image is None else has_negative_image
        negative_image_logits = scale * text_e @ negative_image_e.T  # (captions, negatives)
        text_logits = jnp.concatenate(
            [logits.T, jnp.where(has[None, :], negative_image_logits, MASKED)], axis=1)
        aux["negative_image_accuracy"] = (
            jnp.sum(jnp.where(has, jnp.diagonal(logits) > jnp.diagonal(negative_image_logits), 0))
            / jnp.maximum(jnp.sum(has), 1))
    text_to_image = optax.softmax_cross_entropy_with_integer_labels(text_logits, labels).mean()
    if negative_text is None:
        image_logits = logits
    else:
        real = jnp.any(negative_text != PAD_ID, axis=-1)  # (B,): has a negative
        negative_logits = scale * image_e @ model.text_embedding(negative_text).T
        image_logits = jnp.concatenate(
            [logits, jnp.where(real[None, :], negative_logits, MASKED)], axis=1)
        own_negative = jnp.diagonal(negative_logits)
        aux["negative_accuracy"] = (jnp.sum(jnp.where(real, jnp.diagonal(logits) > own_negative, 0))
                                    / jnp.maximum(jnp.sum(real), 1))
    image_to_text = optax.softmax_cross_entropy_with_integer_labels(image_logits, labels).mean()
    same_text = jnp.all(text[:, None, :] == text[None, :, :], axis=-1)  # (B, B)
    picked_text = jnp.argmax(logits, axis=1)
    picked_image = jnp.argmax(logits, axis=0)
    in_batch = (optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
                + optax.softmax_cross_entropy_with_integer_labels(logits.T, labels).mean()) / 2
    return (image_to_text + text_to_image) / 2, dict(
        aux,
        in_batch_loss=in_batch,
        image_to_text_loss=image_to_text,
        text_to_image_loss=text_to_image,
        image_to_text_accuracy=jnp.mean(same_text[labels, picked_text]),
        text_to_image_accuracy=jnp.mean(same_text[picked_image, labels]),
        temperature=jnp.exp(-model.logit_scale[...]),
    )

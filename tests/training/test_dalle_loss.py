"""The stage-2 objective against a NumPy reference: each kind's cross-entropy averaged over its
own tokens, then weighted 1/8 text, 7/8 image (paper)."""

import math

import jax.numpy as jnp
import numpy as np
import pytest

from dalle_jax.training.dalle.loss import dalle_loss


def _nll(logits, targets):
    logp = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True)) \
        - logits.max(-1, keepdims=True)
    return -np.take_along_axis(logp, targets[..., None], -1)[..., 0]


def test_the_loss_weighs_each_kinds_own_mean():
    rng = np.random.default_rng(0)
    b, t, g, vt, vi = 2, 9, 2, 7, 11  # 8 text targets, 4 image targets a row
    text = rng.integers(0, vt, (b, t)).astype(np.int32)
    image = rng.integers(0, vi, (b, g, g)).astype(np.int32)
    text_logits = rng.normal(size=(b, t - 1, vt)).astype(np.float32)
    image_logits = rng.normal(size=(b, g * g, vi)).astype(np.float32)

    def model(text_in, image_in):  # the stream's logits, as the transformer returns them
        assert text_in.shape == (b, t) and image_in.shape == (b, g, g)
        return jnp.asarray(text_logits), jnp.asarray(image_logits)

    loss, aux = dalle_loss(model, jnp.asarray(text), jnp.asarray(image))
    text_ce = _nll(text_logits, text[:, 1:]).mean()
    image_ce = _nll(image_logits, image.reshape(b, -1)).mean()
    assert float(aux["text_loss"]) == pytest.approx(text_ce, rel=1e-5)
    assert float(aux["image_loss"]) == pytest.approx(image_ce, rel=1e-5)
    assert float(loss) == pytest.approx(text_ce / 8 + 7 * image_ce / 8, rel=1e-5)
    # Not the mean over all 24 targets, which would weigh text by its share of the stream.
    pooled = np.concatenate([_nll(text_logits, text[:, 1:]).ravel(),
                             _nll(image_logits, image.reshape(b, -1)).ravel()]).mean()
    assert abs(float(loss) - pooled) > 1e-3
    assert float(aux["bits_per_image_token"]) == pytest.approx(image_ce / math.log(2), rel=1e-5)
    even, _ = dalle_loss(model, jnp.asarray(text), jnp.asarray(image), text_weight=0.5,
                         image_weight=0.5)
    assert float(even) == pytest.approx((text_ce + image_ce) / 2, rel=1e-5)
    hits = (np.take_along_axis(image_logits, image.reshape(b, -1)[..., None], -1)[..., 0]
            >= image_logits.max(-1))
    assert float(aux["image_accuracy"]) == pytest.approx(hits.mean())

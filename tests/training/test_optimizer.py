"""The optimizer pieces the stages share: decay masks by name, warm-up into cosine, AdamW."""

import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from dalle_jax.training import optimizer


def _o(**kw):
    base = dict(learning_rate=1e-3, end_learning_rate=1e-5, warmup_steps=10, decay_steps=110,
                b1=0.9, b2=0.96, eps=1e-8, weight_decay=0.1, grad_clip_norm=0.0)
    return ml_collections.ConfigDict({**base, **kw})


def test_decay_mask_marks_parameters_by_their_own_name():
    mask = optimizer.decay_mask(lambda name: name == "kernel")
    params = {"kernel": jnp.ones(2), "block": {"kernel": jnp.ones(2), "bias": jnp.ones(2)}}
    assert mask(params) == {"kernel": True, "block": {"kernel": True, "bias": False}}


def test_warmup_cosine_rises_linearly_then_falls_to_the_end_rate():
    lr = optimizer.warmup_cosine(_o())
    assert float(lr(0)) == 0.0
    assert float(lr(5)) == pytest.approx(5e-4)
    assert float(lr(10)) == pytest.approx(1e-3)
    assert float(lr(60)) == pytest.approx((1e-3 + 1e-5) / 2)  # half-way down the cosine
    assert float(lr(110)) == pytest.approx(1e-5) and float(lr(500)) == pytest.approx(1e-5)
    assert float(optimizer.warmup_cosine(_o(warmup_steps=0))(0)) == pytest.approx(1e-3)


def test_adamw_clips_only_when_asked_and_decays_only_the_masked():
    assert len(optimizer.adamw_parts(_o(), 1e-3)) == 1
    assert len(optimizer.adamw_parts(_o(grad_clip_norm=1.0), 1e-3)) == 2
    params = {"w": jnp.ones(3), "b": jnp.ones(3)}
    tx = optimizer.adamw(_o(), 1e-3, optimizer.decay_mask(lambda name: name == "w"))
    zero = {"w": jnp.zeros(3), "b": jnp.zeros(3)}
    updates, _ = tx.update(zero, tx.init(params), params)  # no gradient: only the decay moves
    np.testing.assert_allclose(updates["w"], -1e-3 * 0.1 * np.ones(3), rtol=1e-6)
    np.testing.assert_array_equal(updates["b"], np.zeros(3))
    big = {"w": jnp.full(3, 100.0), "b": jnp.zeros(3)}
    clipped = optimizer.adamw_parts(_o(grad_clip_norm=1.0), 1e-3)[0]
    got, _ = clipped.update(big, clipped.init(params))
    assert float(optax.global_norm(got)) == pytest.approx(1.0)

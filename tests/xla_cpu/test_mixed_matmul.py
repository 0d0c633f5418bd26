"""mixed_matmul: bfloat16 operands, float32 accumulation, and a custom gradient that matches JAX's."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dalle_jax.xla_cpu import mixed_matmul
from dalle_jax.models.dalle.transformer import project

BF = jnp.bfloat16


def _inputs(m=48, k=32, n=24):
    keys = jax.random.split(jax.random.key(0), 4)
    x = jax.random.normal(keys[0], (m, k)).astype(BF)
    w = 0.1 * jax.random.normal(keys[1], (k, n))
    b = jax.random.normal(keys[2], (n,))
    t = jax.random.normal(keys[3], (m, n))
    return x, w, b, t


def _reference(x, w, b):
    """The same arithmetic written plainly, differentiated by JAX."""
    y = jnp.dot(x, w.astype(BF), preferred_element_type=jnp.float32) + b
    return y.astype(BF)


def _loss(fn, x, w, b, t):
    return jnp.sum(fn(x, w, b).astype(jnp.float32) * t)


def test_forward_and_gradients_match_jax_autodiff():
    x, w, b, t = _inputs()
    out = mixed_matmul.matmul(x, w, b)
    ref = _reference(x, w, b)
    assert out.dtype == BF
    np.testing.assert_array_equal(np.asarray(out, np.float32), np.asarray(ref, np.float32))
    grads = jax.grad(lambda *a: _loss(mixed_matmul.matmul, *a), argnums=(0, 1, 2))(x, w, b, t)
    refs = jax.grad(lambda *a: _loss(_reference, *a), argnums=(0, 1, 2))(x, w, b, t)
    for g, r, like in zip(grads, refs, (x, w, b)):
        assert g.dtype == like.dtype and g.shape == like.shape
        # JAX rounds its weight and bias gradients through bfloat16; ours stay float32.
        np.testing.assert_allclose(np.asarray(g, np.float32), np.asarray(r, np.float32),
                                   rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("k,n", [(32, 24), (24, 32)])  # gᵀ or xᵀ copied: both forms
def test_weight_gradient_is_accumulated_in_float32(k, n):
    x, w, b, t = _inputs(m=512, k=k, n=n)
    g = jax.grad(lambda w: _loss(mixed_matmul.matmul, x, w, b, t))(w)
    exact = np.asarray(x, np.float64).T @ np.asarray(t.astype(BF), np.float64)
    assert g.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(g), exact, rtol=1e-5, atol=1e-4)
    db = jax.grad(lambda b: _loss(mixed_matmul.matmul, x, w, b, t))(b)
    np.testing.assert_allclose(np.asarray(db), np.asarray(t.astype(BF), np.float64).sum(0),
                               rtol=1e-5, atol=1e-4)


def test_float32_output_and_no_bias():
    x, w, _, _ = _inputs()
    out = mixed_matmul.matmul(x, w, out_dtype=jnp.float32)
    assert out.dtype == jnp.float32
    np.testing.assert_allclose(out, np.asarray(x, np.float32) @ np.asarray(w.astype(BF), np.float32),
                               rtol=1e-5, atol=1e-5)
    dw = jax.grad(lambda w: jnp.sum(mixed_matmul.matmul(x, w, out_dtype=jnp.float32)))(w)
    np.testing.assert_allclose(dw, np.broadcast_to(np.asarray(x, np.float32).sum(0)[:, None],
                                                   w.shape), rtol=1e-5, atol=1e-4)


def test_project_picks_the_path_by_dtype():
    x, w, b, _ = _inputs()
    x32 = x.astype(jnp.float32)
    np.testing.assert_allclose(project(x32, w, b), x32 @ w + b, rtol=1e-6)
    low = project(x, w, b)
    assert low.dtype == BF
    np.testing.assert_allclose(np.asarray(low, np.float32), x32 @ w + b, rtol=2e-2, atol=2e-2)


def test_bad_shapes_are_named():
    x, w, b, _ = _inputs()
    with pytest.raises(ValueError, match=r"\(48, 32\) @ \(24, 32\)"):
        mixed_matmul.matmul(x, w.T)
    with pytest.raises(ValueError, match=r"bias must be \(24,\)"):
        mixed_matmul.matmul(x, w, b[:3])


@pytest.mark.parametrize("contract,k_shape,n_shape", [(1, (32,), (3, 4, 8)), (2, (4, 8), (32,))])
def test_the_tpu_and_gpu_form_of_project_equals_the_cpu_form(monkeypatch, contract, k_shape,
                                                              n_shape):
    """Off CPU devices `project` multiplies with the head axes merged (qkv: (W, 3, H·D); out:
    (H·D, W)); its values and gradients are those of the CPU form."""
    from dalle_jax.xla_cpu import switch

    keys = jax.random.split(jax.random.key(1), 4)
    x = jax.random.normal(keys[0], (40, *k_shape))
    w = 0.1 * jax.random.normal(keys[1], (*k_shape, *n_shape))
    b = jax.random.normal(keys[2], n_shape)
    t = jax.random.normal(keys[3], (40, *n_shape))

    def loss(x, w, b):
        return jnp.sum(switch.project(x, w, b, contract=contract) * t)

    cpu = jax.value_and_grad(loss, argnums=(0, 1, 2))(x, w, b)
    monkeypatch.setattr(switch, "active", lambda: False)
    other = jax.value_and_grad(loss, argnums=(0, 1, 2))(x, w, b)
    for a, c in zip(jax.tree.leaves(other), jax.tree.leaves(cpu)):
        assert a.shape == c.shape
        np.testing.assert_allclose(a, c, rtol=1e-5, atol=1e-5)

"""gelu: float32 arithmetic inside, jax.nn.gelu's values and derivatives."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dalle_jax.models.dalle.gelu import gelu


def test_float32_matches_jax_nn_gelu_and_its_derivative():
    x = jnp.linspace(-6, 6, 1001, dtype=jnp.float32)
    np.testing.assert_allclose(gelu(x), jax.nn.gelu(x, approximate=True), rtol=1e-6, atol=1e-6)
    g = jax.grad(lambda x: jnp.sum(gelu(x) * jnp.cos(x)))(x)
    want = jax.grad(lambda x: jnp.sum(jax.nn.gelu(x, approximate=True) * jnp.cos(x)))(x)
    np.testing.assert_allclose(g, want, rtol=1e-5, atol=1e-5)


def test_bfloat16_is_the_float32_result_rounded_once():
    # Within one bfloat16 rounding (relative 2⁻⁸) of the float32 values; JAX's own bfloat16
    # derivative rounds each intermediate and strays further.
    x = jnp.linspace(-6, 6, 1001, dtype=jnp.bfloat16)
    y = gelu(x)
    assert y.dtype == jnp.bfloat16
    exact = jax.nn.gelu(x.astype(jnp.float32), approximate=True)
    np.testing.assert_allclose(np.float32(y), exact, rtol=2 ** -8, atol=1e-6)
    g = jax.grad(lambda x: jnp.sum(gelu(x).astype(jnp.float32)))(x)
    assert g.dtype == jnp.bfloat16
    slope = jax.vmap(jax.grad(lambda v: jax.nn.gelu(v, approximate=True)))(x.astype(jnp.float32))
    np.testing.assert_allclose(np.float32(g), slope, rtol=2 ** -8, atol=1e-6)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_under_jit_and_remat(dtype):
    x = jnp.linspace(-3, 3, 64, dtype=dtype)
    f = jax.jit(jax.grad(jax.checkpoint(lambda x: jnp.sum(gelu(x).astype(jnp.float32) ** 2))))
    g = jax.grad(lambda x: jnp.sum(gelu(x).astype(jnp.float32) ** 2))(x)
    np.testing.assert_allclose(np.float32(f(x)), np.float32(g), rtol=1e-5, atol=1e-6)

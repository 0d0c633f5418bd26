"""GELU (the tanh approximation, as `jax.nn.gelu`) computed in float32 whatever the input dtype,
with a hand-written derivative.

gelu(x) = ½·x·(1 + tanh(u)), u = √(2/π)·(x + 0.044715·x³);
gelu'(x) = ½·(1 + t) + ½·x·(1 − t²)·√(2/π)·(1 + 3·0.044715·x²), t = tanh(u).

Differentiating `jax.nn.gelu` on bfloat16 rounds every intermediate of the derivative to
bfloat16, and XLA's CPU backend, which computes bfloat16 element-wise work in float32, then
converts back and forth at each of them (31 conversions in one fused loop at the `long` stream of
experiments/dalle_speed). Here the input is widened once, the value or derivative is computed in
float32 and rounded once. The only residual is the input itself, so under `transformer.REMAT`
the saved MLP pre-activation serves both the value and the derivative.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

_C = float(np.sqrt(2.0 / np.pi))
_A = 0.044715


def _tanh_u(x32: jax.Array) -> jax.Array:
    return jnp.tanh(_C * (x32 + _A * x32 * x32 * x32))


@jax.custom_vjp
def gelu(x: jax.Array) -> jax.Array:
    """GELU (tanh approximation) of x, computed in float32, returned in x's dtype."""
    x32 = x.astype(jnp.float32)
    return (0.5 * x32 * (1.0 + _tanh_u(x32))).astype(x.dtype)


def _gelu_fwd(x):
    return gelu(x), x


def _gelu_bwd(x, g):
    x32 = x.astype(jnp.float32)
    t = _tanh_u(x32)
    slope = 0.5 * (1.0 + t) + 0.5 * x32 * (1.0 - t * t) * _C * (1.0 + 3.0 * _A * x32 * x32)
    return ((g.astype(jnp.float32) * slope).astype(x.dtype),)


gelu.defvjp(_gelu_fwd, _gelu_bwd)

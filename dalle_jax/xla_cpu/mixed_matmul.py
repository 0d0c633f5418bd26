"""Mixed-precision matmul: bfloat16 operands, float32 accumulation, float32 weight gradients.

`matmul(x, w)` multiplies rows `x` (M, K) in bfloat16 by a float32 weight `w` (K, N) rounded to
bfloat16, accumulating in float32 and returning `out_dtype`. Its custom gradient keeps every
matmul in the same form, bfloat16 in and float32 accumulated:

- dx = g · wᵀ (rounded to x's dtype),
- dw = xᵀ · g in float32, so the optimizer sees an unrounded weight gradient; it contracts a
  transposed copy of the narrower of x and g.

The reason for the custom rule is speed on CPUs with bfloat16 matrix units (AMX): XLA's CPU
backend hands a bfloat16 dot with a float32 result to its fast kernel only when the contraction
runs along the operands' minor dimension or the lhs' rows. JAX's own transpose of `x @ w`
produces bfloat16-result dots, and a weight gradient that contracts the leading (row) axis of
both operands; both fall back to converting the operands to float32. Here dw contracts an
explicitly transposed copy of x (or g), and every dot asks for a float32 result. On accelerators the
same code is an ordinary mixed-precision matmul (experiments/dalle_speed gives the CPU figures).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

_LOW = jnp.bfloat16


def _dot(a: jax.Array, b: jax.Array, contract: tuple[int, int]) -> jax.Array:
    """2-D dot of bfloat16 operands contracting a's axis contract[0] with b's contract[1], f32."""
    dims = (((contract[0],), (contract[1],)), ((), ()))
    return jax.lax.dot_general(a.astype(_LOW), b.astype(_LOW), dims,
                               preferred_element_type=jnp.float32)


def _rows_product(a: jax.Array, b: jax.Array) -> jax.Array:
    """aᵀ · b in float32 for a (M, P) and b (M, Q), from a transposed copy of a."""
    at = jnp.swapaxes(a.astype(_LOW)[None], 1, 2)  # (1, P, M), materialised by XLA
    return jnp.einsum("cpm,cmq->pq", at, b.astype(_LOW)[None], preferred_element_type=jnp.float32)


def _weight_grad(x: jax.Array, g: jax.Array) -> jax.Array:
    """xᵀ · g (K, N) in float32 for x (M, K) and g (M, N), from a transposed copy of the narrower
    of the two: (gᵀ · x)ᵀ when N < K (the MLP's output projection, whose x is four times wider
    than g), which copies a quarter of the bytes."""
    if g.shape[1] < x.shape[1]:
        # The barrier keeps XLA from folding the final transpose into the dot's output layout,
        # a form its CPU backend hands to a slow generic kernel.
        return jax.lax.optimization_barrier(_rows_product(g, x)).T
    return _rows_product(x, g)


@jax.custom_vjp
def _affine(x: jax.Array, w: jax.Array, b: jax.Array) -> jax.Array:
    return _dot(x, w, (1, 0)) + b


def _affine_fwd(x, w, b):
    return _affine(x, w, b), (x, w, b)


def _affine_bwd(res, g):
    x, w, b = res
    dx = _dot(g, w, (1, 1)).astype(x.dtype)
    # A float32 column sum, which XLA's CPU backend runs as one fused reduction (a product with a
    # row of ones became a float32 matrix-vector product after a converted copy of g).
    db = jnp.sum(g.astype(jnp.float32), axis=0)
    return dx, _weight_grad(x, g).astype(w.dtype), db.astype(b.dtype)


_affine.defvjp(_affine_fwd, _affine_bwd)


def matmul(x: jax.Array, w: jax.Array, bias: jax.Array | None = None,
           out_dtype=None) -> jax.Array:
    """x (M, K) @ w (K, N) (+ bias (N,)) with bfloat16 operands and float32 accumulation, as
    `out_dtype` (default x's dtype). The gradients of w and bias have their dtypes and are
    accumulated in float32."""
    if x.ndim != 2 or w.ndim != 2 or x.shape[1] != w.shape[0]:
        raise ValueError(f"matmul needs (M, K) @ (K, N), got {x.shape} @ {w.shape}")
    if bias is None:
        bias = jnp.zeros((w.shape[1],), jnp.float32)  # its gradient is computed and dropped
    elif bias.shape != (w.shape[1],):
        raise ValueError(f"bias must be ({w.shape[1]},), got {bias.shape}")
    return _affine(x, w, bias).astype(out_dtype or x.dtype)

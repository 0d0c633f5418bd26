"""The softmax core of `blocksparse` attention, with a hand-written backward pass.

`band_attention(q, k_band, v_band, tiles, k_prefix, v_prefix)` computes, for query blocks q
(B, H, n, b, D), one softmax over the prefix keys (B, H, G, D), which every query sees, and the
block's band keys (B, H, n, K, D) where the static mask `tiles` (n, b, K) allows them, and returns
the weighted sum of the values. Its backward pass follows FlashAttention-2 (Dao 2023): the forward
pass keeps only the output O and each query's log-sum-exp; the backward pass recomputes the scores,
forms the weights P = exp(S − lse) directly, and uses dS = P ∘ (dP − rowsum(dO ∘ O)), which
replaces the softmax's reduction over the (queries × keys) array by one over (queries × D).

O and the log-sum-exp carry the checkpoint names `attention_out` and `attention_lse`. The forward
runs on inputs cut from the gradient, and a custom VJP reattaches it, so that a remat policy that
saves those two names (`transformer.REMAT['dots']`) never reruns the forward pass: the backward
pass needs only q, k, v, O and the log-sum-exp. (A name inside a custom VJP's own forward rule is
invisible to the policy.) On a CPU, where attention is bound by passes over the
(queries × keys) arrays rather than by FLOPs, each pass saved counts.

On CPU devices (`xla_cpu.switch`, decided once in the forward pass and handed to the backward
rule, which JAX traces later, outside the step's mesh) some products multiply materialised
transposed copies, the forms XLA's CPU backend runs fast; elsewhere they are plain einsums.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.ad_checkpoint import checkpoint_name

from dalle_jax.xla_cpu import switch
from dalle_jax.models.dalle.attention_masks import MASKED

_F32 = jnp.float32


def band_attention(q: jax.Array, k_band: jax.Array, v_band: jax.Array, tiles: np.ndarray,
                   k_prefix: jax.Array | None = None,
                   v_prefix: jax.Array | None = None) -> jax.Array:
    """(B, H, n, b, D) attention output; q is expected scaled by 1/√D already."""
    if k_prefix is None:
        shape = q.shape[:2] + (0, q.shape[-1])
        k_prefix = v_prefix = jnp.zeros(shape, q.dtype)
    key, inputs = (tiles.tobytes(), tiles.shape, switch.active()), (q, k_band, v_band, k_prefix,
                                                                     v_prefix)
    out, lse = _forward(key, *(jax.lax.stop_gradient(x) for x in inputs))
    # Named so that a remat policy can keep them (`transformer.REMAT`): the backward pass then
    # needs no rerun of the forward, only the scores, which it recomputes itself.
    out = switch.checkpoint_name(out, "attention_out", differentiable=False)
    lse = checkpoint_name(lse, "attention_lse")
    return _with_gradient(key, *inputs, out, lse)


def _tiles(key: tuple) -> np.ndarray:
    """The static mask of `key` = (its bytes, its shape, whether on CPU devices)."""
    return np.frombuffer(key[0], dtype=bool).reshape(key[1])


def _mm(spec: str, a: jax.Array, b: jax.Array) -> jax.Array:
    """einsum accumulating (and returning) float32, whatever the operands' dtype."""
    return jnp.einsum(spec, a, b, preferred_element_type=_F32)


def _rows(x):  # (B, H, n, b, ...) → (B, H, n·b, ...): the prefix part as one matmul per head
    return x.reshape(x.shape[:2] + (-1,) + x.shape[4:])


def _query_contraction(a: jax.Array, b: jax.Array, cpu: bool) -> jax.Array:
    """aᵀ·b over the query axis, float32: a (..., q, k), b (..., q, d) → (..., k, d).

    In bfloat16 it multiplies a transposed copy of a. XLA's CPU backend runs a product that
    contracts the leading axis of both operands on its generic kernel, after float32 copies of
    both, which is slower than the plain product of the copy (experiments/dalle_speed). XLA
    writes that copy in float32 and multiplies in float32 (it keeps a bfloat16 product only when
    no operand is a transpose), which still beats the generic kernel. In float32 that kernel takes
    the operands as they are and is the faster form. Off the CPU: the plain product.
    """
    if a.dtype != jnp.bfloat16 or not cpu:
        return _mm("...qk,...qd->...kd", a, b)
    return _mm("...kq,...qd->...kd", switch.transposed_copy(a, cpu), b)


def _band_scores(q: jax.Array, kb: jax.Array, cpu: bool) -> jax.Array:
    """q · kbᵀ for each query block and its band keys, float32: (B, H, n, b, K).

    In float32 it multiplies a transposed copy of the keys: XLA's CPU backend (its YNNPACK
    fusions) runs these many small products three to four times slower when the rhs is
    contracted along its last axis, more than the copy costs. In bfloat16 the difference is
    smaller than the copy. Off the CPU: the plain product."""
    if q.dtype == jnp.bfloat16 or not cpu:
        return _mm("bhnqd,bhnkd->bhnqk", q, kb)
    return _mm("bhnqd,bhndk->bhnqk", q, switch.transposed_copy(kb, cpu))


def _forward(key, q, kb, vb, kp, vp):
    """(output, log-sum-exp (B, H, n, b, 1) of each query's scores)."""
    sb = jnp.where(_tiles(key), _band_scores(q, kb, key[2]), MASKED)
    top = sb.max(-1, keepdims=True)
    if kp.shape[2]:
        sp = _mm("bhqd,bhkd->bhqk", _rows(q), kp).reshape(q.shape[:4] + (kp.shape[2],))
        top = jnp.maximum(top, sp.max(-1, keepdims=True))
        ep = jnp.exp(sp - top)
        total = ep.sum(-1, keepdims=True)
    else:
        ep, total = None, 0.0
    eb = jnp.exp(sb - top)
    total = total + eb.sum(-1, keepdims=True)
    out = _mm("bhnqk,bhnkd->bhnqd", eb.astype(vb.dtype), vb)
    if ep is not None:
        out = out + _mm("bhqk,bhkd->bhqd", _rows(ep).astype(vp.dtype), vp).reshape(out.shape)
    return (out / total).astype(q.dtype), top + jnp.log(total)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _with_gradient(key, q, kb, vb, kp, vp, out, lse):
    """`out`, carrying the attention's gradient with respect to q, kb, vb, kp and vp."""
    del key, q, kb, vb, kp, vp, lse
    return out


def _with_gradient_fwd(key, q, kb, vb, kp, vp, out, lse):
    return out, (q, kb, vb, kp, vp, out, lse)


def _with_gradient_bwd(key, residuals, d_out):
    q, kb, vb, kp, vp, out, lse = residuals
    cpu = key[2]
    d_out32 = d_out.astype(_F32)
    row = jnp.sum(d_out32 * out.astype(_F32), -1, keepdims=True)  # rowsum(dO ∘ O) = rowsum(dP ∘ P)
    do = d_out.astype(vb.dtype)

    def weights(scores):  # P = exp(S − lse), normalised, from the recomputed scores
        return jnp.exp(scores - lse)

    def score_grad(p, dp):
        return (p * (dp - row)).astype(q.dtype)

    pb = weights(jnp.where(_tiles(key), _band_scores(q, kb, cpu), MASKED))
    dvb = _query_contraction(pb.astype(vb.dtype), do, cpu).astype(vb.dtype)
    dsb = score_grad(pb, _band_scores(do, vb, cpu))
    dq = _mm("bhnqk,bhnkd->bhnqd", dsb, kb)
    dkb = _query_contraction(dsb, q, cpu).astype(kb.dtype)
    if kp.shape[2]:
        g = kp.shape[2]
        pp = weights(_mm("bhqd,bhkd->bhqk", _rows(q), kp).reshape(q.shape[:4] + (g,)))
        dvp = _query_contraction(_rows(pp).astype(vp.dtype), _rows(do), cpu).astype(vp.dtype)
        dp = _mm("bhqd,bhkd->bhqk", _rows(do), vp)
        dsp = score_grad(pp, dp.reshape(q.shape[:4] + (g,)))
        dq = dq + _mm("bhqk,bhkd->bhqd", _rows(dsp), kp).reshape(dq.shape)
        dkp = _query_contraction(_rows(dsp), _rows(q), cpu).astype(kp.dtype)
    else:
        dvp, dkp = jnp.zeros_like(vp), jnp.zeros_like(kp)
    return (dq.astype(q.dtype), dkb, dvb, dkp, dvp, jnp.zeros_like(out), jnp.zeros_like(lse))


_with_gradient.defvjp(_with_gradient_fwd, _with_gradient_bwd)

"""The softmax core of `blocksparse` attention, with a hand-written backward pass.

`band_attention(q, k_band, v_band, tiles, k_prefix, v_prefix)` computes, for query blocks q
(B, H, n, b, D), one softmax over the prefix keys (B, H, G, D), which every query sees, and the
block's band keys (B, H, n, K, D) where the static mask `tiles` (n, b, K) allows them, and returns
the weighted sum of the values. Its backward pass follows FlashAttention (Dao et al. 2022): with
P the weights and O the output, dS = P ∘ (dP − rowsum(dO ∘ O)), which replaces the softmax's
reduction over the (queries × keys) array by one over (queries × D). The unnormalised weights
are kept from the forward pass, so no score is computed twice. On a CPU, where attention is bound
by passes over those arrays rather than by FLOPs, this is what makes the op fast.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from dalle_jax.models.attention_masks import MASKED

_F32 = jnp.float32


def band_attention(q: jax.Array, k_band: jax.Array, v_band: jax.Array, tiles: np.ndarray,
                   k_prefix: jax.Array | None = None,
                   v_prefix: jax.Array | None = None) -> jax.Array:
    """(B, H, n, b, D) attention output; q is expected scaled by 1/√D already."""
    if k_prefix is None:
        shape = q.shape[:2] + (0, q.shape[-1])
        k_prefix = v_prefix = jnp.zeros(shape, q.dtype)
    return _attention(tiles.tobytes(), tiles.shape, q, k_band, v_band, k_prefix, v_prefix)


def _tiles(key: bytes, shape: tuple) -> np.ndarray:
    return np.frombuffer(key, dtype=bool).reshape(shape)


def _mm(spec: str, a: jax.Array, b: jax.Array) -> jax.Array:
    """einsum accumulating (and returning) float32, whatever the operands' dtype."""
    return jnp.einsum(spec, a, b, preferred_element_type=_F32)


def _rows(x):  # (B, H, n, b, ...) → (B, H, n·b, ...): the prefix part as one matmul per head
    return x.reshape(x.shape[:2] + (-1,) + x.shape[4:])


def _forward(key, shape, q, kb, vb, kp, vp):
    sb = jnp.where(_tiles(key, shape), _mm("bhnqd,bhnkd->bhnqk", q, kb), MASKED)
    top = sb.max(-1, keepdims=True)
    if kp.shape[2]:
        sp = _mm("bhqd,bhkd->bhqk", _rows(q), kp).reshape(
            q.shape[:4] + (kp.shape[2],))
        top = jnp.maximum(top, sp.max(-1, keepdims=True))
        ep = jnp.exp(sp - top)
        total = ep.sum(-1, keepdims=True)
    else:
        ep, total = None, 0.0
    eb = jnp.exp(sb - top)
    total = total + eb.sum(-1, keepdims=True)
    out = _mm("bhnqk,bhnkd->bhnqd", eb.astype(vb.dtype), vb)
    if ep is not None:
        out = out + _mm("bhqk,bhkd->bhqd", _rows(ep).astype(vp.dtype), vp).reshape(
            out.shape)
    return (out / total).astype(q.dtype), (eb, ep, total)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _attention(key, shape, q, kb, vb, kp, vp):
    return _forward(key, shape, q, kb, vb, kp, vp)[0]


def _attention_fwd(key, shape, q, kb, vb, kp, vp):
    out, (eb, ep, total) = _forward(key, shape, q, kb, vb, kp, vp)
    return out, (q, kb, vb, kp, vp, out, eb, ep, total)


def _attention_bwd(key, shape, residuals, d_out):
    q, kb, vb, kp, vp, out, eb, ep, total = residuals
    d_out32 = d_out.astype(_F32)
    row = jnp.sum(d_out32 * out.astype(_F32), -1, keepdims=True)  # rowsum(dO ∘ O) = rowsum(dP ∘ P)
    # P = e / total is never formed: dV = eᵀ (dO / total) and dS = e ∘ (dP − row) / total, so
    # each (queries × keys) array is written once per pass instead of twice.
    scaled = (d_out32 / total).astype(vb.dtype)

    def score_grad(e, dp):
        return (e * (dp.astype(_F32) - row) / total).astype(q.dtype)

    dvb = _mm("bhnqk,bhnqd->bhnkd", eb.astype(vb.dtype), scaled).astype(vb.dtype)
    dsb = score_grad(eb, _mm("bhnqd,bhnkd->bhnqk", d_out.astype(vb.dtype), vb))
    dq = _mm("bhnqk,bhnkd->bhnqd", dsb, kb)
    dkb = _mm("bhnqk,bhnqd->bhnkd", dsb, q).astype(kb.dtype)
    if ep is not None:
        g = kp.shape[2]
        dvp = _mm("bhqk,bhqd->bhkd", _rows(ep).astype(vp.dtype), _rows(scaled)).astype(vp.dtype)
        dp = _mm("bhqd,bhkd->bhqk", _rows(d_out).astype(vp.dtype), vp)
        dsp = score_grad(ep, dp.reshape(q.shape[:4] + (g,)))
        dq = dq + _mm("bhqk,bhkd->bhqd", _rows(dsp), kp).reshape(dq.shape)
        dkp = _mm("bhqk,bhqd->bhkd", _rows(dsp), _rows(q)).astype(kp.dtype)
    else:
        dvp, dkp = jnp.zeros_like(vp), jnp.zeros_like(kp)
    return dq.astype(q.dtype), dkb, dvb, dkp, dvp


_attention.defvjp(_attention_fwd, _attention_bwd)

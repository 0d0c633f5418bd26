"""The band attention's products in the operand layouts XLA's CPU backend runs fast, read from
the compiled gradient's HLO (a speed guard for the CPU backend, not a statement about values)."""

import re

import jax
import jax.numpy as jnp
import numpy as np

from dalle_jax.models.dalle.band_attention import band_attention


def _contracted_axes(hlo: str) -> list[tuple[bool, bool]]:
    """For each dot in compiled HLO text: whether its lhs, and its rhs, is contracted along its
    last axis."""
    shapes = dict(re.findall(r"%([\w.\-]+) = \w+\[([\d,]*)\]", hlo))
    found = re.findall(r"dot\(%([\w.\-]+), %([\w.\-]+)\), .*?lhs_contracting_dims=\{(\d+)\}"
                       r".*?rhs_contracting_dims=\{(\d+)\}", hlo)
    return [tuple(int(axis) == len(shapes[x].split(",")) - 1 for x, axis in ((a, i), (b, j)))
            for a, b, i, j in found]


def _band_attention_gradient_hlo(dtype, prefix: int) -> str:
    b, h, n, blk, d = 2, 2, 3, 4, 8
    keys = jax.random.split(jax.random.key(4), 5)
    q, kp, vp = (jax.random.normal(k, s, dtype) for k, s in zip(
        keys[:3], [(b, h, n, blk, d), (b, h, prefix, d), (b, h, prefix, d)]))
    kb, vb = (jax.random.normal(k, (b, h, n, 2 * blk, d), dtype) for k in keys[3:])
    tiles = np.tile(np.tril(np.ones((blk, 2 * blk), bool), blk), (n, 1, 1))

    def loss(*args):
        return jnp.sum(band_attention(args[0], args[1], args[2], tiles, args[3],
                                      args[4]).astype(jnp.float32) ** 2)

    grad = jax.jit(jax.grad(loss, argnums=tuple(range(5))))
    return grad.lower(q, kb, vb, kp, vp).compile().as_text()


def test_band_attention_products_take_the_operand_layouts_xla_runs_fast():
    """Layouts chosen for XLA's CPU backend (`band_attention._query_contraction`,
    `_band_scores`). In bfloat16 no product contracts its lhs along a leading axis (the key and
    value gradients multiply transposed copies), a form XLA runs on a slow generic kernel after
    float32 copies. In float32 the band's products never contract the rhs along its last axis
    (the scores multiply transposed keys), a form XLA's small batched products run slowly."""
    low = _contracted_axes(_band_attention_gradient_hlo(jnp.bfloat16, prefix=5))
    assert len(low) >= 8 and all(lhs_last for lhs_last, _ in low), low
    full = _contracted_axes(_band_attention_gradient_hlo(jnp.float32, prefix=0))
    assert len(full) >= 6 and not any(rhs_last for _, rhs_last in full), full

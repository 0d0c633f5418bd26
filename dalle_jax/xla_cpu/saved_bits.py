"""Checkpoint names whose bfloat16 values a remat policy keeps as their raw bits.

`name(x, "qkv")` is `checkpoint_name(x, "qkv")`, except that a bfloat16 `x` is named as its bit
pattern (uint16) and read back from it, with an identity derivative. The values are the same;
what changes is what XLA's CPU backend sees in the scan that stacks a layer's saved values for the
backward pass. With bfloat16 stacks it converts each whole stack to float32 before the backward
loop (the convert hoisted out of the loop: a second, float32 copy of every saved array, and a
pass over it per step); with integer stacks it has no convert to hoist, and each layer's slice is
read where it is used. Other dtypes are named as they are.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.ad_checkpoint import checkpoint_name


def name(x: jax.Array, label: str, *, differentiable: bool = True) -> jax.Array:
    """x under the checkpoint name `label`, kept as raw bits when it is bfloat16.

    A value that no gradient flows through (`differentiable=False`, e.g. one computed from
    `stop_gradient` inputs) must say so: it gets no tangent, so the custom derivative that hides
    the bits from autodiff would never be traced where the remat policy can see the name.
    """
    if x.dtype != jnp.bfloat16:
        return checkpoint_name(x, label)
    return _through_bits(x, label) if differentiable else _named_bits(x, label)


def _named_bits(x: jax.Array, label: str) -> jax.Array:
    bits = checkpoint_name(jax.lax.bitcast_convert_type(x, jnp.uint16), label)
    return jax.lax.bitcast_convert_type(bits, jnp.bfloat16)


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def _through_bits(x, label):
    return _named_bits(x, label)


@_through_bits.defjvp
def _through_bits_jvp(label, primals, tangents):
    # The primal is traced here, outside the custom_jvp, so that the remat policy sees the name.
    return _named_bits(primals[0], label), tangents[0]

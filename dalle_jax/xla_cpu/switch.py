"""Whether a traced computation targets CPU devices, and the three operations that differ if so.

The target follows the devices of the mesh in `partitioning.activation_sharding` (what every
train, eval and sample step traces under), so a step compiled here for a TPU topology
(`bench compile`) takes the TPU forms although the process runs on a CPU. Outside any mesh the
default backend decides.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax.ad_checkpoint import checkpoint_name as _plain_name

from dalle_jax.parallel import partitioning
from dalle_jax.xla_cpu import mixed_matmul, saved_bits


def target_platform() -> str:
    """'cpu', 'tpu', 'gpu', …: the platform of the current mesh's devices (else the default
    backend's)."""
    mesh = partitioning.current_mesh()
    if mesh is not None:
        return mesh.devices.flat[0].platform
    return jax.default_backend()


def active() -> bool:
    """True when the computation being traced runs on CPU devices."""
    return target_platform() == "cpu"


def project(x: jax.Array, w: jax.Array, bias: jax.Array | None = None, out_dtype=None, *,
            contract: int = 1) -> jax.Array:
    """Rows x (M, *K) times a weight w (*K, *N), contracting the `contract` axes K, plus `bias`
    (*N): (M, *N) as `out_dtype` (default x's dtype), accumulated in float32. w and bias may be
    float32 while x is bfloat16: they are rounded to x's dtype.

    Off the CPU this is one `dot_general` on the weight as it is stored, so a weight split over
    its head axis (`(W, 3, H, D)` over `tensor`) is multiplied shard by shard, never gathered.
    On CPU devices the product is a 2-D matmul of flattened operands (XLA's CPU backend
    differentiates those much faster than multi-axis contractions), through `mixed_matmul` for a
    bfloat16 x."""
    k_shape, n_shape = w.shape[:contract], w.shape[contract:]
    if x.shape[1:] != k_shape:
        raise ValueError(f"project: rows {x.shape} do not match the weight's {contract} leading "
                         f"axes {w.shape}")
    if active():
        x2 = x.reshape(x.shape[0], -1)
        w2 = w.reshape(x2.shape[1], -1)
        b2 = None if bias is None else bias.reshape(-1)
        if x.dtype == jnp.bfloat16:
            y = mixed_matmul.matmul(x2, w2, b2, out_dtype)
        else:
            y = x2 @ w2.astype(x.dtype)
            y = (y if b2 is None else y + b2.astype(x.dtype)).astype(out_dtype or x.dtype)
        return y.reshape(x.shape[:1] + n_shape)
    # The head axes travel merged, (H, D) as one axis H·D: with D = 64 alone as the minor axis,
    # XLA's TPU layouts put the width minor instead, and it then all-reduces the weight's
    # gradient at full size where a merged axis lets it reduce-scatter it over `fsdp`. H stays
    # the major part of H·D, so a split of H over `tensor` carries over unchanged.
    k = math.prod(k_shape)
    n_view = n_shape if len(n_shape) < 2 else (n_shape[0], math.prod(n_shape[1:]))
    y = jax.lax.dot_general(x.reshape(x.shape[0], k), w.astype(x.dtype).reshape(k, *n_view),
                            (((1,), (0,)), ((), ())), preferred_element_type=jnp.float32)
    y = y.reshape(x.shape[:1] + n_shape)
    if bias is not None:
        y = y + bias.astype(jnp.float32)
    return y.astype(out_dtype or x.dtype)


def checkpoint_name(x: jax.Array, label: str, *, differentiable: bool = True) -> jax.Array:
    """`x` under the remat name `label`: as raw bits on CPU devices (`saved_bits`), a plain
    `checkpoint_name` elsewhere."""
    if active():
        return saved_bits.name(x, label, differentiable=differentiable)
    return _plain_name(x, label)


def transposed_copy(x: jax.Array, cpu: bool | None = None) -> jax.Array:
    """`x` with its last two axes swapped. On CPU devices (`cpu`, default `active()`; a custom
    backward rule passes what its forward pass saw, since JAX traces it outside the step's mesh)
    the copy is materialised: an optimization barrier keeps XLA from folding it back into the
    product that reads it, a form its CPU backend runs slowly. Elsewhere it is a plain transpose,
    which the compiler may fold."""
    swapped = jnp.swapaxes(x, -1, -2)
    return jax.lax.optimization_barrier(swapped) if (active() if cpu is None else cpu) else swapped

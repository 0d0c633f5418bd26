"""Checksums of a train state's arrays, written with each checkpoint and checked on restore.

Each array's checksum is two sums of its raw bits (as unsigned 32-bit words) modulo 2³², one
weighted by position (2i + 1) and one by a second odd sequence: any change of one element
changes the first (odd weights are invertible modulo 2³²), and a swap of two changes it too. The
sums run on the devices that hold the array, as one jitted reduction over the sharded arrays, so
every host of a pod gets the same figures without reading arrays it does not hold. They guard
against damaged storage (flipped or zeroed bytes), not against tampering.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

_WIDE = {1: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32}


def _words(x: jax.Array) -> jax.Array:
    """x's raw bits as a flat uint32 vector (8-byte elements as two words each)."""
    size = jnp.dtype(x.dtype).itemsize
    if x.dtype == jnp.bool_:
        return x.reshape(-1).astype(jnp.uint32)
    if size == 8:
        return jax.lax.bitcast_convert_type(x, jnp.uint32).reshape(-1)
    return jax.lax.bitcast_convert_type(x, _WIDE[size]).reshape(-1).astype(jnp.uint32)


def _sums(x: jax.Array) -> jax.Array:
    words = _words(x)
    i = jnp.arange(words.shape[0], dtype=jnp.uint32)
    first = jnp.sum(words * (2 * i + 1), dtype=jnp.uint32)
    second = jnp.sum((words ^ (i * jnp.uint32(0x9E3779B9))) * (4 * i + 3), dtype=jnp.uint32)
    return jnp.stack([first, second])


@jax.jit
def _all_sums(leaves: list) -> list:
    return [_sums(x) for x in leaves]


def of(tree) -> dict[str, list[int]]:
    """{'path/to/leaf': [sum, sum]} of every array leaf of `tree`."""
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    names = [jax.tree_util.keystr(path, simple=True, separator="/") for path, _ in flat]
    leaves = [jnp.asarray(x) if isinstance(x, np.ndarray) else x for _, x in flat]
    sums = jax.device_get(_all_sums(leaves)) if leaves else []
    return {name: [int(v) for v in np.asarray(s)] for name, s in zip(names, sums)}


def mismatches(tree, expected: dict[str, list[int]]) -> list[str]:
    """The leaves of `tree` whose checksum differs from `expected` (leaves `expected` does not
    name are not checked, so a partial restore checks what it read)."""
    got = of(tree)
    return sorted(name for name, sums in got.items()
                  if name in expected and list(expected[name]) != sums)

"""Logical axis names → mesh shardings, by a rules table kept in the config.

Models name the axes of their parameters (`conv_out`, `vocab`, `embed`, …) and of their main
activations (`batch`, `heads`, `mlp`, …, through `constrain`); a config's
`partitioning.rules` maps each name to a mesh axis (or none), e.g. `{"conv_out": "fsdp"}` shards
every convolution's output channels over `fsdp`. A mesh axis is used only once per array, and is
dropped for a dimension it does not divide (that dimension is replicated instead), so one table
works for every layer of every size.
"""

from __future__ import annotations

import contextlib
import contextvars
from typing import Any, Iterator, Mapping

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

# Mesh axes a rule may name; a mesh may leave some out (they then count as size 1).
MESH_AXES = ("data", "fsdp", "tensor")


def resolve_spec(logical: PartitionSpec | tuple, shape: tuple[int, ...],
                 rules: Mapping[str, Any], mesh: Mesh) -> PartitionSpec:
    """The mesh PartitionSpec of an array of `shape` whose axes have `logical` names."""
    used: set[str] = set()
    out = []
    logical = tuple(logical) + (None,) * (len(shape) - len(tuple(logical)))
    for name, dim in zip(logical, shape):
        target = rules.get(name) if name is not None else None
        axes = (target,) if isinstance(target, str) else tuple(target or ())
        kept = []
        size = 1
        for axis in axes:
            if axis not in mesh.shape and axis in MESH_AXES:
                continue  # a mesh without this axis: size 1, nothing to split
            if axis not in mesh.shape:
                raise ValueError(f"partitioning rule {name!r} → {axis!r}: the mesh has no axis "
                                 f"{axis!r} (axes {tuple(mesh.shape)})")
            if axis in used or dim % (size * mesh.shape[axis]):
                continue
            kept.append(axis)
            size *= mesh.shape[axis]
        used.update(kept)
        out.append(None if not kept else kept[0] if len(kept) == 1 else tuple(kept))
    return PartitionSpec(*out)


def state_shardings(abstract_state: nnx.State, rules: Mapping[str, Any], mesh: Mesh) -> dict:
    """NamedShardings, as a pure dict, for an (abstract) nnx state whose variables name their axes."""
    specs = nnx.to_pure_dict(nnx.get_partition_spec(abstract_state))
    shapes = nnx.to_pure_dict(abstract_state)
    return jax.tree.map(
        lambda spec, x: NamedSharding(mesh, resolve_spec(spec, x.shape, rules, mesh)),
        specs, shapes, is_leaf=lambda v: isinstance(v, PartitionSpec),
    )


def replicated(mesh: Mesh) -> NamedSharding:
    """The sharding of an array every device holds whole."""
    return NamedSharding(mesh, PartitionSpec())


def describe(shardings: Any) -> dict:
    """{'a/b/c': 'PartitionSpec(...)'} for golden-file style tests and logs."""
    flat = jax.tree_util.tree_flatten_with_path(shardings)[0]
    return {"/".join(str(getattr(k, "key", k)) for k in path): str(s.spec) for path, s in flat}


def shard_fraction(x: jax.Array) -> float:
    """Share of a global array held by one device (1.0 = replicated)."""
    return float(np.prod(x.sharding.shard_shape(x.shape)) / max(1, np.prod(x.shape)))


_ACTIVATIONS: contextvars.ContextVar = contextvars.ContextVar("activation_sharding", default=None)


@contextlib.contextmanager
def activation_sharding(mesh: Mesh, rules: Mapping[str, Any]) -> Iterator[None]:
    """Within this context (around the traced model call), `constrain` pins activations."""
    token = _ACTIVATIONS.set((mesh, dict(rules)))
    try:
        yield
    finally:
        _ACTIVATIONS.reset(token)


def constrain(x: jax.Array, logical: tuple) -> jax.Array:
    """`x` constrained to the sharding its logical axis names resolve to (a no-op outside
    `activation_sharding`, e.g. in a plain single-device call)."""
    context = _ACTIVATIONS.get()
    if context is None:
        return x
    mesh, rules = context
    return jax.lax.with_sharding_constraint(
        x, NamedSharding(mesh, resolve_spec(logical, x.shape, rules, mesh)))

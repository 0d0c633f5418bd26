"""Logical axis names → mesh shardings, by a rules table kept in the config.

Models name the axes of their parameters (`conv_out`, `vocab`, `embed`, …) and of their main
activations (`batch`, `heads`, `mlp`, …, through `constrain`); a config's
`partitioning.rules` maps each name to a mesh axis (or none), e.g. `{"conv_out": "fsdp"}` shards
every convolution's output channels over `fsdp`. A mesh axis is used only once per array. A rule
that cannot apply (its mesh axis does not divide the dimension, or another dimension of the array
already took that axis) leaves the dimension unsplit, and is said: `unsplit` lists each such
parameter with its shape, logical axis and mesh axis (when that mesh axis splits no other
dimension of the parameter), `log_unsplit` logs them when a state is
built, and `bench plan` / `bench compile` report them with the parameters left whole.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import math
from typing import Any, Iterator, Mapping, NamedTuple

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

# Mesh axes a rule may name; a mesh may leave some out (they then count as size 1).
MESH_AXES = ("data", "fsdp", "fsdp_transpose", "tensor")


class Unsplit(NamedTuple):
    """A rule that could not apply to one parameter: `logical` → mesh `axis` (of `size`) on the
    dimension `dim` of the parameter at `path` (of `shape`), and why."""

    path: str
    shape: tuple[int, ...]
    logical: str
    axis: str
    size: int
    dim: int
    reason: str

    def __str__(self) -> str:
        return (f"{self.path} {self.shape}: rule {self.logical!r} → {self.axis!r} ({self.size}) "
                f"{self.reason}; dimension {self.dim} stays whole")


def resolve_spec(logical: PartitionSpec | tuple, shape: tuple[int, ...],
                 rules: Mapping[str, Any], mesh: Mesh, dropped: list | None = None) -> PartitionSpec:
    """The mesh PartitionSpec of an array of `shape` whose axes have `logical` names.

    Each rule that cannot apply, to a mesh axis that then splits no dimension of the array, is
    appended to `dropped` (when given) as (logical name, dimension index, dimension, mesh axis,
    reason). A rule may list several mesh axes: each is taken where it divides what the earlier
    ones left, so a later one serves as a fallback for small arrays (biases)."""
    used: set[str] = set()
    missed: list = []
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
            if axis in used:
                continue  # it splits an earlier dimension of this array already
            if dim % (size * mesh.shape[axis]):
                if mesh.shape[axis] > 1:
                    missed.append((name, len(out), dim, axis, f"does not divide {dim}" + (
                        f" (after {size})" if size > 1 else "")))
                continue
            kept.append(axis)
            size *= mesh.shape[axis]
        used.update(kept)
        out.append(None if not kept else kept[0] if len(kept) == 1 else tuple(kept))
    if dropped is not None:  # a mesh axis that another dimension took is not missed
        dropped.extend(m for m in missed if m[3] not in used)
    return PartitionSpec(*out)


def state_shardings(abstract_state: nnx.State, rules: Mapping[str, Any], mesh: Mesh) -> dict:
    """NamedShardings, as a pure dict, for an (abstract) nnx state whose variables name their axes."""
    specs = nnx.to_pure_dict(nnx.get_partition_spec(abstract_state))
    shapes = nnx.to_pure_dict(abstract_state)
    return jax.tree.map(
        lambda spec, x: NamedSharding(mesh, resolve_spec(spec, x.shape, rules, mesh)),
        specs, shapes, is_leaf=lambda v: isinstance(v, PartitionSpec),
    )


def _paths_specs_shapes(abstract_state: nnx.State):
    specs = nnx.to_pure_dict(nnx.get_partition_spec(abstract_state))
    shapes = nnx.to_pure_dict(abstract_state)
    flat_specs = jax.tree_util.tree_flatten_with_path(
        specs, is_leaf=lambda v: isinstance(v, PartitionSpec))[0]
    flat_shapes = jax.tree.leaves(shapes)
    for (path, spec), x in zip(flat_specs, flat_shapes):
        yield _path(path), spec, x


def unsplit(abstract_state: nnx.State, rules: Mapping[str, Any], mesh) -> list[Unsplit]:
    """Every rule that cannot apply to a parameter of `abstract_state` on `mesh` (anything with a
    `.shape` mapping of axis sizes will do, so a plan needs no devices)."""
    out = []
    for path, spec, x in _paths_specs_shapes(abstract_state):
        dropped: list = []
        resolve_spec(spec, x.shape, rules, mesh, dropped)
        out += [Unsplit(path, tuple(x.shape), name, axis, int(mesh.shape[axis]), i, reason)
                for name, i, _, axis, reason in dropped]
    return out


def left_whole(abstract_state: nnx.State, rules: Mapping[str, Any], mesh,
               min_bytes: int = 2 ** 20) -> list[dict]:
    """Parameters of at least `min_bytes` (float32) that the rules leave whole on every device of
    `mesh`: [{'path', 'shape', 'mib'}], largest first. Empty on a one-device mesh."""
    if math.prod(int(v) for v in dict(mesh.shape).values()) == 1:
        return []
    out = []
    for path, spec, x in _paths_specs_shapes(abstract_state):
        nbytes = 4 * math.prod(x.shape)
        if nbytes >= min_bytes and all(
                e is None for e in resolve_spec(spec, x.shape, rules, mesh)):
            out.append({"path": path, "shape": list(x.shape), "mib": nbytes / 2 ** 20})
    return sorted(out, key=lambda r: -r["mib"])


def log_unsplit(abstract_state: nnx.State, rules: Mapping[str, Any], mesh) -> list[Unsplit]:
    """Logs (warning) each rule that cannot apply on `mesh`; returns them."""
    found = unsplit(abstract_state, rules, mesh)
    for u in found:
        logging.warning("partitioning: %s", u)
    return found


def _path(path) -> str:
    return "/".join(str(getattr(k, "key", k)) for k in path)


def replicated(mesh: Mesh) -> NamedSharding:
    """The sharding of an array every device holds whole."""
    return NamedSharding(mesh, PartitionSpec())


def describe(shardings: Any) -> dict:
    """{'a/b/c': 'PartitionSpec(...)'} for golden-file style tests and logs."""
    flat = jax.tree_util.tree_flatten_with_path(shardings)[0]
    return {_path(path): str(s.spec) for path, s in flat}


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


def current_mesh() -> Mesh | None:
    """The mesh of the enclosing `activation_sharding`, None outside one."""
    context = _ACTIVATIONS.get()
    return None if context is None else context[0]


def current_rules() -> dict | None:
    """The rules of the enclosing `activation_sharding`, None outside one."""
    context = _ACTIVATIONS.get()
    return None if context is None else context[1]


def constrain(x: jax.Array, logical: tuple) -> jax.Array:
    """`x` constrained to the sharding its logical axis names resolve to (a no-op outside
    `activation_sharding`, e.g. in a plain single-device call)."""
    context = _ACTIVATIONS.get()
    if context is None:
        return x
    mesh, rules = context
    return jax.lax.with_sharding_constraint(
        x, NamedSharding(mesh, resolve_spec(logical, x.shape, rules, mesh)))


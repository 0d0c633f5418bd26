"""The device mesh: built from a config mapping of axis name to size, with clear errors.

`{"data": -1, "fsdp": 1, "tensor": 1}` puts every device on `data`; at most one axis may be -1 and
takes what the others leave. Batches are split over the batch axes (`data` and `fsdp`); parameters
are split by logical-axis rules (later issues).
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

# Mesh axes a batch is split over, outermost first.
BATCH_AXES = ("data", "fsdp")


class MeshShapeError(ValueError):
    """A requested mesh shape does not fit the available devices."""


def resolve_mesh_shape(axes: Mapping[str, int], num_devices: int) -> dict[str, int]:
    """Fills in the one -1 axis and checks that the sizes multiply to `num_devices`."""
    sizes = dict(axes)
    if not sizes:
        raise MeshShapeError("mesh needs at least one axis, got none")
    for name, size in sizes.items():
        if size == 0 or size < -1:
            raise MeshShapeError(f"mesh axis {name!r} has size {size}; use a positive size or -1")
    free = [name for name, size in sizes.items() if size == -1]
    if len(free) > 1:
        raise MeshShapeError(f"at most one mesh axis may be -1, got {free} in {dict(axes)}")
    fixed = math.prod(size for size in sizes.values() if size != -1)
    if free:
        if num_devices % fixed:
            raise MeshShapeError(
                f"mesh {dict(axes)}: the fixed axes need a multiple of {fixed} devices, "
                f"but there are {num_devices}"
            )
        sizes[free[0]] = num_devices // fixed
    elif fixed != num_devices:
        raise MeshShapeError(
            f"mesh {dict(axes)} needs {fixed} devices, but there are {num_devices}"
        )
    return sizes


def make_mesh(axes: Mapping[str, int], devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A `Mesh` over `devices` (default: all) with the named axes, of Auto axis type."""
    devices = list(jax.devices() if devices is None else devices)
    sizes = resolve_mesh_shape(axes, len(devices))
    names = tuple(sizes)
    return jax.make_mesh(
        tuple(sizes.values()),
        names,
        axis_types=(AxisType.Auto,) * len(names),
        devices=devices,
    )


def batch_axes(mesh: Mesh) -> tuple[str, ...]:
    """The mesh axes a batch dimension is split over (those of BATCH_AXES the mesh has)."""
    return tuple(a for a in BATCH_AXES if a in mesh.axis_names)


def batch_sharding(mesh: Mesh, ndim: int) -> NamedSharding:
    """Sharding of an `ndim`-dimensional batch: leading axis over the batch axes, rest replicated."""
    spec = PartitionSpec(batch_axes(mesh) or None, *([None] * (ndim - 1)))
    return NamedSharding(mesh, spec)


def num_batch_shards(mesh: Mesh) -> int:
    """How many ways a batch is split."""
    return int(np.prod([mesh.shape[a] for a in batch_axes(mesh)], dtype=np.int64))

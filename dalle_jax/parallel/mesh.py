"""The device mesh: built from a config mapping of axis name to size, with clear errors.

`{"data": -1, "fsdp": 1, "tensor": 1}` puts every device on `data`; at most one axis may be -1 and
takes what the others leave. Batches are split over the batch axes (`data` and `fsdp`); parameters
are split by the logical-axis rules of `parallel.partitioning`.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import jax
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

# Mesh axes a batch is split over, outermost first.
BATCH_AXES = ("data", "fsdp", "fsdp_transpose")


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


def parse_axes(text: str) -> dict[str, int]:
    """'data:64,fsdp:8,tensor:4' → {'data': 64, 'fsdp': 8, 'tensor': 4} (one size may be -1)."""
    sizes = {}
    for part in filter(None, text.split(",")):
        name, _, size = part.partition(":")
        if not (size.isdigit() and int(size) >= 1) and size != "-1":
            raise ValueError(f"--mesh entry {part!r}: write AXIS:SIZE with a positive size "
                             "(or -1 for the devices left)")
        sizes[name.strip()] = int(size)
    if not sizes:
        raise ValueError(f"--mesh={text!r} names no axis; e.g. data:64,fsdp:8,tensor:4")
    return sizes


def make_mesh(axes: Mapping[str, int], devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A `Mesh` over `devices` (default: all) with the named axes, of Auto axis type.

    On TPU slices the devices are laid out along the physical torus (`jax.make_mesh`); an axis
    that is no product of whole physical axes (data 8 on a 4×4×4 slice) splits a physical axis
    instead (`allow_split_physical_axes`), which JAX does not do by itself."""
    devices = list(jax.devices() if devices is None else devices)
    sizes = resolve_mesh_shape(axes, len(devices))
    names = tuple(sizes)
    types = (AxisType.Auto,) * len(names)
    try:
        return jax.make_mesh(tuple(sizes.values()), names, axis_types=types, devices=devices)
    except NotImplementedError:  # no assignment to whole physical axes
        grid = mesh_utils.create_device_mesh(tuple(sizes.values()), devices,
                                             allow_split_physical_axes=True)
        return Mesh(grid, names, axis_types=types)


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

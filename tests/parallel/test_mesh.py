"""Mesh construction from a config mapping: shapes, -1 inference and errors that name the problem."""

import jax
import pytest

from dalle_jax.parallel.mesh import MeshShapeError, batch_sharding, make_mesh, resolve_mesh_shape


def test_infers_free_axis():
    mesh = make_mesh({"data": -1, "fsdp": 2, "tensor": 1})
    assert dict(mesh.shape) == {"data": 4, "fsdp": 2, "tensor": 1}
    assert mesh.axis_types == (jax.sharding.AxisType.Auto,) * 3
    assert batch_sharding(mesh, 3).spec == jax.sharding.PartitionSpec(("data", "fsdp"), None, None)


def test_exact_shape_and_subset_of_devices():
    assert dict(make_mesh({"data": 2, "tensor": 4}).shape) == {"data": 2, "tensor": 4}
    assert dict(make_mesh({"data": -1}, devices=jax.devices()[:2]).shape) == {"data": 2}


@pytest.mark.parametrize(
    "axes, message",
    [
        ({"data": 3, "tensor": 1}, r"needs 3 devices, but there are 8"),
        ({"data": -1, "tensor": 3}, r"multiple of 3 devices, but there are 8"),
        ({"data": -1, "fsdp": -1}, r"at most one mesh axis may be -1"),
        ({"data": 0}, r"'data' has size 0"),
        ({}, r"at least one axis"),
    ],
)
def test_errors(axes, message):
    with pytest.raises(MeshShapeError, match=message):
        make_mesh(axes)
    assert issubclass(MeshShapeError, ValueError)


def test_resolve_without_devices():
    assert resolve_mesh_shape({"data": -1, "fsdp": 16}, 256) == {"data": 16, "fsdp": 16}

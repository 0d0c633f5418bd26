"""`bench plan`: parameter counts from eval_shape and per-device bytes under the sharding rules."""

import math

import jax
import pytest
from flax import nnx

from dalle_jax.benchmarks import plan
from dalle_jax.models.transformer import DalleTransformer
from tests.helpers.configs import load


def test_paper_preset_has_twelve_billion_parameters():
    out = plan.run(load("dalle", "paper"), {"data": 64, "fsdp": 8, "tensor": 4})
    assert 11.5e9 < out["parameters"] < 12.5e9
    assert out["devices"] == 2048 and out["per_device_batch"] == 2
    gib = out["per_device_gib"]
    assert gib["optimizer_and_ema"] == pytest.approx(3 * gib["parameters"])
    # Sharding can only shrink a device's share; unsharded it is 4 bytes per parameter.
    assert gib["parameters"] < out["parameters"] * 4 / 2 ** 30 / 8


def test_tiny_counts_match_the_built_model_and_shards_divide():
    config = load("dalle", "tiny")
    model = DalleTransformer.from_config(config.model)
    count = sum(math.prod(x.shape) for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
    one = plan.run(config, {"data": 1})
    assert one["parameters"] == count
    assert one["per_device_gib"]["parameters"] == pytest.approx(4 * count / 2 ** 30)
    split = plan.run(config, {"data": 1, "fsdp": 2, "tensor": 2})
    assert split["per_device_gib"]["parameters"] < 0.6 * one["per_device_gib"]["parameters"]


def test_bad_mesh_text_is_named():
    assert plan.parse_mesh("data:4,fsdp:2") == {"data": 4, "fsdp": 2}
    with pytest.raises(ValueError, match="'fsdp'"):
        plan.parse_mesh("data:4,fsdp")
    with pytest.raises(ValueError, match="does not divide"):
        plan.run(load("dalle", "tiny"), {"data": 3})

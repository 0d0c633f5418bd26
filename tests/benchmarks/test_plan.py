"""`bench plan`: parameter counts from eval_shape and per-device bytes under the sharding rules."""

import math

import jax
import pytest
from flax import nnx

from dalle_jax.benchmarks import plan
from dalle_jax.models.dalle.transformer import DalleTransformer
from tests.helpers.configs import load


def test_paper_preset_has_twelve_billion_parameters():
    out = plan.run(load("dalle", "paper"), {"data": 64, "fsdp": 8, "tensor": 4})
    assert 11.5e9 < out["parameters"] < 12.5e9
    assert out["devices"] == 2048 and out["per_device_batch"] == 2
    gib = out["per_device_gib"]
    assert gib["optimizer_and_ema"] == pytest.approx(3 * gib["parameters"])
    assert gib["state_and_gradients"] == pytest.approx(5 * gib["parameters"])
    assert gib["total"] is None and out["topology"] is None  # XLA's figure needs a topology
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


def test_with_a_topology_the_total_is_xlas_compiled_peak():
    """`--topology`: the plan compiles the train step for that slice; its total is XLA's peak,
    which holds at least the state and gradients the plan counts from the shapes."""
    config = load("dalle", "small", **{"model.dtype": "bfloat16"})
    out = plan.run(config, {"fsdp": 4}, topology="v5e:2x2")
    gib, xla = out["per_device_gib"], out["xla"]
    assert out["topology"] == "v5e:2x2" and xla["fits"] and xla["hbm_gib"] == 16
    assert gib["total"] == xla["per_device_gib"]["peak"]
    # the compiled step's arguments are the state: parameters, both moments and the EMA
    assert xla["per_device_gib"]["arguments"] == pytest.approx(
        gib["parameters"] + gib["optimizer_and_ema"], rel=0.02)
    assert gib["total"] > gib["state_and_gradients"]


def test_bad_mesh_text_is_named():
    assert plan.parse_mesh("data:4,fsdp:2") == {"data": 4, "fsdp": 2}
    with pytest.raises(ValueError, match="'fsdp'"):
        plan.parse_mesh("data:4,fsdp")
    with pytest.raises(ValueError, match="does not divide"):
        plan.run(load("dalle", "tiny"), {"data": 3})


# The meshes experiments/tpu/README.md and the README recommend for `paper`, by slice.
PAPER_MESHES = [
    {"data": 8, "fsdp": 8},                                   # v5p-128 (64 chips)
    {"data": 4, "fsdp": 4, "tensor": 4},                      # v5p-128, tensor parallel
    {"data": 2, "fsdp": 128, "fsdp_transpose": 2},            # v5p-1024 (512 chips): fsdp 256
    {"data": 2, "fsdp": 16, "fsdp_transpose": 2, "tensor": 8},  # v5p-1024, tensor 8
    {"data": 2, "fsdp": 32},                                  # v4-128 (64 chips)
    {"data": 2, "fsdp": 128},                                 # v5e-256
]


@pytest.mark.parametrize("mesh", PAPER_MESHES, ids=lambda m: ",".join(f"{k}:{v}" for k, v in m.items()))
def test_paper_splits_every_large_parameter_on_the_recommended_meshes(mesh):
    out = plan.run(load("dalle", "paper", **{"data.global_batch_size": 512}), mesh)
    assert out["replicated"] == [] and out["unsplit_rules"] == []
    assert out["parameters"] == 12_292_808_448  # the 62-head model; 2 head slots more are stored
    assert out["stored_parameters"] > out["parameters"]


def test_a_rule_that_cannot_divide_is_named_and_the_parameter_listed():
    """The width 3968 = 2⁷·31: fsdp 256 cannot split it, and every weight that relies on it says
    so; the ones with no other split are listed whole."""
    out = plan.run(load("dalle", "paper", **{"data.global_batch_size": 512}),
                   {"data": 2, "fsdp": 256})
    assert any(u.startswith("layers/qkv (64, 3968, 3, 64, 64): rule 'embed' → 'fsdp' (256) "
                            "does not divide 3968") for u in out["unsplit_rules"])
    assert {"layers/qkv", "layers/out", "image_head"} <= {r["path"] for r in out["replicated"]}


def test_paper_weights_split_width_over_fsdp_and_heads_or_mlp_over_tensor():
    """The specs of the paper's layer weights on fsdp 4 × tensor 4 (golden): each matmul weight
    has `fsdp` on its width and `tensor` on its heads or MLP dimension, so that gathering it over
    `fsdp` leaves each tensor shard its own heads or MLP columns; biases take `fsdp` after
    `tensor`."""
    from dalle_jax.parallel.partitioning import resolve_spec
    from dalle_jax.models.dalle.transformer import LAYER_AXES

    config = load("dalle", "paper")
    m, rules = config.model, dict(config.partitioning.rules)
    mesh = plan._MeshShape({"data": 1, "fsdp": 4, "tensor": 4})
    w, s, d, mlp = m.width, m.head_slots, m.head_dim, m.mlp_ratio * m.width
    shapes = {"qkv": (64, w, 3, s, d), "out": (64, s, d, w), "mlp_in": (64, w, mlp),
              "mlp_out": (64, mlp, w), "qkv_bias": (64, 3, s * d), "mlp_in_bias": (64, mlp)}
    specs = {k: tuple(resolve_spec(LAYER_AXES[k], v, rules, mesh)) for k, v in shapes.items()}
    assert specs == {
        "qkv": (None, "fsdp", None, "tensor", None),
        "out": (None, "tensor", None, "fsdp"),
        "mlp_in": (None, "fsdp", "tensor"),
        "mlp_out": (None, "tensor", "fsdp"),
        "qkv_bias": (None, None, ("tensor", "fsdp")),
        "mlp_in_bias": (None, ("tensor", "fsdp")),
    }

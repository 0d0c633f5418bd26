"""The `tiny` and `small` train steps compile for a v5e:2x2 slice on this CPU (XLA's TPU compiler
from libtpu, no TPU) on the meshes data 4, data 2 × tensor 2 and fsdp 2 × tensor 2, with splash
attention (its Mosaic kernels in the module) and with blocksparse; no weight is gathered over
`tensor` inside the layer loop, and every parameter is split where the mesh has fsdp or tensor.
"""

import pytest

from dalle_jax.benchmarks import compile as compile_bench
from tests.helpers.collectives import tensor_gathers_in_loop
from tests.helpers.configs import load

MESHES = {"data4": {"data": 4}, "data2-tensor2": {"data": 2, "tensor": 2},
          "fsdp2-tensor2": {"fsdp": 2, "tensor": 2}}


# `tiny` (4 layers unrolled) and `small` (8 layers, scanned under remat) on every mesh with
# both attentions.
CASES = [(preset, mesh, attention) for preset in ("tiny", "small") for mesh in MESHES
         for attention in ("splash", "blocksparse")]


@pytest.mark.parametrize("preset,mesh,attention", CASES)
def test_the_train_step_compiles_for_v5e(preset, mesh, attention):
    config = load("dalle", preset, **{"model.attention": attention, "model.dtype": "bfloat16"})
    out = compile_bench.run(config, topology="v5e:2x2", mesh_axes=MESHES[mesh])
    assert out["chips"] == 4 and out["device_kind"].startswith("TPU v5")
    assert out["mesh"] == MESHES[mesh]
    assert out["fits"] and 0 < out["per_device_gib"]["peak"] < out["hbm_gib"]
    # splash: its Pallas kernels in the module (forward and backward, per pattern); else none
    assert (out["attention_kernel"] > 0) == (attention == "splash")
    assert out["attention_kernel"] == sum(n for k, n in out["tpu_kernels"].items()
                                          if k.startswith("splash_mha"))
    # tensor parallelism multiplies each shard's heads; no weight is gathered over `tensor`
    assert tensor_gathers_in_loop(out["collectives_by_axis"]) == 0
    if "tensor" in MESHES[mesh] or "fsdp" in MESHES[mesh]:
        assert out["replicated"] == []
    if mesh == "fsdp2-tensor2" and preset == "small":  # FSDP: each layer's weights gathered
        # inside the scan over layers (tiny, remat 'none', runs its 4 layers unrolled)
        assert out["collectives_by_axis"]["all-gather"].get("fsdp in loop", 0) > 0

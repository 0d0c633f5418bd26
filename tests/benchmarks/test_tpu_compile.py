"""The real steps compile for TPU slices on this CPU (XLA's TPU compiler from libtpu, no TPU).

`bench compile` builds each family's step on an abstract state, lowers it for the devices of a
named topology and compiles it; these tests read what XLA made of it: the Mosaic kernels of
splash attention, the collectives along each mesh axis, per-device memory, and the parameters
the rules leave whole. The train steps of the `tiny` and `small` presets on v5e meshes are in
`test_tpu_train_steps.py`.
"""

import json
import math
import os
import re
import subprocess
import sys

import pytest

from dalle_jax.benchmarks import compile as compile_bench
from dalle_jax.benchmarks import hlo_text
from dalle_jax.benchmarks.tpu_topology import topology_devices
from tests.helpers.configs import ROOT, load
from tests.helpers.collectives import tensor_gathers_in_loop


def test_cpu_forms_are_left_out_of_a_tpu_step():
    """Compiled for TPU, a bfloat16 step has no optimization barriers (the CPU-only transposed
    copies) and its saved residuals are not bit-cast to integers (`xla_cpu.saved_bits`)."""
    config = load("dalle", "tiny", **{"model.dtype": "bfloat16", "model.remat": "dots",
                                      "model.attention": "blocksparse"})
    from dalle_jax.parallel.mesh import make_mesh

    mesh = make_mesh({"data": 4}, devices=topology_devices("v5e:2x2"))
    _, programs = compile_bench.step_programs(config, mesh, "train")
    _, step, args = programs[0]
    tpu_text = step.lower(*args).as_text()
    assert "optimization_barrier" not in tpu_text
    assert "bitcast_convert" not in tpu_text


@pytest.mark.parametrize("family", ["dvae", "clip"])
def test_the_other_families_compile(family):
    out = compile_bench.run(load(family, "tiny"), topology="v5e:2x2", mesh_axes={"data": 4})
    assert out["family"] == family and out["fits"] and out["parameters"] > 0
    assert out["collectives"]["all-reduce"] > 0  # gradients summed over the data axis


def test_the_sampler_compiles_as_prefill_and_one_decode_step():
    config = load("dalle", "tiny", **{"model.dtype": "bfloat16"})
    out = compile_bench.run(config, topology="v5e:2x2", mesh_axes={"data": 2, "tensor": 2},
                            step="sample")
    assert set(out["programs"]) == {"prefill", "decode"}
    assert all(p["fits"] for p in out["programs"].values())
    # the decode step updates the donated cache in place
    assert out["programs"]["decode"]["per_device_gib"]["aliased"] > 0


def test_a_rule_that_cannot_divide_is_reported():
    """tiny has 2 heads: a tensor axis of 4 cannot split them, and says so."""
    out = compile_bench.run(load("dalle", "tiny"), topology="v5e:2x2", mesh_axes={"tensor": 4})
    reported = [u for u in out["unsplit_rules"] if "'heads' → 'tensor' (4)" in u]
    assert reported and any("layers/qkv" in u and "does not divide 2" in u for u in reported)


def test_collective_groups_are_read_in_every_form():
    from jax.sharding import Mesh
    import numpy as np

    mesh = Mesh(np.arange(4).reshape(2, 2), ("fsdp", "tensor"))  # only .shape is read
    text = "\n".join([
        "ENTRY %main (p: f32[4]) -> f32[4] {",
        "  %a = f32[4] all-gather(f32[2] %p), replica_groups={{0,2},{1,3}}, dimensions={0}",
        "  %b = f32[4] all-reduce(f32[4] %a), replica_groups=[2,2]<=[4], to_apply=%add",
        "  %c = f32[4] all-reduce(f32[4] %b), replica_groups=[2,2]<=[2,2]T(1,0), to_apply=%add",
        "  %d = f32[4] all-reduce(f32[4] %c), replica_groups=mesh['x'=2,'y'=2] {'y'}, to_apply=%add",
        "  %e = f32[4] all-reduce(f32[4] %d), replica_groups=mesh['x'=2,'y'=2], "
        "device_ids=([2,2]T(1,0)) {'y'}, to_apply=%add",
        "  %f = f32[4] all-reduce(f32[4] %e), replica_groups={}, to_apply=%add",
        "}",
        # TPU's reduce-scatter: an all-reduce and each device's slice, fused as one collective
        "%all-reduce-scatter.3 (input.3: f32[4]) -> f32[2] {",
        "  %g = f32[4] all-reduce(f32[4] %input.3), replica_groups={{0,1},{2,3}}, to_apply=%add",
        "  ROOT %h = f32[2] dynamic-slice(f32[4] %g, u32[] %i), dynamic_slice_sizes={2}",
        "}"])
    assert hlo_text.collectives_by_axis(text, mesh) == {
        "all-gather": {"fsdp": 1},
        "all-reduce": {"tensor": 2, "fsdp": 2, "fsdp+tensor": 1},
        "reduce-scatter": {"tensor": 1}}
    assert hlo_text.collectives(text) == {"all-gather": 1, "all-reduce": 5, "reduce-scatter": 1,
                                          "all-to-all": 0, "collective-permute": 0}


def test_bench_compile_prints_one_json_line_and_names_bad_input():
    env = dict(os.environ, PYTHONPATH=ROOT)
    env.pop("JAX_PLATFORMS", None)  # the command keeps JAX on the host by itself
    base = [sys.executable, "-m", "dalle_jax.bench", "compile", "--config=configs/dalle.py:tiny"]

    def run(*args):
        return subprocess.run(base + list(args), cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=600)

    done = run("--topology=v5e:2x2", "--mesh=data:2,tensor:2", "--config.model.attention=splash")
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["topology"] == "v5e:2x2" and out["attention"] == "splash"
    assert out["attention_kernel"] > 0 and out["mesh"] == {"data": 2, "tensor": 2}
    bad = run("--topology=v9x:2x2", "--mesh=data:4")
    assert bad.returncode != 0 and "v5p:4x4x4" in bad.stderr  # lists the known names
    assert "Traceback" not in bad.stderr
    wrong = run("--topology=v5e:2x2", "--mesh=data:8")
    assert wrong.returncode != 0 and "needs 8 devices" in wrong.stderr


def _full_all_reduces_in_loop(text: str, min_elements: int) -> list[str]:
    """Shapes of the all-reduces inside loops (not those of TPU reduce-scatter fusions) with at
    least `min_elements` elements."""
    inside = hlo_text._loop_computations(text)
    found = []
    for computation, kind, line in hlo_text._collective_lines(text):
        if kind != "all-reduce" or computation not in inside:
            continue
        for dims in re.findall(r"\w+\[([\d,]+)\]", line.split(" all-reduce")[0]):
            if math.prod(int(d) for d in dims.split(",")) >= min_elements:
                found.append(dims)
    return found


def test_paper_widths_split_every_weight_and_reduce_scatter_its_gradient():
    """At the paper's widths (3968, 62 heads in 64 slots, MLP 15872), two layers, on fsdp 2 ×
    tensor 2: the layer loop gathers weights over `fsdp` only, never over `tensor`, and every
    layer weight's gradient leaves it reduce-scattered over `fsdp`; none is all-reduced at full
    size (as qkv's was, its (3968, 3, 64, 64) layout putting the width minor). The loop's
    full-size all-reduces are tensor parallelism's activations, (batch · tokens, width)."""
    config = load("dalle", "paper", **{"model.depth": 2, "data.global_batch_size": 4})
    from dalle_jax.parallel.mesh import make_mesh

    mesh = make_mesh({"fsdp": 2, "tensor": 2}, devices=topology_devices("v5p:2x2x1"))
    spec, programs = compile_bench.step_programs(config, mesh, "train")
    _, fn, args = programs[0]
    assert compile_bench.whole_parameters(args[0]["params"]) == [] and spec.unsplit == ()
    text = fn.lower(*args).compile().as_text()
    by_axis = hlo_text.collectives_by_axis(text, mesh)
    assert tensor_gathers_in_loop(by_axis) == 0
    assert by_axis["all-gather"].get("fsdp in loop", 0) > 0
    # qkv, out, mlp_in and mlp_out (each split over tensor), however XLA groups them into fused
    # reduce-scatters
    weights = ("3968,3,2048", "2048,3968", "3968,7936", "7936,3968")
    shapes = " ".join(re.findall(r"^%all-reduce-scatter\S* \((.*)\) ->", text, re.M))
    for weight in weights:
        assert f"f32[{weight}]" in shapes, (weight, shapes)
    full = _full_all_reduces_in_loop(text, 2 ** 20)
    assert not set(full) & set(weights), full
    assert set(full) <= {"2560,3968"}, full  # 2 rows × 1280 tokens of each fsdp shard


def test_a_missing_libtpu_names_the_install(monkeypatch):
    from dalle_jax.benchmarks import tpu_topology

    monkeypatch.setattr(tpu_topology.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ValueError, match="pip install -r requirements-tpu.txt"):
        tpu_topology.topology_devices("v5e:2x2")
    with pytest.raises(ValueError, match="write GENERATION:SHAPE"):
        tpu_topology.topology_devices("tpu-v5")


def test_embedding_tables_are_gathered_not_the_looked_up_rows():
    """A table split over its width (embed → fsdp) is gathered whole before the lookup, so each
    device looks up its own batch rows. Left to itself, XLA's TPU compiler looks the ids of the
    global batch up in each width shard and all-gathers the rows (at `paper` on 512 chips,
    7.75 GiB per device)."""

    import jax
    import jax.numpy as jnp
    import numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

    from dalle_jax.models.dalle.transformer import rows_of
    from dalle_jax.parallel.partitioning import activation_sharding, constrain

    mesh = Mesh(np.array(topology_devices("v5e:2x2")), ("fsdp",))
    rules = {"batch": "fsdp", "embed": "fsdp"}
    table = jax.ShapeDtypeStruct((512, 128), jnp.float32,
                                 sharding=NamedSharding(mesh, P(None, "fsdp")))
    ids = jax.ShapeDtypeStruct((16, 64), jnp.int32, sharding=NamedSharding(mesh, P("fsdp")))

    def gathered(lookup):
        def embed(t, i):
            with activation_sharding(mesh, rules):
                return constrain(lookup(t, i), ("batch", None, None))
        text = jax.jit(embed).lower(table, ids).compile().as_text()
        return re.findall(r"= \w+\[([\d,]+)\]\S* all-gather", text)

    assert gathered(rows_of) == ["512,128"]  # the table, and nothing else
    assert gathered(lambda t, i: t[i]) != ["512,128"]  # what the plain lookup does

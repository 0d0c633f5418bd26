"""`bench plan`: parameter count and per-device memory of a transformer config on a given mesh.

Nothing is allocated: the model is built with `nnx.eval_shape`, parameter shardings come from the
config's logical-axis rules resolved against the requested mesh sizes (no devices needed), and
the per-device bytes that follow from the shapes alone are exact:

- parameters: float32 bytes of each parameter's shard, summed;
- gradients: as many again (float32, split like their parameter);
- optimizer state: AdamW's two moments plus the parameter EMA, 3× the parameters.

What the step needs beyond that (saved activations, a layer's gathered weights and their
full-size gradients before the reduce-scatter, attention and MLP working sets, logits) depends on
XLA's schedule, fusions and layouts, and no formula from the shapes followed it: an estimate of
this kind was 40–85% short of XLA's figure on the TPU slices of `experiments/tpu`. So the total
is XLA's own: with `--topology=NAME` (libtpu installed) the plan compiles the train step for that
slice (`bench compile`) and reports its per-device peak and whether it fits; without it the
total is left out (null) rather than guessed.

It also lists the parameters of 1 MiB or more that the rules leave whole on this mesh
(`replicated`) and each rule that cannot divide its dimension (`unsplit_rules`).
"""

from __future__ import annotations

import math

import jax
import ml_collections
from flax import nnx

from dalle_jax.models.dalle.transformer import DalleTransformer, unused_slot_parameters
from dalle_jax.parallel.mesh import BATCH_AXES, parse_axes
from dalle_jax.parallel.partitioning import left_whole, resolve_spec, unsplit


class _MeshShape:
    """Just the axis sizes a rules table is resolved against (no devices)."""

    def __init__(self, sizes: dict[str, int]):
        self.shape = dict(sizes)


def parse_mesh(text: str) -> dict[str, int]:
    """'data:64,fsdp:8,tensor:4' → {'data': 64, 'fsdp': 8, 'tensor': 4}: sizes of devices that
    need not exist, so each must be positive."""
    sizes = parse_axes(text)
    for name, size in sizes.items():
        if size < 1:
            raise ValueError(f"--mesh entry {name}:{size}: write AXIS:SIZE with a positive size")
    return sizes


def run(config: ml_collections.ConfigDict, mesh_sizes: dict[str, int],
        topology: str | None = None) -> dict:
    """The plan figures of `config` on a mesh of `mesh_sizes` devices per axis; with `topology`
    (a TPU slice, e.g. 'v5p:4x4x4'), also XLA's per-device figures of the compiled train step,
    whose peak is the plan's total."""
    m = config.model
    abstract = nnx.eval_shape(lambda: DalleTransformer.from_config(m))
    params = nnx.state(abstract, nnx.Param)
    specs = jax.tree.leaves(nnx.get_partition_spec(params))
    shapes = jax.tree.leaves(params)
    mesh = _MeshShape(mesh_sizes)
    rules = dict(config.partitioning.rules)
    stored = sum(math.prod(x.shape) for x in shapes)
    count = stored - unused_slot_parameters(m)
    param_bytes = 0
    for spec, x in zip(specs, shapes):
        resolved = resolve_spec(spec, x.shape, rules, mesh)
        split = math.prod(math.prod(mesh_sizes[a] for a in ((e,) if isinstance(e, str) else e))
                          for e in resolved if e is not None)
        param_bytes += 4 * math.prod(x.shape) / split
    batch_devices = math.prod(mesh_sizes.get(a, 1) for a in BATCH_AXES)
    gb = config.data.global_batch_size
    if gb % batch_devices:
        raise ValueError(f"global batch {gb} does not divide over the batch axes "
                         f"{' × '.join(BATCH_AXES)} = {batch_devices}")
    gib = 2 ** 30
    out = {
        "benchmark": "plan", "preset": config.get("preset", ""), "mesh": mesh_sizes,
        "devices": math.prod(mesh_sizes.values()), "parameters": int(count),
        "stored_parameters": int(stored),
        "per_device_batch": gb // batch_devices,
        "replicated": left_whole(params, rules, mesh),
        "unsplit_rules": [str(u) for u in unsplit(params, rules, mesh)],
        "per_device_gib": {
            "parameters": param_bytes / gib,
            "gradients": param_bytes / gib,
            "optimizer_and_ema": 3 * param_bytes / gib,
            "state_and_gradients": 5 * param_bytes / gib,
            "total": None,
        },
        "topology": topology,
    }
    if topology:
        from dalle_jax.benchmarks import compile as compile_bench

        compiled = compile_bench.run(config, topology=topology, mesh_axes=mesh_sizes)
        xla = compiled["per_device_gib"]
        out["per_device_gib"]["total"] = None if xla is None else xla["peak"]
        out["xla"] = {k: compiled[k] for k in ("per_device_gib", "hbm_gib", "fits", "error",
                                               "compile_s")}
    return out

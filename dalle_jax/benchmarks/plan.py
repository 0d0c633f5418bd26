"""`bench plan`: parameter count and per-device memory of a transformer config on a given mesh.

Nothing is allocated: the model is built with `nnx.eval_shape`, parameter shardings come from the
config's logical-axis rules resolved against the requested mesh sizes (no devices needed), and:

- parameters: float32 bytes of each parameter's shard, summed;
- optimizer state: AdamW's two moments (like their parameter) plus the parameter EMA, so 3× that;
- activations (an estimate, stated so): with `remat='full'`, the residual stream kept at every
  layer boundary, B·L·W per layer in the compute dtype, plus one layer's working set recomputed in
  the backward pass; with 'dots', also each layer's q, k, v and MLP pre-activation
  (B·L·(3·H·D + r·W), r the MLP ratio); with 'none', every layer's working set. A layer's working set is its q, k, v and
  attention output (4·B·L·H·D), the attention weights (B·H·L·K, K the keys a query block computes:
  L for dense, the widest block row for blocksparse/splash) and the MLP hidden (B·L·4W), with H and
  the MLP split over `tensor`; the logits over each position's vocabulary are added in float32.
  B is the per-device batch: the global batch over the batch axes (`data` × `fsdp` ×
  `fsdp_transpose`).

It also lists the parameters of 1 MiB or more that the rules leave whole on this mesh
(`replicated`) and each rule that cannot divide its dimension (`unsplit_rules`). XLA's own
per-device figures for a TPU slice come from `bench compile`.
"""

from __future__ import annotations

import math

import jax
import ml_collections
import numpy as np
from flax import nnx

from dalle_jax.models import attention_masks
from dalle_jax.models.attention import band_plan
from dalle_jax.models.transformer import DTYPES, DalleTransformer, unused_slot_parameters
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


def _keys_per_query(model: ml_collections.ConfigDict) -> int:
    length = model.text_len + model.grid ** 2
    if model.attention == "dense":
        return length
    block = model.block_size
    widest = 0
    for kind in set(attention_masks.layer_kinds(model.depth, model.pattern)):
        mask = attention_masks.stream_mask(kind, model.text_len, model.grid, model.conv_kernel)
        if kind == "column":
            order = attention_masks.column_major_order(model.text_len, model.grid)
            mask = mask[np.ix_(order, order)]
        widest = max(widest, band_plan(mask, block).keys_per_query)
    return widest


def run(config: ml_collections.ConfigDict, mesh_sizes: dict[str, int]) -> dict:
    """The plan figures of `config` on a mesh of `mesh_sizes` devices per axis."""
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
    b, t = gb // batch_devices, mesh_sizes.get("tensor", 1)
    length = m.text_len + m.grid ** 2
    act = np.dtype(DTYPES[m.dtype]).itemsize
    heads = math.ceil((m.get("head_slots", 0) or m.heads) / t)
    layer = act * b * length * (4 * heads * m.head_dim + m.mlp_ratio * m.width / t) \
        + 4 * b * heads * length * _keys_per_query(m)  # softmax weights in float32
    stream = act * b * length * m.width
    dots = act * b * length * (3 * heads * m.head_dim + m.mlp_ratio * m.width / t)
    kept = {"full": stream, "dots": stream + dots, "none": stream + layer}
    if m.remat not in kept:
        raise ValueError(f"model.remat={m.remat!r}; choose one of {sorted(kept)}")
    acts = m.depth * kept[m.remat] + (layer if m.remat != "none" else 0)
    logits = 2 * 4 * b * ((m.text_len - 1) * m.text_vocab + m.grid ** 2 * m.image_vocab) / t
    gib = 2 ** 30
    return {
        "benchmark": "plan", "preset": config.get("preset", ""), "mesh": mesh_sizes,
        "devices": math.prod(mesh_sizes.values()), "parameters": int(count),
        "stored_parameters": int(stored),
        "per_device_batch": b,
        "replicated": left_whole(params, rules, mesh),
        "unsplit_rules": [str(u) for u in unsplit(params, rules, mesh)],
        "per_device_gib": {
            "parameters": param_bytes / gib,
            "optimizer_and_ema": 3 * param_bytes / gib,
            "activations_estimate": (acts + logits) / gib,
            "total": (4 * param_bytes + acts + logits) / gib,
        },
    }

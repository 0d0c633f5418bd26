"""`bench compile`: the real steps of a config compiled ahead of time for a TPU topology.

    python -m dalle_jax.bench compile --config=configs/dalle.py:paper --topology=v5p:4x4x4 \
        --mesh=data:8,fsdp:8 [--step=train|eval|sample]

With libtpu installed (`pip install -r requirements-tpu.txt`) and no TPU attached, JAX describes
the devices of a named pod slice (`jax.experimental.topologies`), and XLA's TPU compiler compiles
for them on this host. The step is the one `train` (or `sample`) runs: built by the family's own
trainer on an abstract state (`jax.ShapeDtypeStruct`s carrying their shardings; nothing is
allocated), lowered with the batch split over the mesh's batch axes, and compiled. The figures
are XLA's: per-device bytes of arguments, outputs and temporaries (`memory_analysis`), the
collectives in the compiled module (and along which mesh axes), and the TPU kernel calls
(splash attention's Pallas kernels, and those XLA writes itself). `sample`
compiles the sampler's two programs, the text prefill and one cached decode step, on the
parameter EMA in the compute dtype.
"""

from __future__ import annotations

import math
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from dalle_jax.benchmarks.hlo_text import (collectives, collectives_by_axis, splash_calls,
                                           tpu_kernels)
from dalle_jax.benchmarks.tpu_topology import chips_of, hbm_per_device, topology_devices
from dalle_jax.parallel.mesh import batch_sharding, make_mesh, num_batch_shards
from dalle_jax.parallel.partitioning import activation_sharding, resolve_spec

STEPS = ("train", "eval", "sample")
_GIB = 2 ** 30
WHOLE_MIB = 1.0  # parameters at least this large that the rules leave whole are reported


def memory(compiled) -> dict[str, float]:
    """Per-device GiB of the compiled program by XLA's count; peak = arguments + outputs −
    aliased (donated buffers reused for outputs) + temporaries."""
    m = compiled.memory_analysis()
    args, outs = m.argument_size_in_bytes, m.output_size_in_bytes
    alias, temp = m.alias_size_in_bytes, m.temp_size_in_bytes
    return {"arguments": args / _GIB, "outputs": outs / _GIB, "aliased": alias / _GIB,
            "temp": temp / _GIB, "peak": (args + outs - alias + temp) / _GIB}


def whole_parameters(params: dict, min_mib: float = WHOLE_MIB) -> list[dict]:
    """Parameters of at least `min_mib` (as stored) that every device of their mesh holds whole."""
    out = []
    for path, x in jax.tree_util.tree_flatten_with_path(params)[0]:
        mib = math.prod(x.shape) * np.dtype(x.dtype).itemsize / 2 ** 20
        if mib >= min_mib and x.sharding.num_devices > 1 and x.sharding.is_fully_replicated:
            out.append({"path": "/".join(str(getattr(k, "key", k)) for k in path),
                        "shape": list(x.shape), "mib": round(mib, 3)})
    return sorted(out, key=lambda r: -r["mib"])


def _batch(shapes: dict, mesh) -> dict:
    return {k: jax.ShapeDtypeStruct(s, d, sharding=batch_sharding(mesh, len(s)))
            for k, (s, d) in shapes.items()}


def step_programs(config: ml_collections.ConfigDict, mesh, step: str):
    """(spec, [(program name, jitted function, abstract arguments)]) of `step` for the config's
    model family, built by that family's trainer."""
    family = config.model.family
    b = config.data.global_batch_size
    if b % num_batch_shards(mesh):
        raise ValueError(f"data.global_batch_size={b} does not divide over the mesh's batch axes "
                         f"({num_batch_shards(mesh)} ways)")
    if family == "dalle":
        from dalle_jax.training.dalle import optimizer as dalle_optimizer
        from dalle_jax.training.dalle import steps as dalle_steps
        from dalle_jax.training.dalle import trainer as dalle_trainer

        spec, state = dalle_trainer.build(config, mesh, abstract=True)
        m = config.model
        batch = _batch({"text": ((b, m.text_len), jnp.int32),
                        "image": ((b, m.grid, m.grid), jnp.int32)}, mesh)
        if step == "train":
            lr = dalle_optimizer.learning_rate(config.optimizer)
            return spec, [("train", dalle_steps.make_train_step(spec, config, lr), (state, batch))]
        if step == "eval":
            return spec, [("eval", dalle_steps.make_eval_step(spec, config), (state["ema"], batch))]
        return spec, _sampler_programs(config, spec, state, mesh)
    if step == "sample":
        raise ValueError(f"--step=sample is the stage-2 sampler; {family!r} has none")
    r = config.data.resolution
    images = _batch({"image": ((b, r, r, 3), jnp.uint8)}, mesh)["image"]
    if family == "dvae":
        from dalle_jax.training.dvae import steps as dvae_steps
        from dalle_jax.training.dvae import trainer as dvae_trainer

        spec, state = dvae_trainer.build(config, mesh, abstract=True)
        if step == "train":
            return spec, [("train", dvae_steps.make_train_step(
                spec, config, dvae_trainer.dvae_schedules(config)), (state, images))]
        return spec, [("eval", dvae_steps.make_eval_step(spec, config.model),
                       (state["ema"], state["extra"], images))]
    if family == "clip":
        from dalle_jax.training.clip import trainer as clip_trainer

        spec, state = clip_trainer.build(config, mesh, abstract=True)
        batch = {"image": images, **_batch({"text": ((b, config.text.text_len), jnp.int32)}, mesh)}
        if step == "train":
            return spec, [("train", clip_trainer.make_train_step(spec, config).jitted,
                           (state, batch))]
        return spec, [("eval", clip_trainer.make_eval_step(spec, config), (state["ema"], batch))]
    raise ValueError(f"model.family={family!r}: bench compile knows dalle, dvae and clip")


def _sampler_programs(config, spec, state, mesh):
    """The cached sampler's programs on the EMA in the compute dtype: prefill of a batch of
    texts, and one decode step (one image code for every row, against the full cache)."""
    from dalle_jax.generation import kv_cache
    from dalle_jax.models.dalle.transformer import DTYPES
    from dalle_jax.training import train_state

    m, rules = config.model, dict(config.partitioning.rules)
    dtype = DTYPES[m.dtype]
    params = train_state.in_dtype(state["ema"], dtype)
    b = config.data.global_batch_size
    graphdef = spec.graphdef
    text = _batch({"text": ((b, m.text_len), jnp.int32)}, mesh)["text"]
    length = m.text_len + m.grid ** 2
    cache_shape = (m.depth, b, length, m.get("head_slots", 0) or m.heads, m.head_dim)
    cache_sharding = jax.sharding.NamedSharding(mesh, resolve_spec(
        ("layers", "batch", None, "heads", None), cache_shape, rules, mesh))
    cache = kv_cache.Cache(*(jax.ShapeDtypeStruct(cache_shape, dtype, sharding=cache_sharding),) * 2)
    codes = _batch({"codes": ((b,), jnp.int32)}, mesh)["codes"]
    index = jax.ShapeDtypeStruct((), jnp.int32)

    def prefill(params, text):
        with activation_sharding(mesh, rules):
            return kv_cache.prefill(nnx.merge(graphdef, params), text)

    def decode(params, cache, codes, index):
        with activation_sharding(mesh, rules):
            return kv_cache.decode_step(nnx.merge(graphdef, params), cache, codes, index)

    return [("prefill", jax.jit(prefill, out_shardings=(cache_sharding, None)), (params, text)),
            ("decode", jax.jit(decode, donate_argnums=1), (params, cache, codes, index))]


def _compile_one(fn, args, mesh, hbm: float) -> dict:
    """The figures of one compiled program; XLA refusing it for lack of memory is a result
    (`fits` false, XLA's message in `error`), not a failure."""
    cache = jax.config.jax_enable_compilation_cache
    start = time.perf_counter()
    # The persistent cache cannot load executables for devices this process has no client
    # for: compile afresh and write nothing (JAX decides once per process whether it uses the
    # cache, so this holds where the first compile is this one, as in `bench compile`).
    jax.config.update("jax_enable_compilation_cache", False)
    try:
        compiled = fn.lower(*args).compile()
    except Exception as e:  # XLA's out-of-memory is a JaxRuntimeError (RESOURCE_EXHAUSTED)
        if "RESOURCE_EXHAUSTED" not in str(e) and "Ran out of memory" not in str(e):
            raise
        message = next((line for line in str(e).splitlines() if "memory" in line), str(e))
        return {"compile_s": time.perf_counter() - start, "fits": False,
                "error": message.strip()[:500], "per_device_gib": None, "collectives": None,
                "collectives_by_axis": None, "attention_kernel": None, "tpu_kernels": None}
    finally:
        jax.config.update("jax_enable_compilation_cache", cache)
    seconds = time.perf_counter() - start
    text = compiled.as_text()
    mem = memory(compiled)
    return {"compile_s": seconds, "per_device_gib": mem, "fits": mem["peak"] <= hbm,
            "collectives": collectives(text), "collectives_by_axis": collectives_by_axis(text, mesh),
            "attention_kernel": splash_calls(text), "tpu_kernels": tpu_kernels(text)}


def run(config: ml_collections.ConfigDict, *, topology: str, mesh_axes: dict[str, int],
        step: str = "train") -> dict:
    """Compiles `step` of `config` for `topology` on a mesh of `mesh_axes`; returns the figures."""
    if step not in STEPS:
        raise ValueError(f"--step={step!r}; choose one of {STEPS}")
    devices = topology_devices(topology)
    mesh = make_mesh(mesh_axes, devices=devices)
    hbm = hbm_per_device(topology, len(devices))
    spec, programs = step_programs(config, mesh, step)
    out_programs = {name: _compile_one(fn, args, mesh, hbm) for name, fn, args in programs}
    first = next(iter(out_programs.values()))
    abstract_params = programs[0][2][0]  # the state, or the parameters the program takes
    abstract_params = abstract_params.get("params", abstract_params)
    stored = sum(math.prod(x.shape) for x in jax.tree.leaves(abstract_params))
    m = config.model
    if m.family == "dalle":
        from dalle_jax.models.dalle.transformer import unused_slot_parameters

        params = stored - unused_slot_parameters(m)
    else:
        params = stored
    return {
        "benchmark": "compile", "preset": config.get("preset", ""), "family": m.family,
        "step": step, "topology": topology, "chips": chips_of(topology), "devices": len(devices),
        "device_kind": devices[0].device_kind, "mesh": dict(mesh.shape),
        "global_batch": config.data.global_batch_size,
        "attention": m.get("attention"), "dtype": m.get("dtype"), "remat": m.get("remat"),
        "parameters": int(params), "stored_parameters": int(stored), "hbm_gib": hbm,
        "compile_s": sum(p["compile_s"] for p in out_programs.values()),
        "per_device_gib": first["per_device_gib"],
        "fits": all(p["fits"] for p in out_programs.values()),
        "error": next((p["error"] for p in out_programs.values() if "error" in p), None),
        "collectives": first["collectives"], "collectives_by_axis": first["collectives_by_axis"],
        "attention_kernel": first["attention_kernel"], "tpu_kernels": first["tpu_kernels"],
        "replicated": whole_parameters(abstract_params),
        "unsplit_rules": [str(u) for u in spec.unsplit],
        "programs": out_programs,
    }

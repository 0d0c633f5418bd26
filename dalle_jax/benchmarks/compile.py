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

import importlib.util
import itertools
import math
import os
import re
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from dalle_jax.parallel.mesh import batch_sharding, make_mesh, num_batch_shards
from dalle_jax.parallel.partitioning import activation_sharding, resolve_spec

# HBM per chip, GiB, by TPU generation (the prefix of a topology name).
HBM_GIB = {"v4": 32, "v5e": 16, "v5p": 95, "v6e": 32}


def chips_of(topology: str) -> int:
    """Chips of a topology name: 'v5p:4x4x4' → 64."""
    return math.prod(int(d) for d in topology.partition(":")[2].split("x"))


def hbm_per_device(topology: str, devices: int) -> float:
    """GiB of HBM each JAX device of the slice has: the chip's, shared by its devices (one per
    chip as `topology_devices` describes every generation)."""
    return HBM_GIB[topology.partition(":")[0]] * chips_of(topology) / devices
# Topology names known to work with the pinned libtpu (generation:chips per dimension).
KNOWN_TOPOLOGIES = ("v4:2x2x1", "v4:2x2x2", "v4:4x4x4", "v5e:2x2", "v5e:4x4", "v5e:8x8",
                    "v5e:16x16", "v5p:2x2x1", "v5p:2x2x2", "v5p:4x4x4", "v5p:8x8x8",
                    "v6e:2x2", "v6e:16x16")
STEPS = ("train", "eval", "sample")
COLLECTIVES = ("all-gather", "all-reduce", "reduce-scatter", "all-to-all", "collective-permute")
_COLLECTIVE_RE = re.compile(r" (" + "|".join(COLLECTIVES) + r")(?:-start)?\(")  # opcodes
_GIB = 2 ** 30
WHOLE_MIB = 1.0  # parameters at least this large that the rules leave whole are reported


def topology_devices(name: str) -> list:
    """The devices of the TPU slice `name` (e.g. 'v5p:4x4x4'); a ValueError names the install
    command when libtpu is missing, and the known names when `name` is not one."""
    generation = name.partition(":")[0]
    if generation not in HBM_GIB or ":" not in name:
        raise ValueError(f"--topology={name!r}: write GENERATION:SHAPE, one of "
                         f"{', '.join(KNOWN_TOPOLOGIES)}")
    if importlib.util.find_spec("libtpu") is None:
        raise ValueError("bench compile needs XLA's TPU compiler: pip install -r "
                         "requirements-tpu.txt (libtpu; no TPU needed)")
    # libtpu takes a lock file per process unless told not to: another process holding it (a
    # second compile, a test runner) would otherwise make this one fail.
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
    from jax.experimental import topologies

    # v4 and v5p chips hold two TensorCores, which JAX runs as one device ("megacore"), as
    # on a TPU VM; libtpu describes them one device per core unless asked.
    options = {"chip_config_name": "megacore"} if generation in ("v4", "v5p") else {}
    try:
        return list(topologies.get_topology_desc(platform="tpu", topology_name=name,
                                                 **options).devices)
    except Exception as e:  # libtpu's error for a shape it does not know
        raise ValueError(f"--topology={name!r} is not a TPU slice libtpu knows ({e}); known "
                         f"names: {', '.join(KNOWN_TOPOLOGIES)}") from None


def collectives(hlo_text: str) -> dict[str, int]:
    """How many instructions of each collective kind the compiled module holds."""
    counts = dict.fromkeys(COLLECTIVES, 0)
    for kind in _COLLECTIVE_RE.findall(hlo_text):
        counts[kind] += 1
    return counts


_INSTRUCTION_RE = re.compile(
    r" (" + "|".join(COLLECTIVES) + r")(?:-start)?\(.*?replica_groups=(\{\{[^=]*?\}\}|\{\}|"
    r"\[[0-9,]+\]<=\[[0-9,]+\](?:T\([0-9,]+\))?|"
    r"mesh\[[^\]]*\](?:, device_ids=\((?:[^()]|\([^)]*\))*\))? \{[^}]*\})")
_COMPUTATION_RE = re.compile(r"^(?:ENTRY )?%([\w.\-]+) ")
_CALLED_RE = re.compile(r"(?:body|condition|calls|to_apply|branch_computations)=\{?([%\w.\-, ]+)\}?")


def _iota(text: str) -> np.ndarray:
    """The device list of an HLO iota form 'dims' or 'dims T(perm)', e.g. '[2,2]T(1,0)'."""
    dims_text, _, perm_text = text.partition("T")
    dims = [int(d) for d in dims_text.strip("[]").split(",")]
    ids = np.arange(math.prod(dims)).reshape(dims)
    if perm_text:
        ids = ids.transpose([int(p) for p in perm_text.strip("()").split(",")])
    return ids.reshape(-1)


def _device_groups(text: str) -> frozenset:
    """The device groups of an HLO `replica_groups=` value, as indices of the program's devices."""
    if text.startswith("{{"):
        return frozenset(frozenset(int(i) for i in g.split(",") if i)
                         for g in text[2:-2].split("},{"))
    if text.startswith("mesh["):  # mesh['a'=2,'b'=2][, device_ids=(iota)] {'b'}
        sizes_text, rest = text[5:].split("]", 1)
        names = [a.split("=")[0].strip("'") for a in sizes_text.split(",")]
        sizes = [int(a.split("=")[1]) for a in sizes_text.split(",")]
        ids = None
        device_ids = re.search(r"device_ids=\(([^()]*(?:\([^)]*\))?)\)", rest)
        if device_ids:
            ids = _iota(device_ids.group(1)).reshape(sizes)
        axes_text = rest[rest.index("{") + 1:rest.index("}")]
        picked = [names.index(a.strip().strip("'")) for a in axes_text.split(",")]
        return _groups_along(sizes, picked, ids)
    if text.startswith("["):  # iota form: [groups,size]<=[dims]T(perm)
        shape_text, _, rest = text.partition("<=")
        rows = _iota(rest).reshape([int(d) for d in shape_text.strip("[]").split(",")])
        return frozenset(frozenset(int(i) for i in row) for row in rows)
    return frozenset()  # {}: every device


def _groups_along(sizes, axes, ids=None) -> frozenset:
    ids = np.arange(math.prod(sizes)).reshape(sizes) if ids is None else ids
    rest = [a for a in range(len(sizes)) if a not in axes]
    rows = ids.transpose(rest + list(axes)).reshape(-1, math.prod(sizes[a] for a in axes))
    return frozenset(frozenset(int(i) for i in row) for row in rows)


def _loop_computations(hlo_text: str) -> set[str]:
    """Names of the module's computations that run inside a while loop (its bodies, and all that
    they call)."""
    calls: dict[str, set[str]] = {}
    bodies: set[str] = set()
    current = None
    for line in hlo_text.splitlines():
        head = _COMPUTATION_RE.match(line)
        if head and line.rstrip().endswith("{"):
            current = head.group(1)
            calls.setdefault(current, set())
            continue
        if current is None:
            continue
        for group in _CALLED_RE.findall(line):
            calls[current].update(n.strip().lstrip("%") for n in group.split(",") if n.strip())
        bodies.update(re.findall(r"body=%([\w.\-]+)", line))
    inside, todo = set(), list(bodies)
    while todo:
        name = todo.pop()
        if name not in inside:
            inside.add(name)
            todo.extend(calls.get(name, ()))
    return inside


def collectives_by_axis(hlo_text: str, mesh) -> dict[str, dict[str, int]]:
    """{kind: {mesh axes: count}} of the compiled module's collectives: which mesh axes each
    one's device groups run along ('data+fsdp', 'tensor', …), with ' in loop' added for those
    inside a loop (the scan over layers). Collectives without device groups (permutes) are left
    to `collectives`."""
    names, sizes = list(mesh.shape), list(mesh.shape.values())
    by_groups = {}
    for r in range(1, len(names) + 1):
        for combo in itertools.combinations(range(len(names)), r):
            if any(sizes[a] == 1 for a in combo):
                continue
            by_groups.setdefault(_groups_along(sizes, combo), "+".join(names[a] for a in combo))
    everyone = frozenset([frozenset(range(math.prod(sizes)))])
    in_loop = _loop_computations(hlo_text)
    out: dict[str, dict[str, int]] = {}
    current = None
    for line in hlo_text.splitlines():
        head = _COMPUTATION_RE.match(line)
        if head and line.rstrip().endswith("{"):
            current = head.group(1)
            continue
        match = _INSTRUCTION_RE.search(line)
        if not match:
            continue
        kind, groups = match.groups()
        axes = by_groups.get(_device_groups(groups) or everyone, "other")
        if current in in_loop:
            axes += " in loop"
        out.setdefault(kind, {})
        out[kind][axes] = out[kind].get(axes, 0) + 1
    return out


_KERNEL_RE = re.compile(r"%([A-Za-z_\-]+)[.\d]* = .*custom_call_target=\"tpu_custom_call\"")


def tpu_kernels(hlo_text: str) -> dict[str, int]:
    """{kernel name: calls} of the module's TPU kernel calls: Pallas (Mosaic) kernels such as
    splash attention's `splash_mha_fwd…`, and kernels XLA's TPU compiler writes itself (its
    `online-softmax` for a dense softmax over keys)."""
    counts: dict[str, int] = {}
    for name in _KERNEL_RE.findall(hlo_text):
        counts[name] = counts.get(name, 0) + 1
    return counts


def splash_calls(hlo_text: str) -> int:
    """How many calls of splash attention's Pallas kernels the module holds."""
    return sum(n for name, n in tpu_kernels(hlo_text).items() if name.startswith("splash"))


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


def _family_steps(config: ml_collections.ConfigDict, mesh, step: str):
    """(spec, [(program name, jitted function, abstract arguments)]) of `step` for the config's
    model family, built by that family's trainer."""
    family = config.model.family
    b = config.data.global_batch_size
    if b % num_batch_shards(mesh):
        raise ValueError(f"data.global_batch_size={b} does not divide over the mesh's batch axes "
                         f"({num_batch_shards(mesh)} ways)")
    if family == "dalle":
        from dalle_jax.training import dalle_optimizer, dalle_steps, dalle_trainer

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
        from dalle_jax.training import dvae_steps, dvae_trainer

        spec, state = dvae_trainer.build(config, mesh, abstract=True)
        if step == "train":
            return spec, [("train", dvae_steps.make_train_step(
                spec, config, dvae_trainer.dvae_schedules(config)), (state, images))]
        return spec, [("eval", dvae_steps.make_eval_step(spec, config.model),
                       (state["ema"], state["extra"], images))]
    if family == "clip":
        from dalle_jax.training import clip_trainer

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
    from dalle_jax.models.transformer import DTYPES

    m, rules = config.model, dict(config.partitioning.rules)
    dtype = DTYPES[m.dtype]
    params = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, dtype if jnp.issubdtype(x.dtype, jnp.floating)
                                       else x.dtype, sharding=x.sharding), state["ema"])
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
    spec, programs = _family_steps(config, mesh, step)
    out_programs = {name: _compile_one(fn, args, mesh, hbm) for name, fn, args in programs}
    first = next(iter(out_programs.values()))
    abstract_params = programs[0][2][0]  # the state, or the parameters the program takes
    abstract_params = abstract_params.get("params", abstract_params)
    stored = sum(math.prod(x.shape) for x in jax.tree.leaves(abstract_params))
    m = config.model
    if m.family == "dalle":
        from dalle_jax.models.transformer import unused_slot_parameters

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

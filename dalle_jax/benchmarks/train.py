"""`bench train`: transformer training throughput and the attention op alone, dense vs blocksparse.

On random text ids and codes of the config's shapes and batch (no data, no dVAE): tokens/s and
seconds per train step, the step's compile time, the model FLOPs per step (`model_flops`) and their
rate against a matmul peak measured in the same run in the model's dtype (`model.dtype`; 8192³ on
accelerators, 2048³ on CPUs): `fraction_of_peak`, the model-FLOPs utilisation. Memory: the
process's peak resident memory, XLA's device memory figures where the backend keeps them
(`device_memory_gib`: GPUs, TPUs), and the host page faults per step (with whether huge pages were
on, `huge_pages`). `attention_resolved` is what `model.attention` ran as (`auto` picks per
platform). Then
one attention layer (forward and backward, every pattern of the config's schedule) timed with
`dense` and with the config's implementation, at the config's shapes or at
`--attention_shape=TEXT_LEN,GRID`.
"""

from __future__ import annotations

import resource
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from dalle_jax.xla_cpu import huge_pages
from dalle_jax.benchmarks.model_flops import forward_flops, train_step_flops
from dalle_jax.benchmarks.timing import (device_memory_gib, matmul_peak, peak_matmul_size,
                                         time_calls, time_train_steps)
from dalle_jax.models.dalle import attention_masks
from dalle_jax.models.dalle.attention import attend, resolve
from dalle_jax.models.dalle.transformer import DTYPES, DalleTransformer
from dalle_jax.parallel.mesh import make_mesh
from dalle_jax.training import train_state
from dalle_jax.training.dalle import optimizer as dalle_optimizer
from dalle_jax.training.dalle import steps as dalle_steps
from dalle_jax.training.host_memory import release_freed_memory


def _peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20  # KiB on Linux


def _minor_faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def attention_op(model: ml_collections.ConfigDict, impl: str, *, batch: int, text_len: int,
                 grid: int, seconds: float) -> tuple[float, dict[str, float]]:
    """Seconds for forward + backward of one attention layer, in the model's dtype: the mean over
    the schedule's layers, and each distinct pattern's own."""
    kinds = attention_masks.layer_kinds(model.depth, model.pattern)
    length = text_len + grid * grid
    shape = (batch, length, model.heads, model.head_dim)
    dtype = DTYPES[model.dtype]
    q, k, v = (jax.random.normal(key, shape, dtype)
               for key in jax.random.split(jax.random.key(0), 3))
    per_kind = {}
    for kind in sorted(set(kinds)):
        mask = attention_masks.stream_mask(kind, text_len, grid, model.conv_kernel)
        order = (attention_masks.column_major_order(text_len, grid)
                 if kind == "column" and impl != "dense" else None)
        f = jax.jit(jax.grad(lambda q, k, v: jnp.sum(attend(
            q, k, v, mask, impl=impl, block_size=model.block_size, order=order,
            cudnn_impl=model.get("cudnn_impl", "cudnn")).astype(jnp.float32) ** 2),
            argnums=(0, 1, 2)))
        per_kind[kind] = time_calls(lambda: f(q, k, v), min_seconds=seconds)
    return sum(kinds.count(k) * s for k, s in per_kind.items()) / len(kinds), per_kind


def run(config: ml_collections.ConfigDict, *, seconds: float = 5.0,
        attention_shape: tuple[int, int] | None = None, profile_dir: str | None = None) -> dict:
    """Measures the config's train step and its attention op; returns the JSON-able figures.

    With `profile_dir`, three more steps run under `jax.profiler.trace` (open the trace with
    TensorBoard's profile plugin or Perfetto)."""
    m = config.model
    mesh = make_mesh(dict(config.mesh))
    tx = dalle_optimizer.make(config.optimizer)
    spec, state = train_state.create(lambda: DalleTransformer.from_config(m), tx, mesh,
                                     dict(config.partitioning.rules))
    b = config.data.global_batch_size
    rng = np.random.default_rng(0)
    batch = {"text": rng.integers(1, m.text_vocab, (b, m.text_len)).astype(np.int32),
             "image": rng.integers(0, m.image_vocab, (b, m.grid, m.grid)).astype(np.int32)}
    step = dalle_steps.make_train_step(spec, config, dalle_optimizer.learning_rate(config.optimizer))
    start = time.perf_counter()
    step = step.lower(state, batch).compile()
    compile_s = time.perf_counter() - start
    release_freed_memory()  # as the training loop does after its first step
    calls = [0]

    def counted_step(state, batch):
        calls[0] += 1
        return step(state, batch)

    faults = _minor_faults()
    step_s, _, state = time_train_steps(counted_step, state, batch, seconds=seconds,
                                        count_flops=False)
    faults_per_step = (_minor_faults() - faults) / calls[0]
    if profile_dir:
        with jax.profiler.trace(profile_dir):
            for _ in range(3):
                state, metrics = step(state, batch)
            jax.block_until_ready(metrics)
    flops = train_step_flops(m, b)
    rss = _peak_rss_gib()
    text_len, grid = attention_shape or (m.text_len, m.grid)
    dense_s, dense_kinds = attention_op(m, "dense", batch=b, text_len=text_len, grid=grid,
                                        seconds=seconds)
    impl_s, impl_kinds = (attention_op(m, m.attention, batch=b, text_len=text_len, grid=grid,
                                       seconds=seconds)
                          if m.attention != "dense" else (dense_s, dense_kinds))
    platform = jax.devices()[0].platform
    size = peak_matmul_size(platform)
    # The peak of the dtype the model computes in, timed for up to 3 s (as long as the steps when
    # they are timed for less).
    peak = matmul_peak(size, dtype=DTYPES[m.dtype], seconds=min(3.0, seconds))
    tokens = b * (m.text_len + m.grid ** 2)
    resolved = resolve(m.attention, platform=platform, dtype=DTYPES[m.dtype])
    return {
        "benchmark": "train", "preset": config.get("preset"), "attention": m.attention,
        "attention_resolved": resolved, "pattern": m.pattern, "dtype": m.dtype,
        "devices": jax.device_count(), "platform": platform,
        "device_kind": jax.devices()[0].device_kind, "batch": b, "tokens_per_step": tokens,
        "remat": m.remat, "compile_s": compile_s, "step_s": step_s, "tokens_per_s": tokens / step_s,
        "model_flops_per_step": flops,
        "forward_flops_by_part": forward_flops(m, b),
        "flops_per_s": flops / step_s, "matmul_peak_flops_per_s": peak,
        "matmul_peak_dtype": m.dtype, "matmul_peak_n": size,
        "fraction_of_peak": flops / step_s / peak, "peak_rss_gib": rss,
        "device_memory_gib": device_memory_gib(),
        "minor_page_faults_per_step": faults_per_step, "huge_pages": huge_pages.active(),
        "profile_dir": profile_dir,
        "attention_op": {"text_len": text_len, "grid": grid, "dense_s": dense_s,
                         f"{resolved}_s": impl_s, "speedup_vs_dense": dense_s / impl_s,
                         "per_pattern_s": {"dense": dense_kinds, resolved: impl_kinds}},
    }

"""Timing helpers: a measured matmul peak and the FLOPs XLA counts for a compiled function."""

from __future__ import annotations

import time
from typing import Callable

import jax
import jax.numpy as jnp


def time_calls(fn: Callable[[], object], *, warmup: int = 1, min_seconds: float = 3.0,
               min_calls: int = 3) -> float:
    """Median-free simple timing: seconds per call over at least `min_calls` and `min_seconds`."""
    for _ in range(warmup):
        jax.block_until_ready(fn())
    calls, start = 0, time.perf_counter()
    while calls < min_calls or time.perf_counter() - start < min_seconds:
        jax.block_until_ready(fn())
        calls += 1
    return (time.perf_counter() - start) / calls


def matmul_peak(n: int = 2048, dtype=jnp.float32, seconds: float = 3.0) -> float:
    """FLOP/s of a jitted n×n×n matmul on the default device: the machine's practical peak.

    Operands are `dtype` and the products accumulate in float32, as the models' matmuls do (in
    bfloat16, CPUs with AMX units run this several times faster than float32)."""
    a = jax.random.normal(jax.random.key(0), (n, n), dtype)
    b = jax.random.normal(jax.random.key(1), (n, n), dtype)
    f = jax.jit(lambda a, b: jnp.matmul(a, b, preferred_element_type=jnp.float32))
    return 2 * n**3 / time_calls(lambda: f(a, b), min_seconds=seconds)


def peak_matmul_size(platform: str) -> int:
    """The side of the peak matmul: 8192 on accelerators (smaller ones leave them idle between
    kernels), 2048 on CPUs (8192³ would take minutes)."""
    return 2048 if platform == "cpu" else 8192


def device_memory_gib() -> dict | None:
    """XLA's own memory figures of device 0 (`Device.memory_stats`): peak and current bytes in
    use and the limit, GiB; None where the backend keeps none (CPUs)."""
    stats = jax.devices()[0].memory_stats()
    if not stats:
        return None
    names = {"peak_bytes_in_use": "peak", "bytes_in_use": "in_use", "bytes_limit": "limit"}
    return {name: stats[key] / 2 ** 30 for key, name in names.items() if key in stats}


def compiled_flops(jitted, *args) -> float:
    """FLOPs of one call as XLA's cost analysis counts them (0 if it does not say)."""
    cost = jitted.lower(*args).compile().cost_analysis()
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else {}
    return float((cost or {}).get("flops", 0.0))


def time_train_steps(step, state, batch, *, seconds: float,
                     count_flops: bool = True) -> tuple[float, float, dict]:
    """(seconds per step, XLA FLOPs per step or 0 without `count_flops`, final state) of a
    donated-state train step. Counting compiles the step a second time."""
    flops = compiled_flops(step, state, batch) if count_flops else 0.0
    holder = {"state": state}

    def one_step():
        holder["state"], metrics = step(holder["state"], batch)
        return metrics["loss"]

    return time_calls(one_step, min_seconds=seconds), flops, holder["state"]

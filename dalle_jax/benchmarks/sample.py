"""`bench sample`: seconds per image of cached sampling against full recomputation.

Per batch size: seconds per image, codes per second and the first call's time (compile + one
call) of each sampler; XLA's device memory figures where the backend keeps them.

Random weights of the config's transformer (sampling speed does not depend on what was learned),
random prompts; each sampler is jitted and timed after a warm-up call, at each batch size. The
image codes only: the dVAE decode is not included (a few milliseconds per image at these sizes).
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from dalle_jax.benchmarks.timing import device_memory_gib, time_calls
from dalle_jax.generation import sampling
from dalle_jax.models.dalle.transformer import DalleTransformer

SAMPLERS = {"cached": sampling.sample_codes, "uncached": sampling.sample_codes_uncached}


def _timed(fn, state, text, seconds):
    key = jax.random.key(0)
    start = time.perf_counter()
    jax.block_until_ready(fn(state, text, key))
    first = time.perf_counter() - start  # compile + one run
    per_call = time_calls(lambda: fn(state, text, key), warmup=0, min_seconds=seconds, min_calls=1)
    return per_call, first


def run(config: ml_collections.ConfigDict, *, batches=(1, 8), seconds: float = 5.0,
        uncached: bool = True) -> dict:
    """{'results': [{batch, cached_s_per_image, uncached_s_per_image, speedup}], …}."""
    m = config.model
    model = DalleTransformer.from_config(m)
    graphdef, state = nnx.split(model)
    settings = sampling.Settings(top_k=max(1, m.image_vocab // 2))  # the peer's filter_thres 0.5
    results = []
    for b in batches:
        text = jax.random.randint(jax.random.key(b), (b, m.text_len), 1, m.text_vocab)
        row = {"batch": b}
        for name, sampler in SAMPLERS.items():
            if name == "uncached" and not uncached:
                continue
            fn = jax.jit(lambda s, t, k, f=sampler: f(nnx.merge(graphdef, s), t, k, settings))
            per_call, first = _timed(fn, state, text, seconds)
            row[f"{name}_s_per_image"] = per_call / b
            row[f"{name}_codes_per_s"] = b * m.grid ** 2 / per_call
            row[f"{name}_first_call_s"] = first  # compile + one call
        if uncached:
            row["speedup"] = row["uncached_s_per_image"] / row["cached_s_per_image"]
        results.append(row)
    return {"benchmark": "sample", "preset": config.get("preset"), "text_len": m.text_len,
            "grid": m.grid, "image_tokens": m.grid ** 2, "depth": m.depth, "width": m.width,
            "pattern": m.pattern, "attention": m.attention, "top_k": settings.top_k,
            "device": jax.devices()[0].device_kind, "platform": jax.devices()[0].platform,
            "dtype": str(jnp.dtype(model.dtype)), "device_memory_gib": device_memory_gib(),
            "results": results}

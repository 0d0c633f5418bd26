"""`bench dvae`: training and encoding throughput of a stage-1 config, against a matmul peak.

Runs on random images of the config's resolution and batch (no data preparation), on the default
devices with the config's mesh. Reports images/s, the FLOPs XLA counts per step, the achieved
FLOP/s and its ratio to a float32 matmul peak measured in the same run, and the time of a step of
the decoder-only phase (`decoder_phase`) against a joint step.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from dalle_jax.benchmarks.timing import compiled_flops, matmul_peak, time_calls, time_train_steps
from dalle_jax.parallel.mesh import batch_sharding, make_mesh
from dalle_jax.training.dvae import steps as dvae_steps
from dalle_jax.training.dvae import trainer as dvae_trainer
from dalle_jax.training.dvae.schedules import dvae_schedules


def run(config: ml_collections.ConfigDict, *, seconds: float = 5.0) -> dict:
    """Measures the config's train step and encoder; returns the JSON-able figures."""
    mesh = make_mesh(dict(config.mesh))
    spec, state = dvae_trainer.build(config, mesh)
    b, r = config.data.global_batch_size, config.data.resolution
    images = jax.device_put(
        np.random.default_rng(0).integers(0, 256, (b, r, r, 3), dtype=np.uint8),
        batch_sharding(mesh, 4))
    schedules = dvae_schedules(config)
    step = dvae_steps.make_train_step(spec, config, schedules)
    train_s, train_flops, state = time_train_steps(step, state, images, seconds=seconds)
    decoder_step = dvae_steps.make_decoder_step(spec, config, schedules)
    decoder_s, decoder_flops, state = time_train_steps(decoder_step, state, images, seconds=seconds)
    model = spec.merge(state["ema"], state["extra"])
    encode = jax.jit(lambda m, x: m.encode(x.astype(jnp.float32) / 255.0))
    encode_flops = compiled_flops(encode, model, images)
    encode_s = time_calls(lambda: encode(model, images), min_seconds=seconds)
    peak = matmul_peak()
    return {
        "benchmark": "dvae", "preset": config.get("preset"), "quantizer": config.model.quantizer,
        "devices": jax.device_count(), "platform": jax.devices()[0].platform,
        "batch": b, "resolution": r,
        "train_step_s": train_s, "train_images_per_s": b / train_s,
        "train_flops_per_step": train_flops, "train_flops_per_s": train_flops / train_s,
        "decoder_step_s": decoder_s, "decoder_flops_per_step": decoder_flops,
        "decoder_step_vs_train_step": decoder_s / train_s,
        "encode_images_per_s": b / encode_s, "encode_flops_per_s": encode_flops / encode_s,
        "matmul_peak_flops_per_s": peak,
        "train_fraction_of_peak": train_flops / train_s / peak,
        "encode_fraction_of_peak": encode_flops / encode_s / peak,
    }

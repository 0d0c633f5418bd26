"""Runs N train steps of the tiny transformer on a fixed global batch and prints the losses.

Started once per process by tests/test_multihost.py (with DALLE_JAX_* set for two processes, or
not at all for one). Each process feeds its own rows of the global batch.
"""

import json
import os
import sys

os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from dalle_jax.parallel.distributed import initialize_from_env  # noqa: E402
from dalle_jax.parallel.mesh import batch_sharding, make_mesh  # noqa: E402
from dalle_jax.models.transformer import DalleTransformer  # noqa: E402
from dalle_jax.training import dalle_optimizer, dalle_steps, train_state  # noqa: E402
from tests.helpers.configs import load  # noqa: E402


def main(steps: int) -> None:
    initialize_from_env()
    config = load("dalle", "tiny")
    m, b = config.model, config.data.global_batch_size
    mesh = make_mesh({"data": 2, "fsdp": 2, "tensor": 1})
    tx = dalle_optimizer.make(config.optimizer)
    spec, state = train_state.create(lambda: DalleTransformer.from_config(m), tx, mesh,
                                     dict(config.partitioning.rules))
    step = dalle_steps.make_train_step(spec, config, dalle_optimizer.learning_rate(config.optimizer))
    rows = slice(jax.process_index() * b // jax.process_count(),
                 (jax.process_index() + 1) * b // jax.process_count())
    losses = []
    for i in range(steps):
        rng = np.random.default_rng(i)
        full = {"text": rng.integers(1, m.text_vocab, (b, m.text_len)).astype(np.int32),
                "image": rng.integers(0, m.image_vocab, (b, m.grid, m.grid)).astype(np.int32)}
        batch = {k: jax.make_array_from_process_local_data(batch_sharding(mesh, v.ndim), v[rows],
                                                           v.shape) for k, v in full.items()}
        state, metrics = step(state, batch)
        losses.append(float(metrics["loss"]))
    print(json.dumps({"process": jax.process_index(), "processes": jax.process_count(),
                      "devices": jax.device_count(), "losses": losses}), flush=True)


if __name__ == "__main__":
    main(int(sys.argv[1]))

"""Stage 1 in the shared training loop: `train_and_evaluate(config, workdir)`.

The model and optimizer (`build`), the jitted steps, validation of the parameter EMA with argmax
codes, and reconstruction grids; `training.loop` does the rest (data, checkpoints and resuming,
metrics, progress bar, SIGTERM).
"""

from __future__ import annotations

import logging
import os
from typing import Iterator

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from dalle_jax import visualize
from dalle_jax.models.dvae.model import DVAE
from dalle_jax.parallel import hosts
from dalle_jax.parallel.partitioning import replicated
from dalle_jax.models.dvae.quantizers import CodebookVar
from dalle_jax.training import checkpoint, loop, optimizer, train_state
from dalle_jax.training.dvae import steps as dvae_steps
from dalle_jax.training.dvae.schedules import decoder_phase_start, dvae_schedules


def build(config: ml_collections.ConfigDict, mesh, *,
          abstract: bool = False) -> tuple[train_state.StateSpec, dict]:
    """(spec, freshly initialised state) for a stage-1 config, on `mesh` (`abstract`: shapes and
    shardings only, see `train_state.create`)."""
    schedules = dvae_schedules(config)
    tx = optimizer.adamw(config.optimizer, schedules["learning_rate"])
    return train_state.create(
        lambda: DVAE.from_config(config.model, seed=config.train.seed), tx, mesh,
        dict(config.partitioning.rules), extra_filter=CodebookVar, abstract=abstract,
    )


def task(config: ml_collections.ConfigDict) -> loop.Task:
    """The stage-1 pieces of the shared training loop."""

    def train_step(spec):
        schedules = dvae_schedules(config)
        step = dvae_steps.make_train_step(spec, config, schedules)
        start = decoder_phase_start(config)
        if not start:
            return lambda state, batch: step(state, batch["image"])
        decoder_step = dvae_steps.make_decoder_step(spec, config, schedules)
        counter = {}  # the step on the host: reading state["step"] every step would wait for it

        def either(state, batch):
            first = "next" not in counter
            if first:
                counter["next"] = int(state["step"])
            counter["next"] += 1
            in_phase = counter["next"] > start
            if in_phase and (first or counter["next"] == start + 1):
                logging.info("%s step %d: the decoder alone, on the frozen encoder's codes",
                             "resuming in the phase that began at" if counter["next"] > start + 1
                             else "from", start + 1)
            return (decoder_step if in_phase else step)(state, batch["image"])

        return either

    compiled = {}

    def run_eval(spec, state, batches):
        if "eval" not in compiled:  # one jitted eval step for the run
            compiled["eval"] = dvae_steps.make_eval_step(spec, config.model)
        return evaluate(spec, state, compiled["eval"], batches, config.train.eval_batches)

    def images(spec, state, batch, folder, step):
        reconstruction_grid(spec, state, batch["image"],
                            os.path.join(folder, f"recon_{step:07d}.png"), step)

    return loop.Task(name="dvae", build=lambda mesh: build(config, mesh), train_step=train_step,
                     evaluate=run_eval, images=images)


def restore_or_init(config, workdir, mesh, ckpt: checkpoint.Checkpointer | None = None):
    """(spec, state, data_state or None): the newest checkpoint of `workdir`, else a new state."""
    return loop.restore_or_init(task(config), workdir, mesh, ckpt)


def evaluate(spec, state, eval_step, batches: Iterator[dict], num_batches: int) -> dict:
    """Validation metrics of the EMA parameters over up to `num_batches` batches."""
    sums = None
    for _, batch in zip(range(num_batches), batches):
        out = eval_step(state["ema"], state["extra"], batch["image"])
        sums = out if sums is None else jax.tree.map(jnp.add, sums, out)
    if sums is None:
        raise ValueError("the evaluation split gave no batch")
    return dvae_steps.summarize(jax.device_get(sums))


def reconstruction_grid(spec, state, images, path: str, step: int) -> str:
    """PNG of the first 8 images of a batch (top row) beside their EMA reconstructions (bottom
    row). `images` may be a global batch array split over hosts: every process computes, the
    result is replicated to all, and the first process writes the file."""
    model = spec.merge(state["ema"], state["extra"])

    def first_and_recon(m, images):
        first = images[:8]
        return first, m.decode(m.encode(first.astype(jnp.float32) / 255.0))

    first, recon = jax.jit(first_and_recon, out_shardings=replicated(spec.mesh))(model, images)
    first, recon = np.asarray(first), np.asarray(recon)
    both = np.concatenate([first, (recon * 255).round().astype(np.uint8)])
    labels = ["original"] * len(first) + ["reconstruction"] * len(first)
    if hosts.is_primary():
        visualize.save_grid(both, labels, path, columns=len(first), title=f"step {step}")
    return path


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Trains until `config.train.num_steps`; returns the last validation metrics."""
    return loop.run(config, workdir, task(config))

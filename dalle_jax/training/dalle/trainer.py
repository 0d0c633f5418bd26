"""Stage 2 in the shared training loop: `train_and_evaluate(config, workdir)`.

Reads an encoded dataset (`data.dataset='image_codes'`: codes and captions written by
`python -m dalle_jax.data encode`), so the dVAE never runs while the transformer trains. Builds
the transformer and the paper's optimizer on the mesh; validation reports the losses of the
parameter EMA. `training.loop` does the rest (checkpoints, resuming, metrics, SIGTERM).
"""

from __future__ import annotations

from typing import Iterator

import jax
import jax.numpy as jnp
import ml_collections

from dalle_jax.models.dalle.transformer import DalleTransformer
from dalle_jax.training import loop, train_state
from dalle_jax.training.dalle import optimizer as dalle_optimizer
from dalle_jax.training.dalle import steps as dalle_steps


def build(config: ml_collections.ConfigDict, mesh, *,
          abstract: bool = False) -> tuple[train_state.StateSpec, dict]:
    """(spec, freshly initialised state) for a stage-2 config, on `mesh` (`abstract`: shapes and
    shardings only, see `train_state.create`)."""
    tx = dalle_optimizer.make(config.optimizer)
    return train_state.create(
        lambda: DalleTransformer.from_config(config.model, seed=config.train.seed), tx, mesh,
        dict(config.partitioning.rules), abstract=abstract)


def _inputs(config, batch: dict) -> dict:
    """{'text', 'image'} device arrays of a loader batch; a wrong kind or grid is named."""
    if "codes" not in batch:
        raise ValueError(f"data.dataset={config.data.dataset!r} gives images, not codes; stage 2 "
                         "reads an encoded dataset (data.dataset='image_codes', written by "
                         "`python -m dalle_jax.data encode`)")
    m = config.model
    grid = batch["codes"].shape[1:]
    if grid != (m.grid, m.grid):
        raise ValueError(f"the dataset's codes are {grid[0]}×{grid[1]} but model.grid={m.grid}")
    return {"text": batch["text"], "image": batch["codes"]}


def evaluate(eval_step, params, batches: Iterator[dict], num_batches: int, config) -> dict:
    """Mean validation metrics of `params` over up to `num_batches` batches."""
    return loop.mean_over_batches(lambda b: eval_step(params, _inputs(config, b)), batches,
                                  num_batches)


def task(config: ml_collections.ConfigDict) -> loop.Task:
    """The stage-2 pieces of the shared training loop."""
    compiled = {}

    def train_step(spec):
        step = dalle_steps.make_train_step(spec, config,
                                           dalle_optimizer.learning_rate(config.optimizer))
        checked = {}

        def run(state, batch):
            inputs = _inputs(config, batch)
            if not checked:  # the first batch: codes must fit the image vocabulary
                top = int(jax.jit(jnp.max)(inputs["image"]))  # every device holds the max
                if top >= config.model.image_vocab:
                    raise ValueError(f"a code reaches {top} but model.image_vocab="
                                     f"{config.model.image_vocab}")
                checked["done"] = True
            return step(state, inputs)

        return run

    def run_eval(spec, state, batches):
        if "eval" not in compiled:
            compiled["eval"] = dalle_steps.make_eval_step(spec, config)
        return evaluate(compiled["eval"], state["ema"], batches, config.train.eval_batches, config)

    return loop.Task(name="dalle", build=lambda mesh: build(config, mesh), train_step=train_step,
                     evaluate=run_eval)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Trains until `config.train.num_steps`; returns the last validation metrics."""
    if config.text.text_len != config.model.text_len:
        raise ValueError(f"text.text_len={config.text.text_len} but model.text_len="
                         f"{config.model.text_len}; they must agree")
    if config.text.vocab_size > config.model.text_vocab:
        raise ValueError(f"text.vocab_size={config.text.vocab_size} exceeds model.text_vocab="
                         f"{config.model.text_vocab}")
    return loop.run(config, workdir, task(config))

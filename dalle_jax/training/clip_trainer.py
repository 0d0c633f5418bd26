"""The reranker's training in the shared loop: `train_and_evaluate(config, workdir)`.

Reads (image, caption) batches of a prepared dataset, like stage 1, and trains `models.clip.Clip`
with the symmetric InfoNCE loss and AdamW (weight decay on matrices only); validation reports the
loss and in-batch retrieval accuracy (image → caption and caption → image, top-1) of the
parameter EMA. `training.loop` does the rest (checkpoints, resuming, metrics, SIGTERM).
"""

from __future__ import annotations

from typing import Iterator

import jax
import jax.numpy as jnp
import ml_collections
import optax

from dalle_jax.models.clip import Clip
from dalle_jax.parallel.mesh import batch_sharding
from dalle_jax.parallel.partitioning import activation_sharding, replicated
from dalle_jax.training import loop, train_state
from dalle_jax.training.clip_loss import clip_loss

# Parameters that are not decayed: gains, biases, position embeddings, the temperature.
UNDECAYED = ("scale", "bias", "pos", "logit_scale")


def decay_mask(params: dict) -> dict:
    """True for weight matrices and token embeddings, by parameter name."""
    return jax.tree_util.tree_map_with_path(
        lambda path, _: not any(s in str(getattr(path[-1], "key", path[-1])) for s in UNDECAYED),
        params)


def learning_rate(o: ml_collections.ConfigDict) -> optax.Schedule:
    """Linear warm-up to the peak, then cosine to `end_learning_rate` at `decay_steps`."""
    return optax.warmup_cosine_decay_schedule(0.0, o.learning_rate, max(1, o.warmup_steps),
                                              max(o.decay_steps, o.warmup_steps + 1),
                                              o.end_learning_rate)


def build(config: ml_collections.ConfigDict, mesh) -> tuple[train_state.StateSpec, dict]:
    """(spec, freshly initialised state) for a CLIP config, on `mesh`."""
    tx = train_state.adamw(config.optimizer, learning_rate(config.optimizer), decay_mask)
    return train_state.create(lambda: Clip.from_config(config.model, seed=config.train.seed), tx,
                              mesh, dict(config.partitioning.rules))


def _inputs(config, batch: dict) -> dict:
    """{'image', 'text'} of a loader batch, or a ValueError for a dataset of codes."""
    if "image" not in batch:
        raise ValueError(f"data.dataset={config.data.dataset!r} gives codes, not images; CLIP "
                         "trains on a prepared image dataset such as 'shapes'")
    return {"image": batch["image"], "text": batch["text"]}


def _shardings(mesh):
    return {"image": batch_sharding(mesh, 4), "text": batch_sharding(mesh, 2)}


def make_train_step(spec: train_state.StateSpec, config: ml_collections.ConfigDict):
    """`step(state, {'image', 'text'}) → (state, metrics)`, jitted, state donated."""
    schedule = learning_rate(config.optimizer)

    def step(state, batch):
        def loss_fn(params):
            with activation_sharding(spec.mesh, config.partitioning.rules):
                return clip_loss(spec.merge(params, {}), batch["image"], batch["text"])

        (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"])
        new = train_state.apply_update(spec, state, grads, loss, config.optimizer.ema_decay)
        return new, dict(aux, loss=loss, finite=jnp.isfinite(loss).astype(jnp.float32),
                         grad_norm=optax.global_norm(grads),
                         learning_rate=schedule(state["step"]))

    jitted = jax.jit(step, in_shardings=(spec.shardings, _shardings(spec.mesh)),
                     out_shardings=(spec.shardings, replicated(spec.mesh)), donate_argnums=0)

    return lambda state, batch: jitted(state, _inputs(config, batch))


def make_eval_step(spec: train_state.StateSpec, config: ml_collections.ConfigDict):
    """`eval(params, batch) → metrics` of one batch."""
    def run(params, batch):
        with activation_sharding(spec.mesh, config.partitioning.rules):
            loss, aux = clip_loss(spec.merge(params, {}), batch["image"], batch["text"])
        return dict(aux, loss=loss)

    return jax.jit(run, in_shardings=(spec.shardings["ema"], _shardings(spec.mesh)),
                   out_shardings=replicated(spec.mesh))


def evaluate(eval_step, params, batches: Iterator[dict], num_batches: int, config) -> dict:
    """Mean validation metrics over up to `num_batches` batches (retrieval within each batch)."""
    return loop.mean_over_batches(lambda b: eval_step(params, _inputs(config, b)), batches,
                                  num_batches)


def task(config: ml_collections.ConfigDict) -> loop.Task:
    """The CLIP pieces of the shared training loop."""
    compiled = {}

    def run_eval(spec, state, batches):
        if "eval" not in compiled:
            compiled["eval"] = make_eval_step(spec, config)
        return evaluate(compiled["eval"], state["ema"], batches, config.train.eval_batches, config)

    return loop.Task(name="clip", build=lambda mesh: build(config, mesh),
                     train_step=lambda spec: make_train_step(spec, config), evaluate=run_eval)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Trains until `config.train.num_steps`; returns the last validation metrics."""
    m = config.model
    if (config.text.text_len, config.data.resolution) != (m.text_len, m.resolution):
        raise ValueError(f"text.text_len={config.text.text_len} and data.resolution="
                         f"{config.data.resolution} must equal model.text_len={m.text_len} and "
                         f"model.resolution={m.resolution}")
    if config.text.vocab_size > m.text_vocab:
        raise ValueError(f"text.vocab_size={config.text.vocab_size} exceeds model.text_vocab="
                         f"{m.text_vocab}")
    return loop.run(config, workdir, task(config))

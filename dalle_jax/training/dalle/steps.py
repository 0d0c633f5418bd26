"""Jitted stage-2 steps: a train step (loss, optimizer, parameter EMA) and an eval step.

Both take the state on the shardings of `StateSpec` and batches split over the mesh's batch axes:
`text` (B, T) int32 and `image` (B, g, g) int32 codes; inside, the model's activations are pinned
by the config's partitioning rules (`partitioning.activation_sharding`). The state is donated. A non-finite loss
leaves the state as it was and says so (`finite` = 0), so the loop can stop or count it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import optax

from dalle_jax.parallel.mesh import batch_sharding
from dalle_jax.parallel.partitioning import activation_sharding, replicated
from dalle_jax.training import train_state
from dalle_jax.training.dalle.loss import dalle_loss


def _batch_shardings(mesh):
    return {"text": batch_sharding(mesh, 2), "image": batch_sharding(mesh, 3)}


def make_train_step(spec: train_state.StateSpec, config: ml_collections.ConfigDict,
                    learning_rate: optax.Schedule):
    """`step(state, batch) → (state, metrics)`, jitted with explicit shardings, state donated."""
    weights = dict(text_weight=config.loss.text_weight, image_weight=config.loss.image_weight)

    def step(state, batch):
        def loss_fn(params):
            with activation_sharding(spec.mesh, config.partitioning.rules):
                return dalle_loss(spec.merge(params, {}), batch["text"], batch["image"], **weights)

        (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"])
        new = train_state.apply_update(spec, state, grads, loss, config.optimizer.ema_decay,
                                       value=loss)
        t, finite = state["step"], jnp.isfinite(loss)
        metrics = dict(aux, loss=loss, finite=finite.astype(jnp.float32),
                       grad_norm=optax.global_norm(grads),
                       learning_rate=train_state.learning_rate_in_use(
                           state["opt_state"], new["opt_state"], learning_rate, t))
        return new, metrics

    return jax.jit(step, in_shardings=(spec.shardings, _batch_shardings(spec.mesh)),
                   out_shardings=(spec.shardings, replicated(spec.mesh)), donate_argnums=0)


def make_eval_step(spec: train_state.StateSpec, config: ml_collections.ConfigDict):
    """`eval(params, batch) → metrics` of one batch (the loss terms, no update)."""
    weights = dict(text_weight=config.loss.text_weight, image_weight=config.loss.image_weight)

    def run(params, batch):
        with activation_sharding(spec.mesh, config.partitioning.rules):
            loss, aux = dalle_loss(spec.merge(params, {}), batch["text"], batch["image"],
                                   **weights)
        return dict(aux, loss=loss)

    return jax.jit(run, in_shardings=(spec.shardings["ema"], _batch_shardings(spec.mesh)),
                   out_shardings=replicated(spec.mesh))

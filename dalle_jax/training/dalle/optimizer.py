"""The paper's stage-2 optimizer as one optax chain, every number from `config.optimizer`.

clip by global norm → AdamW (weight decay on weight matrices only, not on gains, biases or
embeddings) with a linear warm-up, then either a cosine decay or `optax.contrib.reduce_on_plateau`
(which halves the step whenever the training loss stops falling; its update needs `value=loss`),
optionally wrapped in `optax.MultiSteps` to accumulate gradients over several batches (and then
`value` averaged over the same batches, so that the plateau judges the whole update's loss).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import optax

from dalle_jax.training import optimizer

# Parameters that are weight matrices (decayed); everything else is a gain, bias or embedding.
DECAYED = ("qkv", "out", "mlp_in", "mlp_out", "text_head", "image_head")
DECAYS = ("plateau", "cosine")


# True for the weight matrices of a transformer's parameter dict, by name.
decay_mask = optimizer.decay_mask(lambda name: name in DECAYED)


def learning_rate(o: ml_collections.ConfigDict) -> optax.Schedule:
    """Linear warm-up to the peak, then constant (`plateau`) or cosine to the end (`cosine`)."""
    if o.decay not in DECAYS:
        raise ValueError(f"optimizer.decay={o.decay!r}; choose one of {DECAYS}")
    if o.decay == "cosine":
        return optimizer.warmup_cosine(o)
    return optimizer.with_warmup(o, optax.constant_schedule(o.learning_rate))


def make(o: ml_collections.ConfigDict) -> optax.GradientTransformationExtraArgs:
    """The optimizer of `config.optimizer`; call its update with `value=loss`."""
    parts = optimizer.adamw_parts(o, learning_rate(o), decay_mask)
    if o.decay == "plateau":
        parts.append(optax.contrib.reduce_on_plateau(
            factor=o.plateau_factor, patience=o.plateau_patience, cooldown=o.plateau_cooldown,
            accumulation_size=o.plateau_window, min_scale=o.plateau_min_scale))
    tx = optax.chain(*parts)
    if o.accumulate_steps < 1:
        raise ValueError(f"optimizer.accumulate_steps must be ≥ 1, got {o.accumulate_steps}")
    if o.accumulate_steps > 1:
        tx = optax.MultiSteps(tx, every_k_schedule=o.accumulate_steps)
        if o.decay == "plateau":
            tx = mean_value(tx)
    return tx


class MeanValueState(NamedTuple):
    """`inner`'s state and the sum of `value` over the micro-batches of the update under way."""

    inner: optax.MultiStepsState
    total: jax.Array


def mean_value(tx: optax.MultiSteps) -> optax.GradientTransformationExtraArgs:
    """`tx` handed, in place of each call's `value`, its mean over the micro-batches accumulated
    so far: `optax.MultiSteps` keeps only the last call's inner state, so its inner chain
    (`reduce_on_plateau`) then sees the mean loss of the whole update, not its last batch's."""

    def init(params):
        return MeanValueState(tx.init(params), jnp.zeros((), jnp.float32))

    def update(updates, state, params=None, *, value, **extra_args):
        total = state.total + value
        updates, inner = tx.update(updates, state.inner, params,
                                   value=total / (state.inner.mini_step + 1), **extra_args)
        return updates, MeanValueState(inner, jnp.where(inner.mini_step == 0, 0.0, total))

    return optax.GradientTransformationExtraArgs(init, update)

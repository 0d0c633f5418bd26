"""The shared update of a train state and the loop's check of it: a skipped (non-finite) update
keeps the state but not the learning-rate schedule behind the step; the check names the step."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from dalle_jax.parallel.mesh import make_mesh
from dalle_jax.training import train_state


class _Scalar(nnx.Module):
    def __init__(self):
        self.w = nnx.Param(jnp.zeros((1,)))


def test_a_skipped_update_keeps_the_state_and_the_schedule_follows_the_step():
    lr = optax.piecewise_constant_schedule(1.0, {1: 0.5, 2: 0.25})  # 1, then 0.5, then 0.25
    tx = optax.chain(optax.clip_by_global_norm(10.0), optax.adam(lr))
    spec, state = train_state.create(_Scalar, tx, make_mesh({"data": 1}, jax.devices()[:1]), {})
    grads = {"w": jnp.ones((1,))}
    skipped = train_state.apply_update(spec, state, grads, jnp.float32(jnp.nan), 0.5)
    assert int(skipped["step"]) == 1
    np.testing.assert_array_equal(skipped["params"]["w"], state["params"]["w"])
    adam = skipped["opt_state"][1][0]
    assert int(adam.count) == 0 and float(adam.mu["w"][0]) == 0.0  # the moments are kept
    assert int(skipped["opt_state"][1][1].count) == 1  # the schedule is not
    applied = train_state.apply_update(spec, skipped, grads, jnp.float32(1.0), 0.5)
    # Adam's first step moves by the learning rate: the schedule's value at step 1, not step 0.
    np.testing.assert_allclose(applied["params"]["w"], [-0.5], rtol=1e-5)


def test_finiteness_is_read_one_step_late_and_names_the_step():
    from dalle_jax.training.loop import FinitenessCheck, NonFiniteLoss

    ok, bad = {"finite": jnp.float32(1.0)}, {"finite": jnp.float32(0.0)}
    check = FinitenessCheck("stop")
    check.push(1, ok)
    check.push(2, bad)  # held, not yet read: the host goes on to dispatch step 3
    with pytest.raises(NonFiniteLoss, match="at step 2"):
        check.push(3, ok)
    check = FinitenessCheck("stop")
    check.push(1, bad)
    with pytest.raises(NonFiniteLoss, match="at step 1"):
        check.settle()  # before logging or saving step 1
    skip = FinitenessCheck("skip")
    for step, m in enumerate([ok, bad, bad, ok], start=1):
        skip.push(step, m)
    skip.settle()
    assert skip.skipped == 2
    with pytest.raises(ValueError, match="on_nonfinite='ignore'"):
        FinitenessCheck("ignore")


class _Wide(nnx.Module):
    def __init__(self):
        self.w = nnx.Param(jnp.zeros((512, 512)))


def test_the_update_rewrites_the_donated_state_in_place():
    """Skipping a non-finite update must not make XLA copy the state it was donated: a select
    between the new and old state did (on the CPU backend, every buffer, live through the step)."""
    tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(1e-3))
    spec, state = train_state.create(_Wide, tx, make_mesh({"data": 1}, jax.devices()[:1]), {})
    grads = {"w": jnp.ones((512, 512))}
    update = jax.jit(lambda s, g, loss: train_state.apply_update(spec, s, g, loss, 0.5),
                     donate_argnums=0)
    compiled = update.lower(state, grads, jnp.float32(1.0)).compile()
    one_buffer = 512 * 512 * 4
    assert compiled.memory_analysis().temp_size_in_bytes < 2 * one_buffer  # the update itself
    new = compiled(state, grads, jnp.float32(1.0))
    assert int(new["step"]) == 1 and float(jnp.abs(new["params"]["w"]).max()) > 0

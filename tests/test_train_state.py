"""The shared update of a train state: a skipped (non-finite) update keeps the state but not the
learning-rate schedule behind the step."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
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

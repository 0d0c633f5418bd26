"""The train state as a pytree of pure dicts, created directly on the mesh with its shardings.

state = {
  "step":     int32 scalar,
  "params":   model parameters (nnx.Param), sharded by the config's logical-axis rules,
  "opt_state": optax state, each moment sharded like its parameter,
  "ema":      exponential moving average of the parameters (used for evaluation and sampling),
  "extra":    other model variables updated outside the optimizer (a VQ codebook), or {},
}
Functions of the state rebuild the module with `nnx.merge(graphdef, params, extra)`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import Mesh

from dalle_jax.parallel.partitioning import log_unsplit, replicated, state_shardings


@dataclasses.dataclass(frozen=True)
class StateSpec:
    """What a jitted step needs besides the state: the module graph, optimizer and shardings."""

    graphdef: Any
    tx: optax.GradientTransformation
    shardings: dict
    mesh: Mesh
    # The partitioning rules that could not apply to a parameter on this mesh (`Unsplit`s).
    unsplit: tuple = ()

    def merge(self, params: dict, extra: dict) -> nnx.Module:
        """The module carrying `params` and `extra`."""
        return nnx.merge(self.graphdef, params, extra) if extra else nnx.merge(self.graphdef, params)


def create(model_fn: Callable[[], nnx.Module], tx: optax.GradientTransformation, mesh: Mesh,
           rules: dict, extra_filter=None, *, abstract: bool = False) -> tuple[StateSpec, dict]:
    """Builds the model under `jit` straight into its shardings; returns (spec, state).

    With `abstract`, nothing is allocated: the state is `jax.ShapeDtypeStruct`s carrying their
    shardings, which is what `jax.jit(...).lower` takes to compile a step ahead of time (for a
    mesh of devices this process does not have, such as a TPU topology). Parameters that the
    rules cannot split as they ask are logged (`partitioning.log_unsplit`) and kept in the spec."""
    filters = (nnx.Param,) + ((extra_filter,) if extra_filter is not None else ())

    def split(model):
        graphdef, params, *extra = nnx.split(model, *filters)
        return graphdef, nnx.to_pure_dict(params), nnx.to_pure_dict(extra[0]) if extra else {}

    shapes = nnx.eval_shape(model_fn)
    graphdef, _, _ = split(shapes)
    abstract_params = nnx.split(shapes, *filters)[1]
    param_sh = state_shardings(abstract_params, rules, mesh)
    extra_sh = state_shardings(nnx.split(shapes, *filters)[2], rules, mesh) if extra_filter else {}
    abstract_opt = jax.eval_shape(tx.init, nnx.to_pure_dict(abstract_params))
    opt_sh = optax.tree_map_params(tx, lambda _, s: s, abstract_opt, param_sh,
                                   transform_non_params=lambda _: replicated(mesh))
    shardings = {"step": replicated(mesh), "params": param_sh, "opt_state": opt_sh,
                 "ema": param_sh, "extra": extra_sh}

    def init():
        _, params, extra = split(model_fn())
        return {"step": jnp.zeros((), jnp.int32), "params": params, "opt_state": tx.init(params),
                "ema": jax.tree.map(jnp.copy, params), "extra": extra}

    spec = StateSpec(graphdef, tx, shardings, mesh, tuple(log_unsplit(abstract_params, rules, mesh)))
    if abstract:
        return spec, abstract_state(spec, jax.eval_shape(init))
    return spec, jax.jit(init, out_shardings=shardings)()


def ema_update(ema: dict, params: dict, decay: float, step: jax.Array | None = None,
               apply: jax.Array | bool = True) -> dict:
    """d · ema + (1 − d) · params, leaf by leaf, with d = min(decay, (1 + step) / (10 + step)).

    The warm-up of d (as in TensorFlow's moving averages with `num_updates`) keeps the average of
    a short or young run from being mostly the initial parameters. Where `apply` is false
    (a micro-step that only accumulates gradients) d is 1 and the average stays as it is, exactly.
    """
    d = decay if step is None else jnp.minimum(decay, (1.0 + step) / (10.0 + step))
    d = jnp.where(apply, d, 1.0)
    return jax.tree.map(lambda e, p: d * e + (1.0 - d) * p, ema, params)


def _find(opt_state, kind):
    """The first sub-state of type `kind` in an optax state, or None."""
    for s in jax.tree.leaves(opt_state, is_leaf=lambda x: isinstance(x, kind)):
        if isinstance(s, kind):
            return s
    return None


def updates_done(opt_state) -> jax.Array | None:
    """How many parameter updates an `optax.MultiSteps` state has applied (None without one):
    with gradient accumulation, a step counts micro-batches and this counts updates."""
    multi = _find(opt_state, optax.MultiStepsState)
    return None if multi is None else multi.gradient_step


def learning_rate_in_use(before, after, schedule: optax.Schedule, step: jax.Array) -> jax.Array:
    """The learning rate of the update from optimizer state `before` to `after`: `schedule` at
    the optimizer's own count of updates (not of micro-batches; `step` where it keeps none),
    times the scale `reduce_on_plateau` applied, where there is one."""
    counter = _find(before, optax.ScaleByScheduleState)
    lr = schedule(step if counter is None else counter.count)
    plateau = _find(after, optax.contrib.ReduceLROnPlateauState)
    return lr if plateau is None else lr * plateau.scale


def apply_update(spec: StateSpec, state: dict, grads: dict, loss: jax.Array, ema_decay: float,
                 extra: dict | None = None, **update_args) -> dict:
    """The next state: the optimizer's update, the parameter EMA and `extra` (default: kept).

    A non-finite loss keeps the old params, optimizer state, EMA and extra; the step (and so the
    data) advances either way, and so do the optimizer's schedule counters, so that learning-rate
    schedules keep following the step as the other schedules do. `update_args` go to the optimizer
    (e.g. `value=loss`). Under gradient accumulation (`optax.MultiSteps`) the EMA moves, and its
    warm-up counts, with the parameter updates only, not with every micro-batch.
    """
    t = state["step"]

    def update(state, grads):
        updates, opt_state = spec.tx.update(grads, state["opt_state"], state["params"],
                                            **update_args)
        params = optax.apply_updates(state["params"], updates)
        done = updates_done(opt_state)
        if done is None:
            ema = ema_update(state["ema"], params, ema_decay, t)
        else:  # this micro-batch completed an update iff the count moved
            applied = done > updates_done(state["opt_state"])
            ema = ema_update(state["ema"], params, ema_decay, done - 1, apply=applied)
        return {"step": t + 1, "params": params, "opt_state": opt_state, "ema": ema,
                "extra": state["extra"] if extra is None else extra}

    def keep(state, grads):
        del grads
        return {**state, "step": t + 1, "opt_state": _advance_schedules(state["opt_state"])}
    # A branch rather than a select between new and old: selecting reads each old buffer after
    # its donated slot is rewritten, so XLA copies the whole state at the top of the step (at
    # `small` on the CPU: 0.07 GiB more peak memory and about 3% of the step).
    return jax.lax.cond(jnp.isfinite(loss), update, keep, state, grads)


def _advance_schedules(opt_state):
    """`opt_state` with each `ScaleByScheduleState` counter advanced by one update."""
    def advance(s):
        if isinstance(s, optax.ScaleByScheduleState):
            return optax.ScaleByScheduleState(count=optax.safe_increment(s.count))
        return s
    return jax.tree.map(advance, opt_state,
                        is_leaf=lambda x: isinstance(x, optax.ScaleByScheduleState))


def in_dtype(abstract: dict, dtype) -> dict:
    """ShapeDtypeStructs `abstract` with their floating-point leaves in `dtype` (same shapes and
    shardings): a restore or compile target for parameters read in the compute dtype."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(
        x.shape, dtype if jnp.issubdtype(x.dtype, jnp.floating) else x.dtype,
        sharding=x.sharding), abstract)


def abstract_state(spec: StateSpec, state_like: dict) -> dict:
    """ShapeDtypeStructs with shardings, the restore target for a checkpoint of this state."""
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                        state_like, spec.shardings)

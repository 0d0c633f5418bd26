"""Stage-2 training steps: loss falls, the optimizer follows the paper, and sharded equals single."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from dalle_jax.models.dalle.transformer import DalleTransformer
from dalle_jax.parallel.mesh import make_mesh
from dalle_jax.parallel.partitioning import describe
from dalle_jax.training import train_state
from dalle_jax.training.dalle import optimizer as dalle_optimizer
from dalle_jax.training.dalle import steps as dalle_steps
from tests.helpers.configs import load


def _setup(config, axes, devices=None):
    mesh = make_mesh(axes, devices)
    tx = dalle_optimizer.make(config.optimizer)
    spec, state = train_state.create(lambda: DalleTransformer.from_config(config.model), tx, mesh,
                                     dict(config.partitioning.rules))
    step = dalle_steps.make_train_step(spec, config, dalle_optimizer.learning_rate(config.optimizer))
    return spec, state, step


def _batch(config, seed=0):
    m, b = config.model, config.data.global_batch_size
    rng = np.random.default_rng(seed)
    text = rng.integers(1, m.text_vocab, (b, m.text_len)).astype(np.int32)
    text[:, m.text_len // 2:] = 0
    image = rng.integers(0, m.image_vocab, (b, m.grid, m.grid)).astype(np.int32)
    return {"text": text, "image": image}


def test_loss_falls_on_a_fixed_batch():
    config = load("dalle", "tiny", **{"optimizer.learning_rate": 3e-3, "optimizer.decay_steps": 100})
    _, state, step = _setup(config, {"data": 1}, jax.devices()[:1])
    batch = _batch(config)
    losses = []
    for _ in range(30):
        state, m = step(state, batch)
        losses.append(float(m["loss"]))
    assert losses[-1] < 0.7 * losses[0]
    assert m["bits_per_image_token"] == pytest.approx(float(m["image_loss"]) / np.log(2), rel=1e-5)


def test_weight_decay_only_on_weight_matrices():
    config = load("dalle", "tiny")
    model = DalleTransformer.from_config(config.model)
    from flax import nnx
    mask = dalle_optimizer.decay_mask(nnx.to_pure_dict(nnx.state(model, nnx.Param)))
    assert mask["layers"]["qkv"] and mask["layers"]["mlp_out"] and mask["image_head"]
    assert not mask["layers"]["ln1_scale"] and not mask["layers"]["qkv_bias"]
    assert not mask["text_embed"] and not mask["row_embed"]


def test_learning_rate_warms_up_linearly_then_decays():
    o = load("dalle", "paper").optimizer
    lr = dalle_optimizer.learning_rate(o)
    assert float(lr(0)) == 0.0
    assert float(lr(2_500)) == pytest.approx(2.25e-4)
    assert float(lr(5_000)) == pytest.approx(4.5e-4)
    assert float(lr(500_000)) == pytest.approx(4.5e-4)  # plateau: halving comes from the loss
    o.decay = "cosine"
    assert float(dalle_optimizer.learning_rate(o)(o.decay_steps)) == pytest.approx(4.5e-6)
    o.decay = "step"
    with pytest.raises(ValueError, match="'step'"):
        dalle_optimizer.learning_rate(o)


def test_reduce_on_plateau_halves_the_step_when_the_loss_stalls():
    o = load("dalle", "tiny").optimizer
    o.update(decay="plateau", warmup_steps=1, plateau_patience=1, plateau_cooldown=0,
             plateau_window=1, grad_clip_norm=0.0, weight_decay=0.0)
    tx = dalle_optimizer.make(o)
    params = {"w": jnp.ones(3)}
    state = tx.init(params)
    sizes = []
    for _ in range(6):
        updates, state = tx.update({"w": jnp.ones(3)}, state, params, value=jnp.float32(1.0))
        sizes.append(float(jnp.abs(updates["w"][0])))
    assert sizes[-1] < 0.6 * sizes[1]


@pytest.mark.parametrize("axes", [{"data": 8, "fsdp": 1, "tensor": 1},
                                  {"data": 2, "fsdp": 2, "tensor": 2},
                                  {"data": 1, "fsdp": 4, "tensor": 2}])
def test_sharded_step_equals_single_device(axes):
    config = load("dalle", "tiny")
    batch = _batch(config, 1)
    _, single, step1 = _setup(config, {"data": 1}, jax.devices()[:1])
    spec, sharded, step8 = _setup(config, axes)
    single, m1 = step1(single, batch)
    sharded, m8 = step8(sharded, batch)
    assert float(m8["loss"]) == pytest.approx(float(m1["loss"]), rel=1e-5)
    for a, b in zip(jax.tree.leaves(sharded["params"]), jax.tree.leaves(single["params"])):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=2e-6)
    specs = describe(spec.shardings["params"])
    fsdp, tensor = "fsdp", "tensor"  # the rules name them; on a size-1 axis that is a no-op
    assert specs["layers/qkv"] == str(jax.sharding.PartitionSpec(None, fsdp, None, tensor, None))
    assert specs["layers/mlp_in"] == str(jax.sharding.PartitionSpec(None, fsdp, tensor))
    assert specs["image_head"] == str(jax.sharding.PartitionSpec(fsdp, tensor))
    assert sharded["params"]["layers"]["mlp_out"].sharding.spec == jax.sharding.PartitionSpec(
        None, tensor, fsdp)


def test_gradient_accumulation_equals_one_big_batch():
    kw = {"optimizer.warmup_steps": 0, "optimizer.learning_rate": 1e-2}
    big = load("dalle", "tiny", **kw)
    small = load("dalle", "tiny", **{**kw, "optimizer.accumulate_steps": 2,
                                     "data.global_batch_size": 4})
    batch = _batch(big, 2)
    one = jax.devices()[:1]
    _, state_big, step_big = _setup(big, {"data": 1}, one)
    _, state_acc, step_acc = _setup(small, {"data": 1}, one)
    state_big, m_big = step_big(state_big, batch)
    before = jax.device_get(state_acc["params"])
    ema_before = jax.device_get(state_acc["ema"])
    state_acc, m1 = step_acc(state_acc, jax.tree.map(lambda x: x[:4], batch))
    for key, was in (("params", before), ("ema", ema_before)):  # the first half only accumulates
        for a, b in zip(jax.tree.leaves(state_acc[key]), jax.tree.leaves(was)):
            np.testing.assert_array_equal(np.asarray(a), b)
    state_acc, m2 = step_acc(state_acc, jax.tree.map(lambda x: x[4:], batch))
    changed = 0
    for key in ("params", "ema"):  # the EMA moves once, with the warm-up of a first update
        for a, b, c in zip(jax.tree.leaves(state_acc[key]), jax.tree.leaves(state_big[key]),
                           jax.tree.leaves(before)):
            # Adam's first step is about ±lr per weight whatever the gradient's size, so a weight
            # whose gradient is near 0 takes a sign and size that rounding can change: allow a
            # few such weights 1% of lr; a wrong update would move most weights by about lr.
            diff = np.abs(np.asarray(a) - np.asarray(b))
            assert diff.max() <= 1e-2 * 1e-2 and (diff > 1e-5).mean() <= 1e-3, (key, diff.max())
            changed += int(not np.allclose(np.asarray(b), c))
    assert changed > 20  # the update happened, and it is the big batch's update
    # Both micro-batches log the learning rate of the one update they make (schedule at update 0).
    assert float(m1["learning_rate"]) == float(m2["learning_rate"]) == float(m_big["learning_rate"])
    state_acc, m3 = step_acc(state_acc, jax.tree.map(lambda x: x[:4], batch))
    assert float(m3["learning_rate"]) == pytest.approx(
        float(dalle_optimizer.learning_rate(small.optimizer)(1)))


def test_the_plateau_judges_the_mean_loss_of_an_accumulated_update():
    """With gradients accumulated over micro-batches, `reduce_on_plateau` sees the mean of their
    losses (not the last one's), and the logged learning rate carries its scale."""
    o = load("dalle", "tiny").optimizer
    o.update(decay="plateau", warmup_steps=1, plateau_patience=1, plateau_cooldown=0,
             plateau_window=1, grad_clip_norm=0.0, weight_decay=0.0, accumulate_steps=2)
    tx, schedule = dalle_optimizer.make(o), dalle_optimizer.learning_rate(o)
    params = {"w": jnp.ones(3)}
    state = tx.init(params)
    logged = []
    for t, value in enumerate([1.0, 3.0] * 4):
        _, after = tx.update({"w": jnp.ones(3)}, state, params, value=jnp.float32(value))
        logged.append(float(train_state.learning_rate_in_use(state, after, schedule, t)))
        state = after
        if t == 1:
            plateau = state.inner.inner_opt_state[-1]
            assert float(plateau.best_value) == 2.0  # the mean of 1 and 3, not 3
    assert int(state.inner.gradient_step) == 4 and float(state.total) == 0.0
    # The same mean every update: a plateau, so the step halves, and the log says so.
    scale = float(state.inner.inner_opt_state[-1].scale)
    assert scale < 1.0 and logged[-1] == pytest.approx(float(schedule(3)) * scale)
    assert logged[0] == logged[1] == float(schedule(0))


def test_ema_update_is_the_warmed_up_average_and_a_held_step_keeps_it():
    ema, params = {"w": jnp.full(2, 4.0)}, {"w": jnp.zeros(2)}
    np.testing.assert_allclose(train_state.ema_update(ema, params, 0.99)["w"], 3.96)
    d = 1.0 / 10.0  # (1 + 0) / (10 + 0): a first update is mostly the new parameters
    np.testing.assert_allclose(train_state.ema_update(ema, params, 0.99, jnp.int32(0))["w"], 4 * d)
    d = min(0.99, 1001 / 1010)
    np.testing.assert_allclose(train_state.ema_update(ema, params, 0.99, jnp.int32(1000))["w"],
                               4 * d, rtol=1e-6)
    held = train_state.ema_update(ema, {"w": jnp.full(2, 1e30)}, 0.99, jnp.int32(3), apply=False)
    np.testing.assert_array_equal(held["w"], ema["w"])


def test_activations_are_pinned_by_the_rules():
    config = load("dalle", "tiny")
    spec, state, step = _setup(config, {"data": 2, "fsdp": 2, "tensor": 2})
    hlo = step.lower(state, _batch(config)).as_text()
    constraints = [line for line in hlo.splitlines() if "sharding_constraint" in line]
    batch = '{"data", "fsdp"}'
    assert any(f'[{batch}, {{}}, {{}}]> : tensor<8x32x32xf32>' in c for c in constraints)  # stream
    assert any(f'[{batch}, {{}}, {{}}, {{"tensor"}}, {{}}]>' in c for c in constraints)  # heads
    assert any(f'[{batch}, {{"tensor"}}]> : tensor<256x128xf32>' in c for c in constraints)  # mlp
    outside = DalleTransformer.from_config(config.model)  # a plain call, outside any step
    text, image = _batch(config)["text"], _batch(config)["image"]
    assert "sharding_constraint" not in jax.jit(outside.__call__).lower(text, image).as_text()


def test_a_nonfinite_loss_leaves_the_state_and_says_so():
    config = load("dalle", "tiny", **{"loss.text_weight": float("nan")})  # every loss is NaN
    _, state, step = _setup(config, {"data": 1}, jax.devices()[:1])
    before = jax.device_get(state)
    state, metrics = step(state, _batch(config))
    assert float(metrics["finite"]) == 0.0 and int(state["step"]) == 1  # the data still advances
    for a, b in zip(jax.tree.leaves(state["params"]), jax.tree.leaves(before["params"])):
        np.testing.assert_array_equal(np.asarray(a), b)
    # The optimizer state is kept too, but for the schedule's counter, which follows the step.
    is_schedule = lambda x: isinstance(x, optax.ScaleByScheduleState)  # noqa: E731
    split = lambda s: jax.tree.map(lambda x: None if is_schedule(x) else x, s, is_leaf=is_schedule)  # noqa: E731
    for a, b in zip(jax.tree.leaves(split(state["opt_state"])), jax.tree.leaves(split(before["opt_state"]))):
        np.testing.assert_array_equal(np.asarray(a), b)
    counts = [int(x.count) for x in jax.tree.leaves(state["opt_state"], is_leaf=is_schedule)
              if is_schedule(x)]
    assert counts == [1]


def test_image_accuracy_counts_the_codes_scored_highest():
    from dalle_jax.training.dalle.loss import _top_scored

    logits = jax.random.normal(jax.random.key(0), (3, 50, 17))
    targets = jax.random.randint(jax.random.key(1), (3, 50), 0, 17)
    targets = targets.at[0, :5].set(jnp.argmax(logits[0, :5], -1))  # a few sure hits
    hits = _top_scored(logits, targets)
    np.testing.assert_array_equal(hits, jnp.argmax(logits, -1) == targets)
    assert hits[0, :5].all() and 0 < float(hits.mean()) < 1

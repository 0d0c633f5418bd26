"""Stage 1's optional last phase: the decoder alone learns the frozen encoder's codes, on its own
learning-rate cosine, and a run switches to it at `decoder_phase.from_step`, resumes included."""

import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dalle_jax.parallel.mesh import make_mesh
from dalle_jax.training.dvae import steps as dvae_steps
from dalle_jax.training.dvae import trainer as dvae_trainer
from dalle_jax.training.metrics import read_metrics
from dalle_jax.training.dvae.schedules import dvae_schedules
from tests.helpers.configs import load
from tests.helpers.images import fixed_batch


def _leaves(tree):
    return [np.asarray(x) for x in jax.tree.leaves(tree)]


@pytest.mark.parametrize("overrides", [
    {"model.gumbel_logits": "tied", "model.likelihood": "gaussian"},
    {"model.quantizer": "vq"}], ids=["gumbel-tied", "vq"])
def test_decoder_step_trains_the_decoder_on_frozen_codes(overrides):
    config = load("dvae", "tiny", **{"optimizer.learning_rate": 3e-3, "optimizer.decay_steps": 1000,
                                     "decoder_phase.from_step": 5, **overrides})
    mesh = make_mesh({"data": 1}, jax.devices()[:1])
    spec, state = dvae_trainer.build(config, mesh)
    schedules = dvae_schedules(config)
    joint = dvae_steps.make_train_step(spec, config, schedules)
    decoder_step = dvae_steps.make_decoder_step(spec, config, schedules)
    images = jnp.asarray(fixed_batch())
    for _ in range(5):  # the joint phase leaves the parameters apart from their average
        state, _ = joint(state, images)
    frozen = {k: v for k, v in jax.device_get(state["ema"]).items() if k != "decoder"}
    extra = jax.device_get(state["extra"])
    decoder_before = _leaves(jax.device_get(state["params"]["decoder"]))
    assert any(np.abs(a - b).max() > 0 for a, b in zip(
        _leaves(frozen), _leaves({k: state["params"][k] for k in frozen})))
    losses = []
    for _ in range(30):
        state, metrics = decoder_step(state, images)
        losses.append(float(metrics["loss"]))
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:3]), losses
    assert int(state["step"]) == 35
    # The encoder (and gumbel codebook) sit at their step-5 average, in params and average alike.
    for key in ("params", "ema"):
        got = {k: v for k, v in jax.device_get(state[key]).items() if k != "decoder"}
        for a, b in zip(_leaves(got), _leaves(frozen), strict=True):
            np.testing.assert_array_equal(a, b)
    for a, b in zip(_leaves(jax.device_get(state["extra"])), _leaves(extra), strict=True):
        np.testing.assert_array_equal(a, b)  # a VQ codebook stops moving too
    assert all(np.abs(a - b).max() > 0 for a, b in zip(
        _leaves(jax.device_get(state["params"]["decoder"])), decoder_before))


def test_learning_rate_restarts_at_the_decoder_phase():
    config = load("dvae", "tiny", **{"optimizer.learning_rate": 3e-3, "optimizer.end_learning_rate": 1e-5,
                                     "optimizer.decay_steps": 100, "decoder_phase.from_step": 60,
                                     "decoder_phase.learning_rate": 2e-3})
    lr = dvae_schedules(config)["learning_rate"]
    main = dvae_schedules(load("dvae", "tiny", **{"optimizer.learning_rate": 3e-3,
                                                  "optimizer.end_learning_rate": 1e-5,
                                                  "optimizer.decay_steps": 100}))["learning_rate"]
    for t in (0, 30, 59):
        assert float(lr(t)) == pytest.approx(float(main(t)), rel=1e-6)
    assert float(lr(60)) == pytest.approx(2e-3, rel=1e-6)
    assert float(lr(80)) == pytest.approx(1e-5 + (2e-3 - 1e-5) / 2, rel=1e-5)  # half-way: the mean
    assert float(lr(100)) == pytest.approx(1e-5, rel=1e-5)


def test_decoder_phase_can_cut_the_joint_cosine_short():
    base = {"optimizer.learning_rate": 3e-3, "optimizer.end_learning_rate": 1e-5,
            "optimizer.decay_steps": 100}
    lr = dvae_schedules(load("dvae", "tiny", **base, **{
        "decoder_phase.from_step": 60, "decoder_phase.end_step": 150,
        "decoder_phase.learning_rate": 2e-3}))["learning_rate"]
    main = dvae_schedules(load("dvae", "tiny", **base))["learning_rate"]
    assert float(lr(59)) == pytest.approx(float(main(59)), rel=1e-6)  # the joint cosine over 100
    assert float(lr(60)) == pytest.approx(2e-3, rel=1e-6)
    assert float(lr(105)) == pytest.approx(1e-5 + (2e-3 - 1e-5) / 2, rel=1e-5)  # half of 60..150
    assert float(lr(150)) == pytest.approx(1e-5, rel=1e-5)


@pytest.mark.parametrize("from_step,message", [
    (100, "decoder_phase.from_step=100 must come before optimizer.decay_steps=100"),
    (-1, "decoder_phase.from_step must be 0 .off. or a step, got -1"),
    ((60, 50), "decoder_phase.from_step=60 must come before decoder_phase.end_step=50")])
def test_bad_decoder_phase_is_named(from_step, message):
    from_step, end_step = from_step if isinstance(from_step, tuple) else (from_step, 0)
    config = load("dvae", "tiny", **{"optimizer.decay_steps": 100, "decoder_phase.from_step": from_step,
                                     "decoder_phase.end_step": end_step})
    with pytest.raises(ValueError, match=message):
        dvae_schedules(config)


def test_a_run_switches_at_from_step_and_resumes_inside_the_phase(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    data = str(tmp_path / "data")
    kw = {"data.data_dir": data, "decoder_phase.from_step": 3, "decoder_phase.learning_rate": 5e-4}
    straight = load("dvae", "tiny", **kw)
    dvae_trainer.train_and_evaluate(straight, str(tmp_path / "straight"))
    assert "from step 4: the decoder alone" in caplog.text
    dvae_trainer.train_and_evaluate(load("dvae", "tiny", **kw, **{"train.num_steps": 4}),
                                    str(tmp_path / "resumed"))
    caplog.clear()
    dvae_trainer.train_and_evaluate(straight, str(tmp_path / "resumed"))  # 4 → 6
    assert "resuming in the phase that began at step 4: the decoder alone" in caplog.text
    want = read_metrics(tmp_path / "straight", "train")
    got = read_metrics(tmp_path / "resumed", "train")
    assert [r["loss"] for r in got] == [r["loss"] for r in want]
    # Steps 1–3 are joint (KL terms logged); 4–6 the decoder's, at the restarted learning rate.
    assert ["kl" in r for r in want] == [True] * 3 + [False] * 3
    assert want[3]["learning_rate"] == pytest.approx(5e-4, rel=1e-6)
    assert [r["step"] for r in read_metrics(tmp_path / "resumed", "eval")] == [3, 4, 6]

"""Stage-1 training: the loss falls, codes restart, schedules reach the metrics, resume continues
the same curve, and bad settings or a non-finite loss are named."""

import copy

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dalle_jax.models.dvae import pixels
from dalle_jax.parallel.mesh import make_mesh
from dalle_jax.training import loop
from dalle_jax.training.dvae import steps as dvae_steps
from dalle_jax.training.dvae import trainer as dvae_trainer
from dalle_jax.training.metrics import read_metrics
from dalle_jax.training.dvae.schedules import dvae_schedules
from tests.helpers.configs import load
from tests.helpers.images import fixed_batch


@pytest.mark.parametrize("quantizer,likelihood,logits", [
    ("gumbel", "logit_laplace", "conv"), ("gumbel", "gaussian", "tied"),
    ("vq", "logit_laplace", "conv"), ("vq", "gaussian", "conv")])
def test_loss_falls_on_a_fixed_batch(quantizer, likelihood, logits):
    # The tied codebook also restarts its unused codes (beyond the paper, as VQ does).
    config = load("dvae", "tiny", **{"model.quantizer": quantizer, "optimizer.learning_rate": 3e-3,
                                     "optimizer.decay_steps": 1000, "model.likelihood": likelihood,
                                     "model.gumbel_logits": logits,
                                     "gumbel.restart_below": 0.033 if logits == "tied" else 0.0})
    mesh = make_mesh({"data": 1}, jax.devices()[:1])
    spec, state = dvae_trainer.build(config, mesh)
    step = dvae_steps.make_train_step(spec, config, dvae_schedules(config))
    images = jnp.asarray(fixed_batch())
    if logits == "tied":
        _check_first_restarts(spec, state, step, images)
    losses, mses = [], []
    for _ in range(40):
        state, m = step(state, images)
        losses.append(float(m["loss"]))
        mses.append(float(m["mse"]))
    assert np.isfinite(losses).all()
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:3]), losses
    assert np.mean(mses[-5:]) < 0.85 * np.mean(mses[:3]), mses
    if logits == "tied":  # the shared codebook is learned by the optimizer
        assert "codebook" in str(jax.tree.structure(state["params"]["distance"]))
    if quantizer == "vq":  # the codebook moved by EMA, not by the optimizer
        assert "codebook" in state["extra"] and "codebook" not in str(jax.tree.structure(state["params"]))


def _check_first_restarts(spec, state, step, images):
    """Use starts at zero, so after the first step every code the batch uses fewer than
    restart_below × mean / (1 − decay) = 0.033 × 2 / 0.01 = 6.6 times is restarted, in the
    parameters and their EMA, at an encoder vector of the batch; the others moved by one AdamW
    step only."""
    model = spec.merge(state["params"], state["extra"])
    z = np.asarray(model.encoder(pixels.map_pixels(images / 255.0)))
    codes = np.asarray(jnp.argmax(model.distance(jnp.asarray(z)), -1)).reshape(-1)
    z = z.reshape(-1, z.shape[-1])
    kept = np.bincount(codes, minlength=64) >= 7
    before = np.asarray(state["params"]["distance"]["codebook"])
    state, metrics = step(jax.tree.map(jnp.copy, state), images)  # the step donates its input
    assert int(metrics["codes_restarted"]) == 64 - kept.sum() > 0
    for key in ("params", "ema"):
        book = np.asarray(state[key]["distance"]["codebook"])
        gaps = np.abs(book[:, None, :] - z[None]).max(-1).min(-1)  # to the nearest batch vector
        np.testing.assert_allclose(gaps[~kept], 0.0, atol=1e-5)
        assert np.abs(book[kept] - before[kept]).max() < 0.01  # lr 3e-3: one step, not a jump
    np.testing.assert_allclose(state["extra"]["distance"]["counts"][~kept], 0.033 * len(z) / 64)


def _run(config, workdir):
    return dvae_trainer.train_and_evaluate(config, str(workdir))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("data"))


def test_resume_continues_the_same_curve(tmp_path, data_dir):
    straight = load("dvae", "tiny", **{"data.data_dir": data_dir})
    _run(straight, tmp_path / "straight")
    # The resumed run reads its images from memory (data.cache): the same batches all the same.
    stopped = load("dvae", "tiny", **{"data.data_dir": data_dir, "train.num_steps": 3,
                                      "data.cache": True})
    _run(stopped, tmp_path / "resumed")
    _run(load("dvae", "tiny", **{"data.data_dir": data_dir, "data.cache": True}),
         tmp_path / "resumed")  # the same command again, 3 → 6
    want = read_metrics(tmp_path / "straight", "train")
    got = read_metrics(tmp_path / "resumed", "train")
    assert [r["step"] for r in got] == [1, 2, 3, 4, 5, 6]
    assert [r["loss"] for r in got] == [r["loss"] for r in want]  # exactly: same data, same noise
    # The schedules are what the logged metrics say, step by step.
    sched = dvae_schedules(straight)
    for r in want:
        assert r["temperature"] == pytest.approx(float(sched["temperature"](r["step"] - 1)), rel=1e-6)
        assert r["beta"] == pytest.approx(float(sched["beta"](r["step"] - 1)), rel=1e-5, abs=1e-7)
        assert r["learning_rate"] == pytest.approx(float(sched["learning_rate"](r["step"] - 1)), rel=1e-6)
        assert r["noise_scale"] == pytest.approx(float(sched["noise_scale"](r["step"] - 1)), rel=1e-6)
    evals = read_metrics(tmp_path / "resumed", "eval")
    assert [r["step"] for r in evals] == [3, 6]
    assert set(evals[-1]) >= {"psnr", "mse", "elbo_bpd", "perplexity", "codes_used"}
    assert (tmp_path / "resumed" / "images" / "recon_0000006.png").exists()


def test_gumbel_restarts_need_a_codebook():
    config = load("dvae", "tiny", **{"gumbel.restart_below": 0.03})
    with pytest.raises(ValueError, match="gumbel.restart_below=0.03 needs a codebook.*'conv'"):
        dvae_steps.make_train_step(None, config, {})
    for section, extra in (("gumbel", {"model.gumbel_logits": "tied", "gumbel.restart_below": 0.03}),
                           ("vq", {"model.quantizer": "vq"})):
        config = load("dvae", "tiny", **{f"{section}.restart_from": "nearest", **extra})
        with pytest.raises(ValueError, match=f"{section}.restart_from='nearest'; choose"):
            dvae_steps.make_train_step(None, config, {})


def test_marginal_temperature_must_be_positive():
    config = load("dvae", "tiny", **{"kl.marginal_temperature": 0.0})
    with pytest.raises(ValueError, match="kl.marginal_temperature must be positive, got 0.0"):
        dvae_steps.make_train_step(None, config, {})


def test_nonfinite_loss_stops_with_the_step(tmp_path, data_dir):
    config = load("dvae", "tiny", **{"data.data_dir": data_dir, "optimizer.learning_rate": float("nan")})
    config = copy.deepcopy(config)
    # A NaN learning rate makes the parameters NaN after the first update, so step 2's loss is NaN.
    with pytest.raises(loop.NonFiniteLoss, match="step 2"):
        _run(config, tmp_path / "nan")


def test_permute_channels_gives_each_image_one_of_the_six_orders():
    """`augment.permute_channels`: every image keeps its pixels with its channels reordered, each
    image by its own draw."""
    import itertools

    from dalle_jax.training.dvae.steps import permute_channels

    images = np.zeros((64, 2, 2, 3), np.uint8)
    images[..., 0], images[..., 1], images[..., 2] = 10, 20, 30
    out = np.asarray(permute_channels(jnp.asarray(images), jax.random.key(0)))
    orders = []
    for got in out:
        match = [o for o in itertools.permutations(range(3))
                 if np.array_equal(got, images[0][..., list(o)])]
        assert len(match) == 1
        orders.append(match[0])
    assert len(set(orders)) == 6  # 64 draws of 6 orders

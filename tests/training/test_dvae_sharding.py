"""Stage-1 partitioning: a train step sharded over 8 fake devices (batch over `data`, parameters
over `fsdp`) equals the single-device step, and parameters sit where the rules put them."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from dalle_jax.parallel.mesh import make_mesh
from dalle_jax.training.dvae import steps as dvae_steps
from dalle_jax.training.dvae import trainer as dvae_trainer
from dalle_jax.training.dvae.schedules import dvae_schedules
from tests.helpers.configs import load
from tests.helpers.images import fixed_batch


# gumbel with tied logits and vq with conv logits cover both quantizers and both logit heads.
@pytest.mark.parametrize("quantizer,logits", [("gumbel", "tied"), ("vq", "conv")])
def test_sharded_step_equals_single_device(quantizer, logits):
    # The batch-marginal KL is on: its mean must span the global batch, not each shard. The tied
    # codebook restarts most codes at the first step, from vectors drawn over the global batch.
    config = load("dvae", "tiny", **{"model.quantizer": quantizer, "kl.marginal_beta": 6.6,
                                     "kl.marginal_temperature": 0.25, "model.gumbel_logits": logits,
                                     "gumbel.restart_below": 0.03 if logits == "tied" else 0.0})
    images = jnp.asarray(fixed_batch(seed=1))
    results = {}
    for name, axes in {"single": {"data": 1}, "sharded": {"data": 2, "fsdp": 4}}.items():
        devices = jax.devices()[:1] if name == "single" else jax.devices()
        mesh = make_mesh(axes, devices)
        spec, state = dvae_trainer.build(config, mesh)
        step = dvae_steps.make_train_step(spec, config, dvae_schedules(config))
        state, metrics = step(state, images)
        results[name] = (jax.device_get(state), jax.device_get(metrics), state, spec)
    (s1, m1, _, _), (s8, m8, live, spec) = results["single"], results["sharded"]
    np.testing.assert_allclose(m8["loss"], m1["loss"], rtol=1e-5)
    if logits == "tied":
        assert m1["codes_restarted"] > 0 and m8["codes_restarted"] == m1["codes_restarted"]
        book = live["params"]["distance"]["codebook"]
        assert book.sharding.spec == jax.sharding.PartitionSpec("fsdp", None)  # over the vocabulary
    if quantizer == "gumbel":
        assert m1["marginal_kl"] > 0  # and the step put it into the loss at its weight
        np.testing.assert_allclose(m1["loss"], m1["nll"] + m1["beta"] * m1["kl"]
                                   + 6.6 * m1["marginal_kl"], rtol=1e-5)
        np.testing.assert_allclose(m8["marginal_kl"], m1["marginal_kl"], rtol=1e-5)
    # Adam divides by √v: a summation-order difference in a tiny gradient can move an update by
    # ~1e-5 of the lr; parameters (≈0.1) agree far inside that.
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5), s8, s1)
    # Parameters sit where the rules say: output channels over `fsdp` when 4 divides them.
    enc = live["params"]["encoder"]
    assert enc["input"]["w"].sharding.spec == jax.sharding.PartitionSpec(None, None, None, "fsdp")
    assert enc["input"]["w"].addressable_shards[0].data.shape[-1] == enc["input"]["w"].shape[-1] // 4
    out_b = live["params"]["decoder"]["output"]["b"]  # 6 channels: 4 does not divide, replicated
    assert out_b.shape == (6,) and out_b.sharding.spec == jax.sharding.PartitionSpec(None)
    # So do Adam's moments (wherever the optimizer chain nests them).
    mu = optax.tree_utils.tree_get(live["opt_state"], "mu")
    assert mu is not None
    assert mu["encoder"]["input"]["w"].sharding.spec == enc["input"]["w"].sharding.spec

"""The stage-1 objective: nll + β·KL per pixel value (the ELBO), its bits per dimension, and the
KL to the uniform prior against a NumPy reference."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from dalle_jax.models.dvae import pixels
from dalle_jax.models.dvae.model import DVAE
from dalle_jax.training.dvae.loss import bits_per_dim, dvae_loss


def test_a_uniform_density_costs_eight_bits_per_value():
    # Uniform on [0, 1] is the density 1 / (1 − 2ε) on the mapped pixels [ε, 1 − ε].
    assert float(bits_per_dim(jnp.float32(math.log(1 - 2 * pixels.EPS)))) == pytest.approx(8.0)
    # e-fold less likely: 1 / ln 2 bits more
    assert float(bits_per_dim(jnp.float32(math.log(1 - 2 * pixels.EPS) + 1))) == pytest.approx(
        8.0 + 1 / math.log(2))


def test_the_loss_is_nll_plus_beta_kl_per_value():
    model = DVAE(quantizer="gumbel", vocab_size=16, n_hid=8, n_blk_per_group=1,
                           n_init=8, embed_dim=8, rngs=nnx.Rngs(0))
    images = jax.random.randint(jax.random.key(1), (2, 16, 16, 3), 0, 256).astype(jnp.uint8)
    kw = dict(temperature=jnp.float32(1.0), straight_through=False)
    rng = jax.random.key(2)
    loss0, aux0 = dvae_loss(model, images, rng, beta=jnp.float32(0.0), **kw)
    loss3, aux3 = dvae_loss(model, images, rng, beta=jnp.float32(3.0), **kw)
    assert float(loss0) == pytest.approx(float(aux0["nll"]), rel=1e-6)
    assert float(aux3["nll"]) == pytest.approx(float(aux0["nll"]), rel=1e-6)  # same sample
    assert float(loss3) == pytest.approx(float(aux3["nll"]) + 3.0 * float(aux3["kl"]), rel=1e-6)

    logits = np.asarray(model.encode_mapped(pixels.map_pixels(pixels.to_unit(images))), np.float64)
    q = np.exp(logits - logits.max(-1, keepdims=True))
    q /= q.sum(-1, keepdims=True)
    per_position = (q * np.log(q)).sum(-1) + math.log(16)  # KL(q ‖ uniform over 16 codes)
    dims = 16 * 16 * 3
    assert float(aux3["kl"]) == pytest.approx(per_position.sum((1, 2)).mean() / dims, rel=1e-4)
    assert float(aux3["kl"]) > 0
    assert float(aux3["elbo_bpd"]) == pytest.approx(
        float(bits_per_dim(aux3["nll"] + aux3["kl"])), rel=1e-6)
    np.testing.assert_array_equal(np.asarray(aux3["codes"]), logits.argmax(-1).reshape(-1))

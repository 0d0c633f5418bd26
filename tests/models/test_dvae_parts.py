"""Stage-1 pieces against their definitions: likelihood, blocks, quantizers, schedules."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from dalle_jax.models.dvae import pixels
from dalle_jax.models.dvae.encoder_decoder import Encoder, ResBlock, max_pool_2x2
from dalle_jax.models.dvae.model import DVAE
from dalle_jax.models.dvae.quantizers import (DistanceLogits, draw_proportional, ema_update, gumbel_softmax,
                                         kl_to_uniform, marginal_kl_to_uniform, nearest_codes,
                                         straight_through)
from dalle_jax.training.dvae.schedules import cosine


def test_logit_laplace_is_the_papers_density():
    x = np.linspace(0.1, 0.9, 7)
    mu, b = 0.3, 0.7
    nll = pixels.logit_laplace_nll(jnp.asarray(x), jnp.full(7, mu), jnp.full(7, math.log(b)))
    logit = np.log(x / (1 - x))
    want = np.exp(-np.abs(logit - mu) / b) / (2 * b * x * (1 - x))
    np.testing.assert_allclose(np.exp(-np.asarray(nll)), want, rtol=1e-5)


def test_logit_laplace_integrates_to_one():
    x = np.linspace(1e-6, 1 - 1e-6, 400_001)
    nll = pixels.logit_laplace_nll(jnp.asarray(x), jnp.full_like(x, 0.4), jnp.full_like(x, -0.5))
    assert abs(np.trapezoid(np.exp(-np.asarray(nll, np.float64)), x) - 1.0) < 1e-3


def test_gaussian_likelihood_is_a_normal_density_around_the_reconstruction():
    x = jnp.linspace(0.1, 0.9, 7)
    stats = jnp.concatenate([jnp.full((7, 1), 0.3), jnp.full((7, 1), 5.0)], axis=-1)  # μ, ln b
    got = pixels.nll(x[:, None], stats, "gaussian", sigma=0.2)[:, 0]
    want = -jax.scipy.stats.norm.logpdf(x, loc=jax.nn.sigmoid(0.3), scale=0.2)
    np.testing.assert_allclose(got, want, rtol=1e-5)
    # ln b plays no part; the paper's likelihood uses it.
    np.testing.assert_allclose(pixels.nll(x[:, None], stats.at[:, 1].set(-3.0), "gaussian", 0.2)[:, 0], got)
    assert not np.allclose(pixels.nll(x[:, None], stats)[:, 0], got)
    with pytest.raises(ValueError, match="likelihood='laplace'"):
        pixels.nll(x[:, None], stats, "laplace")


def test_reconstruction_inverts_the_map():
    x = jnp.linspace(0, 1, 11)
    mu = jnp.log(pixels.map_pixels(x)) - jnp.log1p(-pixels.map_pixels(x))
    np.testing.assert_allclose(pixels.reconstruction(mu), x, atol=1e-5)


def test_block_is_identity_plus_scaled_residual():
    block = ResBlock(8, 8, n_blocks=4, kernels=(3, 3, 3, 1), rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(1), (2, 6, 6, 8))
    h = x
    for i in range(4):
        h = block.res_path[f"conv_{i + 1}"](jax.nn.relu(h))
    np.testing.assert_allclose(block(x), x + h / 16, rtol=1e-5, atol=1e-6)
    assert block.id_path is None
    assert ResBlock(8, 16, 4, (1, 3, 3, 3), rngs=nnx.Rngs(0)).id_path.w.shape == (1, 1, 8, 16)


def test_encoder_downsamples_by_eight_and_names_bad_shapes():
    enc = Encoder(n_hid=8, n_blk_per_group=1, vocab_size=32, rngs=nnx.Rngs(0))
    assert enc(jnp.zeros((1, 24, 40, 3))).shape == (1, 3, 5, 32)
    with pytest.raises(ValueError, match="multiples of 8"):
        enc(jnp.zeros((1, 20, 20, 3)))
    with pytest.raises(ValueError, match="channels|3\\)"):
        enc(jnp.zeros((1, 16, 16, 1)))


def test_fewer_pools_give_a_finer_grid_and_decode_back_to_full_size():
    """downsample=2: a 4× grid, the widest groups at a quarter of the side, codes that decode to
    the image's size; a bad value is named."""
    images = jax.random.uniform(jax.random.key(1), (2, 32, 32, 3))
    for quantizer in ("gumbel", "vq"):
        tok = DVAE(quantizer=quantizer, vocab_size=16, n_hid=8, n_blk_per_group=1,
                             n_init=8, embed_dim=8, downsample=2, rngs=nnx.Rngs(0))
        codes = tok.encode(images)
        assert codes.shape == (2, 8, 8)
        assert tok.decode(codes).shape == (2, 32, 32, 3)
    enc = Encoder(n_hid=8, n_blk_per_group=1, vocab_size=16, downsample=1, rngs=nnx.Rngs(0))
    assert enc(jnp.zeros((1, 8, 6, 3))).shape == (1, 4, 3, 16)
    with pytest.raises(ValueError, match="multiples of 2"):
        enc(jnp.zeros((1, 8, 5, 3)))
    with pytest.raises(ValueError, match="model.downsample=4"):
        DVAE(downsample=4, rngs=nnx.Rngs(0))


def test_max_pool_is_reduce_window_max_with_a_masked_gradient():
    x = jax.random.normal(jax.random.key(0), (2, 8, 6, 3))
    np.testing.assert_array_equal(max_pool_2x2(x), nnx.max_pool(x, (2, 2), strides=(2, 2)))
    g = jax.random.normal(jax.random.key(1), (2, 4, 3, 3))
    grad = jax.grad(lambda v: jnp.sum(max_pool_2x2(v) * g))(x)
    ref = jax.grad(lambda v: jnp.sum(nnx.max_pool(v, (2, 2), strides=(2, 2)) * g))(x)
    np.testing.assert_array_equal(grad, ref)  # no ties in random inputs
    tied = jax.grad(lambda v: jnp.sum(max_pool_2x2(v)))(jnp.zeros((1, 2, 2, 1)))
    np.testing.assert_allclose(tied, 0.25)  # a tie shares the gradient


def test_bad_quantizer_is_named():
    with pytest.raises(ValueError, match="'kmeans'"):
        DVAE(quantizer="kmeans", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="gumbel_logits='cosine'"):
        DVAE(gumbel_logits="cosine", rngs=nnx.Rngs(0))


def test_distance_logits_are_a_folded_one_by_one_convolution():
    layer = DistanceLogits(10, 4, rngs=nnx.Rngs(0))
    layer.log_scale[...] = jnp.asarray(np.log(0.7), jnp.float32)
    rng = np.random.default_rng(0)
    h, w, b = (rng.normal(size=s).astype(np.float32) for s in ((3, 5, 6), (6, 4), (4,)))
    z = h @ w + b
    c = np.asarray(layer.codebook[...])
    want = -0.7 * ((z[..., None, :] - c) ** 2).sum(-1)
    got = layer(jnp.asarray(z))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    # The paper's conv with weight 2s·W·cᵀ and bias 2s·b·cᵀ − s‖c‖² differs by −s‖z‖², the same
    # for every code: the same softmax and argmax.
    conv = h @ (1.4 * w @ c.T) + 1.4 * b @ c.T - 0.7 * (c * c).sum(-1)
    np.testing.assert_allclose(jax.nn.softmax(got), jax.nn.softmax(jnp.asarray(conv)), atol=1e-5)
    np.testing.assert_array_equal(jnp.argmax(got, -1), nearest_codes(jnp.asarray(z), jnp.asarray(c)))


def test_tied_codebook_feeds_the_decoder_the_code_vectors():
    model = DVAE(vocab_size=16, n_hid=8, n_blk_per_group=1, n_init=8, embed_dim=4,
                           gumbel_logits="tied", rngs=nnx.Rngs(0))
    images = jnp.asarray(np.random.default_rng(0).uniform(size=(2, 16, 16, 3)), jnp.float32)
    logits = model.encoder_output(images)
    assert logits.shape == (2, 2, 2, 16)
    codes = model.encode(images)
    np.testing.assert_array_equal(codes, jnp.argmax(logits, -1))
    c = model.distance.codebook[...]
    np.testing.assert_allclose(model.decode_stats(codes), model.decoder(c[codes]), atol=1e-6)
    np.testing.assert_allclose(model.decode_relaxed(jax.nn.one_hot(codes, 16)),
                               model.decode_stats(codes), atol=1e-5)


def test_gumbel_softmax_cold_is_one_hot_and_hard_passes_soft_gradient():
    logits = jax.random.normal(jax.random.key(0), (64, 10))
    cold = gumbel_softmax(logits, 1e-3, jax.random.key(1))
    np.testing.assert_allclose(cold.max(-1), 1.0, atol=1e-3)
    hard = gumbel_softmax(logits, 0.5, jax.random.key(1), hard=True)
    assert set(np.unique(np.asarray(hard))) <= {0.0, 1.0}
    np.testing.assert_array_equal(hard.argmax(-1), cold.argmax(-1))
    w = jnp.arange(10.0)
    g_hard = jax.grad(lambda l: jnp.sum(gumbel_softmax(l, 0.5, jax.random.key(1), hard=True) * w))(logits)
    g_soft = jax.grad(lambda l: jnp.sum(gumbel_softmax(l, 0.5, jax.random.key(1)) * w))(logits)
    np.testing.assert_allclose(g_hard, g_soft, rtol=1e-5, atol=1e-7)
    assert float(jnp.abs(g_soft).sum()) > 0
    # Noise scaled to 0: the soft sample is softmax(logits / τ) and the hard one is the argmax.
    quiet = gumbel_softmax(logits, 0.5, jax.random.key(1), noise_scale=0.0)
    np.testing.assert_allclose(quiet, jax.nn.softmax(logits / 0.5), rtol=1e-5)
    quiet_hard = gumbel_softmax(logits, 0.5, jax.random.key(1), hard=True, noise_scale=0.0)
    np.testing.assert_array_equal(quiet_hard.argmax(-1), logits.argmax(-1))
    assert (hard.argmax(-1) != logits.argmax(-1)).any()  # full noise does sample other codes


def test_reinmax_is_one_hot_forward_with_its_second_order_gradient():
    logits = jax.random.normal(jax.random.key(0), (6, 5))
    tau, w = 0.5, jnp.asarray([0.3, -1.0, 2.0, 0.5, -0.2])

    def sample(l):
        return gumbel_softmax(l, tau, jax.random.key(1), noise_scale=0.0, reinmax=True)
    out = sample(logits)
    np.testing.assert_allclose(out, jax.nn.one_hot(logits.argmax(-1), 5), atol=1e-6)
    grad = jax.grad(lambda l: jnp.sum(sample(l) * w))(logits)
    # Written out: the gradient of Σ w·(2·π1 − π0/2) through softmax Jacobians diag(p) − p pᵀ,
    # π1 = (D + softmax(θ/τ)) / 2 held at its value.
    lg = np.asarray(logits, np.float64)
    d = np.eye(5)[lg.argmax(-1)]
    p0 = np.exp(lg) / np.exp(lg).sum(-1, keepdims=True)
    pt = np.exp(lg / tau) / np.exp(lg / tau).sum(-1, keepdims=True)
    p1 = (d + pt) / 2
    wn = np.asarray(w, np.float64)

    def jvp(p):  # (diag(p) − p pᵀ) w per row
        return p * wn - p * (p @ wn)[:, None]
    np.testing.assert_allclose(grad, 2 * jvp(p1) - jvp(p0) / 2, rtol=1e-5, atol=1e-6)
    st = jax.grad(lambda l: jnp.sum(gumbel_softmax(l, tau, jax.random.key(1), noise_scale=0.0,
                                                   hard=True) * w))(logits)
    assert not np.allclose(grad, st)  # not straight-through's


def test_kl_to_uniform():
    assert abs(float(kl_to_uniform(jnp.zeros(16)))) < 1e-6
    assert abs(float(kl_to_uniform(jnp.array([100.0] + [0.0] * 15))) - math.log(16)) < 1e-4


def test_marginal_kl_sees_codebook_use_not_sharpness():
    sharp = jnp.eye(16)[None] * 100.0  # 16 positions, each sure of a different code
    assert abs(float(marginal_kl_to_uniform(sharp))) < 1e-5
    assert abs(float(jnp.mean(kl_to_uniform(sharp))) - math.log(16)) < 1e-4
    same = jnp.tile(sharp[:, :1], (2, 16, 1))  # every position sure of code 0
    assert abs(float(marginal_kl_to_uniform(same)) - math.log(16)) < 1e-4
    logits = jax.random.normal(jax.random.key(0), (4, 3, 3, 16)) * 3
    q = jax.nn.softmax(logits).reshape(-1, 16).mean(0)
    expected = float(jnp.sum(q * jnp.log(q * 16)))
    assert abs(float(marginal_kl_to_uniform(logits)) - expected) < 1e-5
    assert float(marginal_kl_to_uniform(logits)) <= float(jnp.mean(kl_to_uniform(logits)))
    counts = np.bincount(np.asarray(jnp.argmax(logits, -1)).ravel(), minlength=16) / 36
    hard = float(np.sum(counts[counts > 0] * np.log(counts[counts > 0] * 16)))
    assert abs(float(marginal_kl_to_uniform(logits / 1e-3)) - hard) < 1e-3  # cold: argmax use


def test_marginal_term_enters_the_gumbel_loss_at_its_weight_and_temperature():
    from dalle_jax.training.dvae.loss import dvae_loss
    model = DVAE(vocab_size=32, n_hid=8, n_blk_per_group=1, n_init=8, rngs=nnx.Rngs(0))
    images = jax.random.randint(jax.random.key(1), (2, 16, 16, 3), 0, 256).astype(jnp.uint8)
    kw = dict(temperature=1.0, beta=1.0, marginal_temperature=0.5)
    base, aux = dvae_loss(model, images, jax.random.key(2), marginal_beta=0.0, **kw)
    loss, _ = dvae_loss(model, images, jax.random.key(2), marginal_beta=2.5, **kw)
    enc = model.encoder(pixels.map_pixels(pixels.to_unit(images)))
    expected = 4 * float(marginal_kl_to_uniform(enc / 0.5)) / (16 * 16 * 3)
    assert abs(float(aux["marginal_kl"]) - expected) < 1e-6
    assert abs(float(loss - base) - 2.5 * expected) < 1e-5
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    def extra(p):  # the term's own gradient reaches the encoder
        m = nnx.merge(graphdef, p, rest)
        with_term = dvae_loss(m, images, jax.random.key(2), marginal_beta=2.5, **kw)[0]
        return with_term - dvae_loss(m, images, jax.random.key(2), marginal_beta=0.0, **kw)[0]

    grads = jax.grad(extra)(params)
    assert float(optax.global_norm(grads["encoder"])) > 0


def test_nearest_codes_and_straight_through():
    rng = np.random.default_rng(0)
    codebook, z = rng.normal(size=(12, 4)).astype(np.float32), rng.normal(size=(30, 4)).astype(np.float32)
    want = np.argmin(((z[:, None] - codebook[None]) ** 2).sum(-1), axis=1)
    np.testing.assert_array_equal(nearest_codes(jnp.asarray(z), jnp.asarray(codebook)), want)
    e = jnp.asarray(codebook[want])
    np.testing.assert_allclose(straight_through(jnp.asarray(z), e), e, atol=1e-6)
    grad = jax.grad(lambda z: jnp.sum(jnp.sin(straight_through(z, e))))(jnp.asarray(z))
    np.testing.assert_allclose(grad, jnp.cos(e), rtol=1e-6)  # d/dz passes through: f'(e)


def test_ema_update_moves_codes_to_their_means_and_restarts_dead_ones():
    z = jnp.array([[0.0, 0.0], [2.0, 0.0], [10.0, 10.0], [12.0, 10.0]])
    codes = jnp.array([0, 0, 1, 1])
    counts, sums = jnp.ones(3), jnp.zeros((3, 2))
    new_counts, new_sums, codebook, dead = ema_update(
        counts, sums, z, codes, jax.random.key(0), decay=0.0, eps=0.0, restart_below=0.5)
    np.testing.assert_allclose(codebook[:2], [[1.0, 0.0], [11.0, 10.0]], atol=1e-5)
    np.testing.assert_array_equal(dead, [False, False, True])  # code 2 got no vector
    assert any(np.allclose(codebook[2], v) for v in np.asarray(z))  # restarted from the batch
    threshold = 0.5 * len(z) / 3
    assert float(new_counts[2]) == pytest.approx(threshold)  # restarted at the threshold
    # Not chosen at the next step, it falls below the threshold and is restarted again at once.
    _, _, _, dead2 = ema_update(new_counts, new_sums, z, codes, jax.random.key(1), decay=0.9,
                                eps=0.0, restart_below=0.5)
    assert bool(dead2[2]) and not bool(dead2[0])
    # With decay, the stats move only part of the way.
    c2, _, _, _ = ema_update(counts, sums, z, codes, jax.random.key(0), decay=0.9, eps=1e-5,
                             restart_below=0.0)
    np.testing.assert_allclose(c2, 0.9 * 1 + 0.1 * np.array([2, 2, 0]), rtol=1e-6)


def test_restarts_drawn_by_error_pick_the_badly_coded_vectors():
    z = jnp.array([[0.0, 0.0], [0.1, 0.0], [0.0, 0.1], [9.0, 9.0]])
    codes = jnp.zeros(4, jnp.int32)  # all on code 0; codes 1..7 dead
    errors = jnp.array([0.0, 0.01, 0.01, 100.0])  # the last vector is far from its code
    counts, sums = jnp.ones(8), jnp.zeros((8, 2))
    _, _, codebook, dead = ema_update(counts, sums, z, codes, jax.random.key(0), decay=0.0,
                                      eps=0.0, restart_below=0.5, errors=errors)
    assert bool(dead[1:].all())
    picked = np.asarray(codebook[1:])
    far = np.all(np.isclose(picked, [9.0, 9.0]), axis=1).mean()
    assert far > 0.85  # ∝ error: 100 / 100.02 of the draws; uniform draws would give 1/4
    _, _, uniform_book, _ = ema_update(counts, sums, z, codes, jax.random.key(0), decay=0.0,
                                       eps=0.0, restart_below=0.5)
    assert np.all(np.isclose(np.asarray(uniform_book[1:]), [9.0, 9.0]), axis=1).mean() < 0.85


def test_draw_proportional_follows_the_weights():
    weights = jnp.array([0.0, 1.0, 3.0, 0.0, 4.0])
    picks = np.asarray(draw_proportional(jax.random.key(0), weights, 40_000))
    assert picks.dtype == np.int32
    freq = np.bincount(picks, minlength=5) / picks.size
    np.testing.assert_allclose(freq, [0, 0.125, 0.375, 0, 0.5], atol=0.01)
    assert freq[0] == freq[3] == 0  # a zero weight is never drawn
    flat = np.bincount(np.asarray(draw_proportional(jax.random.key(1), jnp.zeros(4), 40_000)),
                       minlength=4) / 40_000
    np.testing.assert_allclose(flat, 0.25, atol=0.01)  # no weight at all: uniform


def test_gumbel_noise_is_skipped_only_at_scale_zero():
    logits = jax.random.normal(jax.random.key(0), (16, 10))
    rng = jax.random.key(1)
    draw = jax.jit(lambda s: gumbel_softmax(logits, 0.5, rng, noise_scale=s))
    np.testing.assert_allclose(draw(0.0), jax.nn.softmax(logits / 0.5), rtol=1e-5)
    noisy = jax.nn.softmax((logits + 0.3 * jax.random.gumbel(rng, logits.shape)) / 0.5)
    np.testing.assert_allclose(draw(0.3), noisy, rtol=1e-5)  # traced scale: the same draw


def test_cosine_schedules_fall_and_rise():
    tau = cosine(1.0, 1 / 16, 100)
    assert float(tau(0)) == pytest.approx(1.0)
    assert float(tau(50)) == pytest.approx((1 + 1 / 16) / 2, rel=1e-5)
    assert float(tau(100)) == pytest.approx(1 / 16, rel=1e-5)
    assert float(tau(10_000)) == pytest.approx(1 / 16, rel=1e-5)
    beta = cosine(0.0, 6.6, 10)
    assert [round(float(beta(t)), 5) for t in (0, 5, 10, 20)] == [0.0, 3.3, 6.6, 6.6]
    assert float(beta(2)) == pytest.approx(3.3 * (1 - math.cos(math.pi * 0.2)), rel=1e-5)
    with pytest.raises(ValueError, match="positive"):
        cosine(1.0, 0.5, 0)

"""From encoder outputs to codes: the gumbel-softmax relaxation (DALL·E) or a VQ-VAE codebook.

Gumbel (paper §2.1): the encoder gives logits over the vocabulary at each grid position; training
feeds the decoder softmax((logits + g) / τ) with g ~ Gumbel(0, 1) (or, straight-through, the one-hot
of its argmax in the forward pass and the soft sample's gradient), and the ELBO's KL term compares
softmax(logits) with a uniform prior. Codes for the transformer are argmax(logits), no noise.

VQ (van den Oord et al. 2017): the encoder gives a vector per position; its code is the nearest
codebook vector; the decoder sees that vector with the straight-through gradient z + sg(e − z); a
commitment loss ‖z − sg(e)‖² keeps z near its code; the codebook is not learned by gradient but
set to exponential moving averages of the vectors assigned to each code (counts and sums, with
Laplace smoothing), and codes whose average count falls below a threshold are restarted from
encoder outputs of the current batch (uniformly, or in proportion to their quantisation error).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx


# ---- gumbel ----------------------------------------------------------------------------------

def gumbel_softmax(logits: jax.Array, temperature: jax.Array, rng: jax.Array, *,
                   hard: bool = False, noise_scale: jax.Array | float = 1.0,
                   reinmax: bool = False) -> jax.Array:
    """Relaxed one-hot sample (…, V); `hard`: one-hot forward, soft gradient (straight-through).

    `noise_scale` multiplies the gumbel noise: 1 is the paper's sample from softmax(logits); 0
    gives softmax(logits / τ) itself, whose hard form is the noiseless argmax used at encoding.
    `reinmax` (implies `hard`): the one-hot forward with ReinMax's gradient instead (`reinmax`).
    """
    g = _scaled_gumbel(rng, logits, noise_scale)
    y = jax.nn.softmax((logits + g) / temperature, axis=-1)
    if hard or reinmax:
        one_hot = jax.nn.one_hot(jnp.argmax(y, axis=-1), y.shape[-1], dtype=y.dtype)
        if reinmax:
            return reinmax_one_hot(logits, one_hot, temperature)
        y = y + jax.lax.stop_gradient(one_hot - y)
    return y


def _scaled_gumbel(rng: jax.Array, logits: jax.Array, noise_scale: jax.Array | float) -> jax.Array:
    """`noise_scale` × gumbel noise shaped like `logits`; zeros, without drawing, where the scale
    is 0 (the noiseless end of a faded schedule, most of a `shapes` run)."""
    def draw():
        return noise_scale * jax.random.gumbel(rng, logits.shape, logits.dtype)

    if isinstance(noise_scale, (int, float)):
        return draw() if noise_scale else jnp.zeros_like(logits)
    return jax.lax.cond(noise_scale != 0, draw, lambda: jnp.zeros_like(logits))


def reinmax_one_hot(logits: jax.Array, one_hot: jax.Array, temperature: jax.Array) -> jax.Array:
    """`one_hot` in the forward pass; in the backward pass ReinMax's estimate of the gradient
    (Liu et al. 2023, Algorithm 2), second-order accurate where straight-through is first-order
    (Heun's method against Euler's). With π0 = softmax(θ), π1 = (D + softmax(θ/τ)) / 2 carried
    as softmax(sg(ln π1 − θ) + θ) (its value, the softmax Jacobian at it), the gradient is that of
    2·π1 − π0 / 2."""
    pi0 = jax.nn.softmax(logits, axis=-1)
    pi1 = (one_hot + jax.nn.softmax(logits / temperature, axis=-1)) / 2
    pi1 = jax.nn.softmax(jax.lax.stop_gradient(jnp.log(pi1) - logits) + logits, axis=-1)
    pi2 = 2 * pi1 - pi0 / 2
    return one_hot + pi2 - jax.lax.stop_gradient(pi2)


def kl_to_uniform(logits: jax.Array) -> jax.Array:
    """KL(softmax(logits) ‖ uniform) per position, in nats: Σ q ln q + ln V."""
    logq = jax.nn.log_softmax(logits, axis=-1)
    return jnp.sum(jnp.exp(logq) * logq, axis=-1) + math.log(logits.shape[-1])


def marginal_kl_to_uniform(logits: jax.Array) -> jax.Array:
    """KL(q̄ ‖ uniform) in nats, q̄ the mean of softmax(logits) over every leading axis.

    The per-position KL of the ELBO splits into the information the codes carry about the image
    plus this term (Hoffman & Johnson 2016); this one alone says how unevenly the codebook is used.
    """
    q = jnp.mean(jax.nn.softmax(logits, axis=-1).reshape(-1, logits.shape[-1]), axis=0)
    return kl_to_uniform(jnp.log(jnp.maximum(q, 1e-30)))  # softmax(ln q̄) = q̄


def squared_distances(z: jax.Array, codebook: jax.Array) -> jax.Array:
    """‖z − c_k‖² (…, V) for vectors z (…, D) and every codebook row c_k of (V, D)."""
    return (jnp.sum(z * z, -1, keepdims=True) - 2 * z @ codebook.T
            + jnp.sum(codebook * codebook, -1))


class CodebookVar(nnx.Variable):
    """Codebook state updated by moving averages, not by the optimizer."""


class DistanceLogits(nnx.Module):
    """Gumbel logits as scaled negative squared distances to a learned codebook (beyond the paper).

    logits_k = −s·‖z − c_k‖² for encoder vectors z (…, D), codebook c (V, D) and a learned scale
    s > 0. Softmax and argmax ignore the −s‖z‖² term common to every k, so this is the paper's
    1×1 convolution to vocabulary logits factored through D channels (weight 2s·W·cᵀ, bias
    2s·b·cᵀ − s‖c‖²): the same family of encoders, with VQ's nearest-vector geometry for the
    optimiser to move in.
    """

    def __init__(self, vocab_size: int, dim: int, *, rngs: nnx.Rngs):
        init = jax.random.normal(rngs.params(), (vocab_size, dim), jnp.float32)
        self.codebook = nnx.Param(init, out_sharding=("vocab", "embed"))
        self.log_scale = nnx.Param(jnp.full((), -0.5 * math.log(dim), jnp.float32))
        # Moving-average use of each code, for restarts (`gumbel.restart_below`); zero otherwise.
        self.counts = CodebookVar(jnp.zeros((vocab_size,), jnp.float32), out_sharding=("vocab",))

    def __call__(self, z: jax.Array) -> jax.Array:
        return -jnp.exp(self.log_scale[...]) * squared_distances(z, self.codebook[...])


# ---- vq --------------------------------------------------------------------------------------

def nearest_codes(z: jax.Array, codebook: jax.Array) -> jax.Array:
    """Index of the nearest codebook row (V, D) for each vector z (…, D), squared L2."""
    return jnp.argmin(squared_distances(z, codebook), axis=-1)


def straight_through(z: jax.Array, e: jax.Array) -> jax.Array:
    """Forward value e, gradient of identity w.r.t. z."""
    return z + jax.lax.stop_gradient(e - z)


def quantisation_errors(z: jax.Array, e: jax.Array) -> jax.Array:
    """‖z − sg(e)‖² per vector (…): the commitment loss's terms, and what restarts draw by."""
    return jnp.sum(jnp.square(z - jax.lax.stop_gradient(e)), axis=-1)


class VectorQuantizer(nnx.Module):
    """A codebook of `vocab_size` vectors of width `dim`, with EMA statistics.

    `counts` (V,) and `sums` (V, D) are moving averages of the number of vectors assigned to each
    code per batch and of their sum; `codebook = sums / smoothed counts`.
    """

    def __init__(self, vocab_size: int, dim: int, *, rngs: nnx.Rngs):
        init = jax.random.normal(rngs.params(), (vocab_size, dim), jnp.float32)
        self.codebook = CodebookVar(init, out_sharding=("vocab", "embed"))
        # Counts start at zero: every code is "dead" at the first update and restarted from that
        # batch's encoder outputs (a data-dependent initialisation), unless assigned.
        self.counts = CodebookVar(jnp.zeros((vocab_size,), jnp.float32), out_sharding=("vocab",))
        self.sums = CodebookVar(init, out_sharding=("vocab", "embed"))

    def __call__(self, z: jax.Array) -> tuple[jax.Array, jax.Array]:
        """z (…, D) → (codes (…), straight-through quantized vectors (…, D))."""
        codebook = self.codebook[...]
        codes = nearest_codes(z, codebook)
        return codes, straight_through(z, codebook[codes])

    def lookup(self, codes: jax.Array) -> jax.Array:
        """Codebook vectors of integer codes."""
        return self.codebook[...][codes]


def restart_draws(counts: jax.Array, codes: jax.Array, rng: jax.Array, *, decay: float,
                  restart_below: float, errors: jax.Array | None = None
                  ) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """Moving-average code counts and which codes to restart from which batch vectors.

    `codes` (N,) are one batch's codes. Returns (counts, dead mask (V,), picks (V,) indices into
    the batch, threshold): a code whose EMA count is below `restart_below` × the mean count per
    code is dead (`restart_below=0`: none is); `counts` already holds the threshold for dead codes,
    so a restarted code chosen at the next step grows from there and one not chosen is restarted
    again at once. `errors` (N,), each vector's squared distance to its code, makes the picks
    proportional to it (k-means++ seeding): the badly coded vectors, such as the rare object
    patches of a mostly-background image, rather than more of the common ones; else uniform.
    """
    vocab, n = counts.shape[0], codes.shape[0]
    counts = decay * counts + (1 - decay) * jnp.bincount(codes, length=vocab).astype(counts.dtype)
    threshold = restart_below * n / vocab
    dead = counts < threshold
    if errors is None:
        picks = jax.random.randint(rng, (vocab,), 0, n)
    else:
        picks = draw_proportional(rng, errors, vocab)
    return jnp.where(dead, threshold, counts), dead, picks, threshold


def draw_proportional(rng: jax.Array, weights: jax.Array, num: int) -> jax.Array:
    """`num` indices into `weights` (N,) ≥ 0, drawn with replacement in proportion to them
    (uniformly where all are 0), by inverting their cumulative sum: N + num log N work, where a
    categorical draw would take num × N gumbel samples."""
    n = weights.shape[0]
    cdf = jnp.cumsum(jnp.maximum(weights, 0).astype(jnp.float32))
    cdf = jnp.where(cdf[-1] > 0, cdf, jnp.arange(1, n + 1, dtype=jnp.float32))
    u = jax.random.uniform(rng, (num,), jnp.float32) * cdf[-1]
    return jnp.minimum(jnp.searchsorted(cdf, u, side="right"), n - 1).astype(jnp.int32)


def ema_update(counts: jax.Array, sums: jax.Array, z: jax.Array, codes: jax.Array,
               rng: jax.Array, *, decay: float, eps: float, restart_below: float,
               errors: jax.Array | None = None) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """One EMA step of a codebook from a batch of vectors z (N, D) and their codes (N,).

    Returns (counts, sums, codebook, restarted mask). Dead codes (`restart_draws`, which `errors`
    steers) are set to a vector of the batch with a count at the restart threshold.
    """
    vocab = counts.shape[0]
    sums = decay * sums + (1 - decay) * (jax.nn.one_hot(codes, vocab, dtype=z.dtype).T @ z)
    counts, dead, picks, threshold = restart_draws(counts, codes, rng, decay=decay,
                                                   restart_below=restart_below, errors=errors)
    sums = jnp.where(dead[:, None], z[picks] * threshold, sums)
    total = counts.sum()
    smoothed = (counts + eps) / (total + vocab * eps) * total  # Laplace smoothing
    return counts, sums, sums / smoothed[:, None], dead

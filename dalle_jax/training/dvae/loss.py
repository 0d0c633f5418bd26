"""The stage-1 objective: the paper's ELBO (gumbel) or the VQ-VAE loss, per pixel value.

Gumbel: loss = E_batch[ −ln p(x | z) + β·KL(q(z | x) ‖ uniform) ] / (H·W·C), the reconstruction term
a logit-Laplace likelihood of the mapped pixels and z a gumbel-softmax sample at temperature τ;
optionally (beyond the paper) + β_m·g²·KL(q̄ ‖ uniform) / (H·W·C), q̄ the batch's mean of the
posteriors sharpened to softmax(logits / τ_m), which pushes towards an even codebook use without
flattening each position's posterior.
VQ: loss = E_batch[ −ln p(x | e(z)) ] / (H·W·C) + commitment · ‖z − sg(e)‖²; the codebook moves by
EMA outside the gradient (`quantizers.ema_update`), fed by the aux outputs returned here; so
are the restarts of a gumbel `distance` / `tied` codebook.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from dalle_jax.models.dvae import pixels
from dalle_jax.models.dvae.model import DVAE
from dalle_jax.models.dvae.quantizers import (gumbel_softmax, kl_to_uniform, marginal_kl_to_uniform,
                                         quantisation_errors)


def code_stats(codes: jax.Array, vocab_size: int) -> dict[str, jax.Array]:
    """Perplexity of the code histogram and share of codes used at least once."""
    return usage_stats(jnp.bincount(codes.reshape(-1), length=vocab_size))


def usage_stats(counts: jax.Array) -> dict[str, jax.Array]:
    """Perplexity and share of codes used, from a histogram of codes (V,)."""
    counts = jnp.asarray(counts, jnp.float32)
    p = counts / counts.sum()
    entropy = -jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0))
    return {"perplexity": jnp.exp(entropy), "codes_used": jnp.mean(counts > 0)}


def bits_per_dim(nll_nats_per_dim: jax.Array, eps: float = pixels.EPS) -> jax.Array:
    """Bits per 8-bit pixel value of a density on mapped pixels.

    −log2 of the probability of the 1/256-wide bin: the density moved back to [0, 1] (Jacobian
    1 − 2ε per value) and 8 bits for the bin width.
    """
    return (nll_nats_per_dim - math.log(1 - 2 * eps)) / math.log(2) + 8.0


def dvae_loss(model: DVAE, images_uint8: jax.Array, rng: jax.Array, *,
              temperature: jax.Array, beta: jax.Array, straight_through: bool = False,
              reinmax: bool = False,
              noise_scale: jax.Array | float = 1.0, commitment: float = 0.25,
              likelihood: str = "logit_laplace", sigma: float = 0.1,
              marginal_beta: jax.Array | float = 0.0,
              marginal_temperature: float = 1.0) -> tuple[jax.Array, dict]:
    """(loss, aux): per-dim ELBO terms, MSE, code stats and, for codebooks, z, codes and errors.

    `straight_through` feeds the decoder one-hot codes with the soft sample's gradient, `reinmax`
    with ReinMax's (`quantizers.reinmax_one_hot`). `likelihood` is the paper's 'logit_laplace' or a fixed-σ 'gaussian' (`pixels.nll`);
    `marginal_beta` weighs the gumbel encoder's batch-marginal KL to the uniform prior, the
    posteriors sharpened to softmax(logits / `marginal_temperature`) so that it follows argmax use.
    """
    x = pixels.to_unit(images_uint8)
    x_mapped = pixels.map_pixels(x)
    dims = math.prod(x.shape[1:])
    aux = {}
    if model.distance is not None:  # logits from vectors: the vectors feed codebook restarts
        vectors = model.encoder(x_mapped)
        enc = model.distance(vectors)
        aux["z"] = jax.lax.stop_gradient(vectors).reshape(-1, vectors.shape[-1])
        # −logits = s·‖z − c‖²: the scale s cancels where restarts draw in proportion to errors.
        aux["errors"] = jax.lax.stop_gradient(-jnp.max(enc, axis=-1)).reshape(-1)
    else:
        enc = model.encode_mapped(x_mapped)  # (B, g, g, V) logits, or (B, g, g, D) vectors (vq)
    if model.codebook is None:
        z = gumbel_softmax(enc, temperature, rng, hard=straight_through, noise_scale=noise_scale,
                           reinmax=reinmax)
        stats = model.decode_relaxed(z)
        kl = jnp.mean(jnp.sum(kl_to_uniform(enc), axis=(1, 2))) / dims
        codes = jnp.argmax(enc, axis=-1)
        aux["codes"] = codes.reshape(-1)
        aux["kl"] = kl
        positions = math.prod(enc.shape[1:3])
        marginal = positions * marginal_kl_to_uniform(enc / marginal_temperature) / dims
        aux["marginal_kl"] = marginal
        kl_term = beta * kl + (marginal_beta * marginal if marginal_beta else 0.0)
    else:
        codes, z_q = model.codebook(enc)
        stats = model.decoder(z_q)
        kl = kl_term = jnp.zeros(())
        errors = quantisation_errors(enc, z_q)
        aux["commitment"] = jnp.mean(errors)
        aux["errors"] = jax.lax.stop_gradient(errors).reshape(-1)
        aux["z"], aux["codes"] = enc.reshape(-1, enc.shape[-1]), codes.reshape(-1)
    nll = jnp.mean(jnp.sum(pixels.nll(x_mapped, stats, likelihood, sigma), axis=(1, 2, 3))) / dims
    loss = nll + kl_term + (commitment * aux["commitment"] if "commitment" in aux else 0.0)
    recon = pixels.reconstruction(pixels.split_stats(stats)[0])
    aux.update(
        nll=nll,
        elbo_bpd=bits_per_dim(nll + kl),
        mse=jnp.mean(jnp.square(recon - x)),
        **code_stats(codes, model.vocab_size),
    )
    return loss, aux

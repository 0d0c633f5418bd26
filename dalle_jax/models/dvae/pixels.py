"""The pixel map and logit-Laplace likelihood of the DALL·E dVAE (paper §A.3).

Pixels x ∈ [0, 1] are squeezed to [ε, 1 − ε] by x ↦ (1 − 2ε)x + ε (ε = 0.1) so that logit(x) stays
finite; the decoder predicts a location μ and log-scale ln b per channel, and

    f(x | μ, b) = exp(−|logit(x) − μ| / b) / (2b · x(1 − x))

is the density of a Laplace variable pushed through the sigmoid. The reconstruction is
unmap(sigmoid(μ)).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

EPS = 0.1  # the paper's ε


def map_pixels(x: jax.Array, eps: float = EPS) -> jax.Array:
    """[0, 1] → [ε, 1 − ε]."""
    return (1 - 2 * eps) * x + eps


def unmap_pixels(x: jax.Array, eps: float = EPS) -> jax.Array:
    """Inverse of `map_pixels`, clipped to [0, 1]."""
    return jnp.clip((x - eps) / (1 - 2 * eps), 0.0, 1.0)


def split_stats(out_bhw6: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Decoder output (…, 2C) → (μ, ln b), each (…, C)."""
    c = out_bhw6.shape[-1] // 2
    return out_bhw6[..., :c], out_bhw6[..., c:]


def logit_laplace_nll(x_mapped: jax.Array, mu: jax.Array, log_b: jax.Array) -> jax.Array:
    """−ln f(x | μ, b) per pixel value, in nats; x_mapped already in [ε, 1 − ε]."""
    logit_x = jnp.log(x_mapped) - jnp.log1p(-x_mapped)
    return (jnp.abs(logit_x - mu) * jnp.exp(-log_b) + log_b + jnp.log(2.0)
            + jnp.log(x_mapped) + jnp.log1p(-x_mapped))


def gaussian_nll(x_mapped: jax.Array, mu: jax.Array, sigma: float) -> jax.Array:
    """−ln N(x | sigmoid(μ), σ²) per pixel value, in nats: a fixed-scale alternative to the paper.

    The mean is the same sigmoid(μ) on mapped pixels that `reconstruction` unmaps, so the loss is
    the squared error of the reconstruction (times (1 − 2ε)² / 2σ²) plus a constant.
    """
    z = (x_mapped - jax.nn.sigmoid(mu)) / sigma
    return 0.5 * jnp.square(z) + jnp.log(sigma) + 0.5 * jnp.log(2 * jnp.pi)


LIKELIHOODS = ("logit_laplace", "gaussian")


def nll(x_mapped: jax.Array, stats: jax.Array, likelihood: str = "logit_laplace",
        sigma: float = 0.1) -> jax.Array:
    """−ln p(x | decoder output) per pixel value for `likelihood`; stats is (…, 2C)."""
    mu, log_b = split_stats(stats)
    if likelihood == "logit_laplace":
        return logit_laplace_nll(x_mapped, mu, log_b)
    if likelihood == "gaussian":
        return gaussian_nll(x_mapped, mu, sigma)
    raise ValueError(f"likelihood={likelihood!r}; choose one of {LIKELIHOODS}")


def reconstruction(mu: jax.Array, eps: float = EPS) -> jax.Array:
    """Mean image in [0, 1] from the predicted locations: unmap(sigmoid(μ))."""
    return unmap_pixels(jax.nn.sigmoid(mu), eps)


def to_unit(images_uint8: jax.Array) -> jax.Array:
    """uint8 images → float32 in [0, 1]."""
    return images_uint8.astype(jnp.float32) / 255.0

"""dalle_jax: DALL·E (Ramesh et al. 2021) in JAX/Flax: dVAE, sparse transformer, sampler, reranker."""

__version__ = "0.1.0"

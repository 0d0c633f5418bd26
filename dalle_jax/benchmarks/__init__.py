"""Benchmarks behind `python -m dalle_jax.bench`: each prints one JSON object."""

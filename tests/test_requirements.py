"""requirements-gpu.txt is requirements.txt without the JAX stack, pin for pin."""

import os

from tests.helpers.paths import ROOT

JAX_STACK = ("jax", "flax", "optax", "orbax-checkpoint")


def _pins(name: str) -> list[str]:
    with open(os.path.join(ROOT, name)) as f:
        return [line.strip() for line in f if line.strip() and not line.startswith("#")]


def test_the_gpu_requirements_are_the_pins_without_the_jax_stack():
    full, gpu = _pins("requirements.txt"), _pins("requirements-gpu.txt")
    stack = [p for p in full if p.split("==")[0].split("[")[0] in JAX_STACK]
    assert len(stack) == len(JAX_STACK)  # requirements.txt pins each of them
    assert gpu == [p for p in full if p not in stack]

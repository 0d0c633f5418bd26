"""saved_bits: a checkpoint name that keeps bfloat16 values as raw bits, transparent to values and
gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dalle_jax.xla_cpu import saved_bits


def _f(x, label="h"):
    return jnp.sum(jnp.sin(saved_bits.name(x * 3.0, label)) * x)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_values_and_gradients_are_unchanged(dtype):
    x = jnp.linspace(-2, 2, 12, dtype=dtype)
    plain = lambda x: jnp.sum(jnp.sin(x * 3.0) * x)  # noqa: E731
    assert saved_bits.name(x, "h").dtype == dtype
    np.testing.assert_array_equal(saved_bits.name(x, "h"), x)
    np.testing.assert_array_equal(jax.grad(_f)(x), jax.grad(plain)(x))


@pytest.mark.parametrize("dtype,kept", [(jnp.float32, "f32"), (jnp.bfloat16, "u16")])
def test_a_policy_saving_the_name_keeps_the_bits(dtype, kept, capsys):
    policy = jax.checkpoint_policies.save_only_these_names("h")
    f = jax.checkpoint(_f, policy=policy)
    x = jnp.linspace(-2, 2, 12, dtype=dtype)
    jax.ad_checkpoint.print_saved_residuals(f, x)
    saved = capsys.readouterr().out
    assert f"{kept}[12]" in saved and "named 'h'" in saved
    np.testing.assert_array_equal(jax.grad(f)(x), jax.grad(_f)(x))


def test_a_value_without_gradient_is_named_too(capsys):
    policy = jax.checkpoint_policies.save_only_these_names("c")

    def f(x):
        c = saved_bits.name(jnp.exp(jax.lax.stop_gradient(x)), "c", differentiable=False)
        return jnp.sum(c * x)
    x = jnp.linspace(-1, 1, 6, dtype=jnp.bfloat16)
    jax.ad_checkpoint.print_saved_residuals(jax.checkpoint(f, policy=policy), x)
    assert "u16[6]" in capsys.readouterr().out

"""What the layer scan keeps for the backward pass under `remat='dots'`, read from JAX's printed
residuals: the forms chosen for XLA's CPU backend (bfloat16 kept as raw bits, `saved_bits`)."""

import jax
import jax.numpy as jnp
import pytest
from flax import nnx

from tests.helpers.transformers import GRID, TEXT
from tests.helpers.transformers import batch as _batch, model as _model


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_dots_remat_keeps_what_spares_every_forward_matmul(dtype, capsys):
    """Under 'dots' the scan keeps, per layer: its input, q/k/v, the residual stream after
    attention, the MLP pre-activation, and blocksparse attention's output and log-sum-exp; never a
    (queries × keys) array. In bfloat16 the named arrays are kept as raw bits (`saved_bits`)."""
    model = _model(attention="blocksparse", remat="dots", dtype=dtype)
    graph, state = nnx.split(model)
    text, image = _batch(2)
    jax.ad_checkpoint.print_saved_residuals(
        lambda s: jnp.mean(nnx.merge(graph, s)(text, image)[1] ** 2), state)
    scanned = sorted(line.split()[0] for line in capsys.readouterr().out.splitlines()
                     if "output of scan" in line)
    depth, b, length, heads, hd, width = 4, 2, TEXT + GRID * GRID, 2, 16, 32
    blocks = -(-GRID * GRID // 8)  # image queries in blocks of block_size 8
    named, carry = ("u16", "bf16") if dtype == "bfloat16" else ("f32", "f32")
    want = [f"f32[{depth},{b},{heads},{blocks},8,1]", f"{named}[{depth},{b},{heads},{blocks},8,{hd}]",
            f"{carry}[{depth},{b},{length},{width}]", f"{named}[{depth},{b * length},3,{heads},{hd}]",
            f"{named}[{depth},{b * length},{4 * width}]", f"{named}[{depth},{b * length},{width}]"]
    assert scanned == sorted(want)

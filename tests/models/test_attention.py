"""dense, blocksparse and splash attention agree, in outputs and gradients, for every pattern."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dalle_jax.models.dalle.attention import attend, band_plan, global_prefix
from dalle_jax.models.dalle.attention_masks import column_major_order, stream_mask

TEXT, GRID, KERNEL = 6, 4, 3


def _qkv(seed=0, b=2, h=2, d=8):
    length = TEXT + GRID * GRID
    return [jax.random.normal(k, (b, length, h, d)) for k in jax.random.split(jax.random.key(seed), 3)]


def _reference(q, k, v, mask):
    """Per-query softmax over the allowed keys, written out with numpy."""
    q, k, v = (np.asarray(x, np.float64) for x in (q, k, v))
    out = np.zeros_like(q)
    for i in range(q.shape[1]):
        keys = np.flatnonzero(mask[i])
        s = np.einsum("bhd,bkhd->bhk", q[:, i], k[:, keys]) / np.sqrt(q.shape[-1])
        w = np.exp(s - s.max(-1, keepdims=True))
        w /= w.sum(-1, keepdims=True)
        out[:, i] = np.einsum("bhk,bkhd->bhd", w, v[:, keys])
    return out


@pytest.mark.parametrize("kind", ["row", "column", "conv", "full"])
def test_dense_matches_a_written_out_softmax(kind):
    mask = stream_mask(kind, TEXT, GRID, KERNEL)
    q, k, v = _qkv()
    np.testing.assert_allclose(attend(q, k, v, mask), _reference(q, k, v, mask), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("impl", ["blocksparse", "splash", "cudnn"])
@pytest.mark.parametrize("kind", ["row", "column", "conv", "full"])
def test_implementations_agree_forward_and_backward(impl, kind):
    mask = stream_mask(kind, TEXT, GRID, KERNEL)
    order = column_major_order(TEXT, GRID) if kind == "column" else None
    q, k, v = _qkv(seed=1)
    w = jax.random.normal(jax.random.key(9), q.shape)

    interpret = impl == "splash"  # the TPU kernel runs on the CPU only in interpret mode

    # cudnn's call made with JAX's XLA implementation: the same arguments, runnable on a CPU.
    options = dict(block_size=8, order=order, interpret=interpret, cudnn_impl="xla")

    def loss(impl, order):
        return lambda q, k, v: jnp.sum(w * attend(q, k, v, mask, impl=impl, **options))

    want, want_grads = jax.value_and_grad(loss("dense", None), argnums=(0, 1, 2))(q, k, v)
    got, got_grads = jax.value_and_grad(loss(impl, order), argnums=(0, 1, 2))(q, k, v)
    np.testing.assert_allclose(got, want, rtol=1e-4)
    np.testing.assert_allclose(attend(q, k, v, mask, impl=impl, **options), attend(q, k, v, mask),
                               rtol=1e-5, atol=1e-5)
    for g, gw in zip(got_grads, want_grads):
        np.testing.assert_allclose(g, gw, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kind", ["row", "conv"])
def test_blocksparse_in_bfloat16_follows_float32(kind):
    """bfloat16 inputs keep their dtype through the op and its gradients, within bf16 rounding."""
    mask = stream_mask(kind, TEXT, GRID, KERNEL)
    q, k, v = _qkv(seed=2)
    w = jax.random.normal(jax.random.key(8), q.shape)

    def loss(q, k, v):
        out = attend(q, k, v, mask, impl="blocksparse", block_size=8)
        return jnp.sum(w * out.astype(jnp.float32)), out

    (_, low), low_grads = jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True)(
        *(x.astype(jnp.bfloat16) for x in (q, k, v)))
    (_, full), full_grads = jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True)(q, k, v)
    assert low.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(low, np.float32), full, atol=0.05)
    for g, g32 in zip(low_grads, full_grads):
        assert g.dtype == jnp.bfloat16
        np.testing.assert_allclose(np.asarray(g, np.float32), g32, atol=0.1)


def test_band_plan_covers_the_mask_with_a_prefix_and_few_diagonals():
    mask = stream_mask("row", 64, 16)  # text 64, grid 16: L = 320
    plan = band_plan(mask, 32)
    assert plan.prefix == 64  # the text
    assert plan.offsets == (0, 1)  # an image block sees itself and the block before it
    assert plan.keys_per_query == 64 + 2 * 32  # of 320
    # every allowed pair lands in exactly one place
    assert plan.prefix_mask.sum() + plan.tiles.sum() + 256 * 64 == mask.sum()
    column = stream_mask("column", 64, 16)
    order = column_major_order(64, 16)
    assert band_plan(column[np.ix_(order, order)], 32).offsets == (0,)  # whole columns per block
    assert band_plan(stream_mask("conv", 64, 16, 11), 32).offsets == (0, 1, 2, 3)
    assert global_prefix(stream_mask("full", 64, 16)) == 320  # causal: all of it is a prefix
    assert band_plan(stream_mask("full", 64, 16), 32).keys_per_query == 320


@pytest.mark.parametrize("seed", [0, 1])
def test_blocksparse_handles_any_mask(seed):
    """A random mask (no prefix, entries above the diagonal) still gives dense's answer."""
    rng = np.random.default_rng(seed)
    length = TEXT + GRID * GRID
    mask = rng.random((length, length)) < 0.3
    mask[np.arange(length), np.arange(length)] = True
    q, k, v = _qkv(seed)
    np.testing.assert_allclose(attend(q, k, v, mask, impl="blocksparse", block_size=4),
                               _reference(q, k, v, mask), rtol=1e-5, atol=1e-5)


def test_bad_arguments_are_named():
    q, k, v = _qkv()
    mask = stream_mask("row", TEXT, GRID)
    with pytest.raises(ValueError, match="'flash'"):
        attend(q, k, v, mask, impl="flash")
    with pytest.raises(ValueError, match="splash_interpret=True"):  # the TPU kernel on a CPU
        attend(q, k, v, mask, impl="splash")
    with pytest.raises(ValueError, match="does not match"):
        attend(q, k, v, mask[:-1, :-1])
    with pytest.raises(ValueError, match="block_size"):
        attend(q, k, v, mask, impl="blocksparse", block_size=0)
    with pytest.raises(ValueError, match="GPU kernel, and these are cpu"):  # cuDNN on a CPU
        attend(q, k, v, mask, impl="cudnn")
    with pytest.raises(ValueError, match="causal"):
        attend(q, k, v, np.ones_like(mask), impl="cudnn", cudnn_impl="xla")


def test_cudnn_path_in_bfloat16_follows_dense():
    """bfloat16, as cuDNN runs it: the pattern's bias holds in that dtype too."""
    mask = stream_mask("conv", TEXT, GRID, KERNEL)
    q, k, v = (x.astype(jnp.bfloat16) for x in _qkv(seed=3))
    got = attend(q, k, v, mask, impl="cudnn", cudnn_impl="xla")
    assert got.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(got, np.float32),
                               np.asarray(attend(q, k, v, mask), np.float32), atol=0.03)


def test_auto_picks_per_platform(monkeypatch, caplog):
    from dalle_jax.models.dalle import attention

    assert attention.resolve("auto", platform="tpu") == "splash"
    assert attention.resolve("auto", platform="cpu") == "blocksparse"
    assert attention.resolve("dense", platform="tpu") == "dense"  # only `auto` is chosen for
    monkeypatch.setattr(attention, "cudnn_compiles", lambda dtype: dtype == "bfloat16")
    assert attention.resolve("auto", platform="gpu") == "cudnn"
    assert attention.resolve("auto", platform="gpu", dtype=jnp.float32) == "blocksparse"
    monkeypatch.setattr(attention, "cudnn_compiles", lambda dtype: False)
    assert attention.resolve("auto", platform="gpu") == "blocksparse"
    # Here (CPU devices) cuDNN does not compile, and `auto` runs blocksparse: dense's answer.
    monkeypatch.undo()
    assert not attention.cudnn_compiles("bfloat16")
    mask = stream_mask("row", TEXT, GRID)
    q, k, v = _qkv()
    with caplog.at_level("INFO"):
        attention._log_choice.cache_clear()
        out = attend(q, k, v, mask, impl="auto", block_size=8)
    assert "model.attention='auto' on cpu devices (float32): blocksparse" in caplog.text
    np.testing.assert_allclose(out, attend(q, k, v, mask), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["row", "conv"])
def test_splash_under_shard_map_equals_dense(kind):
    """On a data × tensor mesh, splash runs per shard (its batch rows and its heads, each shard
    with a kernel for its own heads) and gives dense attention's output and gradients."""
    from jax.sharding import NamedSharding, PartitionSpec

    from dalle_jax.parallel.mesh import make_mesh
    from dalle_jax.parallel.partitioning import activation_sharding

    mesh = make_mesh({"data": 2, "tensor": 2}, devices=jax.devices()[:4])
    rules = {"batch": ("data",), "heads": "tensor"}
    mask = stream_mask(kind, TEXT, GRID, KERNEL)
    q, k, v = _qkv(seed=3, b=4, h=4)
    w = jax.random.normal(jax.random.key(7), q.shape)
    split = NamedSharding(mesh, PartitionSpec("data", None, "tensor", None))
    q, k, v = (jax.device_put(x, split) for x in (q, k, v))

    def loss(impl):
        def f(q, k, v):
            with activation_sharding(mesh, rules):
                return jnp.sum(w * attend(q, k, v, mask, impl=impl, block_size=8,
                                          interpret=True))
        return jax.jit(jax.value_and_grad(f, argnums=(0, 1, 2)))

    got, got_grads = loss("splash")(q, k, v)
    want, want_grads = loss("dense")(q, k, v)
    np.testing.assert_allclose(got, want, rtol=1e-4)
    for g, gw in zip(got_grads, want_grads):
        np.testing.assert_allclose(g, gw, rtol=1e-4, atol=1e-5)
    lowered = loss("splash").lower(q, k, v).as_text()
    assert "manual_computation" in lowered or "shard_map" in lowered  # the kernel runs per shard

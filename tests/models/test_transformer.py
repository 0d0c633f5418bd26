"""The DALL·E transformer: shapes, causality of the stream, pad slots, and equal implementations."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from dalle_jax.models.dalle.attention_masks import layer_kinds
from dalle_jax.models.dalle.transformer import block, layer_groups, layer_norm
from tests.helpers.transformers import GRID, IV, TEXT, TV
from tests.helpers.transformers import batch as _batch, model as _model

def test_logit_shapes_and_vocabularies():
    text_logits, image_logits = _model()(*_batch())
    assert text_logits.shape == (2, TEXT - 1, TV)
    assert image_logits.shape == (2, GRID * GRID, IV)
    assert text_logits.dtype == jnp.float32


@pytest.mark.parametrize("pattern", ["sparse", "full"])
def test_a_code_changes_only_later_predictions(pattern):
    model = _model(pattern=pattern)
    text, image = _batch()
    j = 6
    other = image.reshape(2, -1).at[:, j].add(1).__mod__(IV).reshape(image.shape)
    t1, i1 = model(text, image)
    t2, i2 = model(text, other)
    np.testing.assert_array_equal(t1, t2)  # text never sees the image
    np.testing.assert_allclose(i1[:, :j + 1], i2[:, :j + 1], atol=1e-6)  # code j predicted without it
    assert np.abs(np.asarray(i1[:, j + 1] - i2[:, j + 1])).max() > 1e-4  # the next one sees it


def test_each_pad_slot_has_its_own_token():
    model = _model()
    text = jnp.zeros((1, TEXT), jnp.int32)
    e = model.embed(text, jnp.zeros((1, GRID, GRID), jnp.int32))[0, :TEXT]
    e = e - model.text_pos[...]
    np.testing.assert_allclose(e, model.text_embed[...][TV:TV + TEXT], atol=1e-6)
    assert not np.allclose(e[0], e[1])


@pytest.mark.parametrize("impl", ["blocksparse", "splash", "cudnn", "auto"])
def test_implementations_give_the_dense_model(impl):
    # splash in Pallas interpret mode, cudnn's call with implementation='xla' (both run on a CPU);
    # auto is blocksparse here.
    dense, other = _model(), _model(attention=impl, splash_interpret=impl == "splash",
                                    cudnn_impl="xla")
    batch = _batch(1)

    def loss(m):
        t, i = m(*batch)
        return jnp.mean(t ** 2) + jnp.mean(i ** 2)

    g_dense = nnx.grad(loss)(dense)
    g_other = nnx.grad(loss)(other)
    for a, b in zip(dense(*batch), other(*batch)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    for a, b in zip(jax.tree.leaves(g_dense), jax.tree.leaves(g_other)):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-6)


@pytest.mark.parametrize("attention", ["dense", "blocksparse"])
def test_remat_gives_the_same_gradients(attention):
    batch = _batch(2)
    g1 = nnx.grad(lambda m: jnp.mean(m(*batch)[1] ** 2))(_model(attention=attention))
    for policy in ("dots", "full"):
        g2 = nnx.grad(lambda m: jnp.mean(m(*batch)[1] ** 2))(
            _model(attention=attention, remat=policy))
        for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g2)):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_bfloat16_matches_float32():
    batch = _batch(2)
    plain = _model()
    g1 = nnx.grad(lambda m: jnp.mean(m(*batch)[1] ** 2))(plain)
    low = _model(dtype="bfloat16")
    _, i32 = plain(*batch)
    _, i16 = low(*batch)
    assert i16.dtype == jnp.float32
    np.testing.assert_allclose(i16, i32, atol=0.05)
    # bfloat16 computation (mixed_matmul's gradients): float32 parameter gradients, the direction
    # of the float32 model's.
    g16 = nnx.grad(lambda m: jnp.mean(m(*batch)[1] ** 2))(low)
    for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g16)):
        assert b.dtype == jnp.float32
        a, b = np.ravel(a), np.ravel(b)
        if np.linalg.norm(a) > 1e-6:
            assert a @ b / (np.linalg.norm(a) * np.linalg.norm(b)) > 0.98


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="'flash'"):
        _model(attention="flash")
    with pytest.raises(ValueError, match="'float16'"):
        _model(dtype="float16")
    with pytest.raises(ValueError, match="model.remat=True"):
        _model(remat=True)
    with pytest.raises(ValueError, match="model.cudnn_impl='flash'"):
        _model(cudnn_impl="flash")


def test_layer_groups_cover_the_schedule_with_few_bodies():
    paper = layer_kinds(64)
    unit, repeats, tail = layer_groups(paper)
    assert unit == ("row", "column", "row", "row") and repeats == 15
    assert tail == ("row", "column", "row", "conv")
    assert layer_groups(("full",) * 8) == (("full",), 8, ())
    for depth in range(1, 20):
        kinds = layer_kinds(depth)
        unit, repeats, tail = layer_groups(kinds)
        assert unit * repeats + tail == kinds


@pytest.mark.parametrize("remat", ["none", "dots", "full"])
def test_scanned_stack_equals_layer_by_layer(remat):
    # none: (row, column, row, row) × 2 under scan, then conv; dots, full: one switched scan
    model = _model(depth=9, remat=remat)
    text, image = _batch(3)
    stacked = model.layers.stacked()
    x = model.embed(text, image)
    for i, kind in enumerate(layer_kinds(9)):
        x = block(jax.tree.map(lambda v: v[i], stacked), x, model._attention_fn(kind))
    want = layer_norm(x, model.final_scale[...], model.final_bias[...])
    np.testing.assert_allclose(model.hidden(text, image), want, rtol=1e-5, atol=1e-5)


def test_unused_head_slots_stay_zero_and_change_nothing():
    """3 heads stored in 4 slots: the fourth slot's weights start at zero, get zero gradients,
    and the model computes what the 3-head model with the same weights does."""
    slotted = _model(heads=3, head_slots=4)
    layers = slotted.layers
    assert layers.qkv.shape[3] == 4 and layers.out.shape[1] == 4
    assert not np.any(layers.qkv[...][:, :, :, 3]) and not np.any(layers.out[...][:, 3])
    plain = _model(heads=3)
    for name, axis in (("qkv", 3), ("out", 1)):
        getattr(plain.layers, name)[...] = getattr(layers, name)[...][
            (slice(None),) * axis + (slice(0, 3),)]
    plain.layers.qkv_bias[...] = layers.qkv_bias[...][:, :, :3 * 16]  # heads · head_dim, flat
    for name in ("ln1_scale", "ln1_bias", "out_bias", "ln2_scale", "ln2_bias", "mlp_in",
                 "mlp_in_bias", "mlp_out", "mlp_out_bias"):
        getattr(plain.layers, name)[...] = getattr(layers, name)[...]
    for name in ("text_embed", "text_pos", "image_embed", "row_embed", "col_embed",
                 "final_scale", "final_bias", "text_head", "image_head"):
        getattr(plain, name)[...] = getattr(slotted, name)[...]
    batch = _batch(3)
    for a, b in zip(slotted(*batch), plain(*batch)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    grads = nnx.grad(lambda m: jnp.mean(m(*batch)[1] ** 2))(slotted)
    assert not np.any(grads.layers.qkv[...][:, :, :, 3])
    assert not np.any(grads.layers.out[...][:, 3])
    assert np.any(grads.layers.qkv[...][:, :, :, :3])
    with pytest.raises(ValueError, match="head_slots=2 is fewer than model.heads=3"):
        _model(heads=3, head_slots=2)


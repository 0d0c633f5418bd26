"""Cached sampling: logits equal the full forward pass at every step, filters, guidance, completion."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dalle_jax.data.tokenizer import PAD_ID
from dalle_jax.generation import kv_cache, sampling
from dalle_jax.models.dalle import attention_masks
from dalle_jax.models.dalle.transformer import DalleTransformer
from tests.helpers.configs import load


def _model(**overrides):
    c = load("dalle", "tiny").model
    c.update(overrides)
    return DalleTransformer.from_config(c, seed=1)


def _text(model, batch=3, seed=0):
    text = jax.random.randint(jax.random.key(seed), (batch, model.text_len), 1, model.text_vocab)
    return text.at[:, model.text_len // 2:].set(PAD_ID)  # padded captions, as the loader gives


def _sample(model, text, seed=1, **kw):
    return jax.jit(lambda t, r: sampling.sample_codes(model, t, r, **kw))(text, jax.random.key(seed))


@pytest.mark.parametrize("overrides", [
    dict(attention="dense"), dict(attention="blocksparse"), dict(pattern="full"),
    dict(grid=6, conv_kernel=5, depth=5),
])
def test_cached_logits_equal_the_full_forward_pass_at_every_step(overrides):
    model = _model(**overrides)
    text = _text(model)
    codes, logits = _sample(model, text, return_logits=True)
    assert codes.shape == (3, model.grid, model.grid) and codes.dtype == jnp.int32
    assert logits.shape == (3, model.grid ** 2, model.image_vocab)
    full = model(text, codes)[1]  # image_logits[:, j] sees the codes before j only
    np.testing.assert_allclose(logits, full, atol=1e-5, rtol=1e-5)
    assert float(jnp.abs(full).max()) > 0.1  # not trivially small


def test_cached_sampling_in_bfloat16_follows_the_full_pass():
    """bfloat16 models sample through the same projections (mixed_matmul) as they train."""
    model = _model(dtype="bfloat16")
    text = _text(model)
    codes, logits = _sample(model, text, return_logits=True)
    assert logits.dtype == jnp.float32
    np.testing.assert_allclose(logits, model(text, codes)[1], atol=0.05)


def test_key_tables_list_what_each_pattern_sees():
    t, g = 3, 4
    tables = kv_cache.key_tables(("row", "column", "conv"), t, g, 3)
    assert tables.kind.tolist() == [0, 1, 2]
    q = t + 2 * g + 1  # image row 2, column 1
    seen = {kind: set(tables.index[p, q][tables.valid[p, q]].tolist())
            for p, kind in enumerate(("row", "column", "conv"))}
    text = {0, 1, 2}
    assert seen["row"] == text | {t + i for i in range(g + 1, 2 * g + 1)}  # previous W
    assert seen["column"] == text | {t + 1, t + g + 1}  # same column, above
    assert seen["conv"] == text | {t + g, t + g + 1, t + g + 2, t + 2 * g}  # 3×3 window, earlier
    for p, kind in enumerate(("row", "column", "conv")):  # and agree with the masks everywhere
        mask = np.tril(attention_masks.stream_mask(kind, t, g, 3), -1)
        for pos in range(t + g * g):
            listed = tables.index[p, pos][tables.valid[p, pos]]
            assert set(listed.tolist()) == set(np.flatnonzero(mask[pos]).tolist())


def test_top_k_top_p_and_temperature_filters():
    logits = jnp.log(jnp.asarray([[0.5, 0.2, 0.15, 0.1, 0.05]]))
    kept = lambda s: (sampling.filter_logits(logits, s) > -1e29)[0].tolist()
    assert kept(sampling.Settings(top_k=2)) == [True, True, False, False, False]
    assert kept(sampling.Settings(top_p=0.6)) == [True, True, False, False, False]  # 0.5 < 0.6 ≤ 0.7
    assert kept(sampling.Settings(top_p=0.5)) == [True, False, False, False, False]
    assert kept(sampling.Settings(top_p=0.86)) == [True, True, True, True, False]
    assert all(kept(sampling.Settings()))
    hot = sampling.filter_logits(logits, sampling.Settings(temperature=2.0))
    np.testing.assert_allclose(hot, logits / 2)
    for bad, name in [(dict(temperature=0.0), "temperature"), (dict(top_k=-1), "top_k"),
                      (dict(top_p=0.0), "top_p"), (dict(guidance=-1.0), "guidance")]:
        with pytest.raises(ValueError, match=name):
            sampling.Settings(**bad).check(5)


def test_top_k_one_is_greedy_and_seeds_decide_samples():
    model = _model()
    text = _text(model)
    greedy, logits = _sample(model, text, settings=sampling.Settings(top_k=1), return_logits=True)
    np.testing.assert_array_equal(greedy.reshape(3, -1), jnp.argmax(logits, -1))
    a, b, c = _sample(model, text, seed=5), _sample(model, text, seed=5), _sample(model, text, seed=6)
    np.testing.assert_array_equal(a, b)
    assert (a != c).any()


def test_guidance_mixes_conditional_and_unconditional_logits():
    model = _model()
    text = _text(model)
    s = 3.0
    codes, logits = _sample(model, text, settings=sampling.Settings(guidance=s), return_logits=True)
    cond = model(text, codes)[1]
    uncond = model(jnp.full_like(text, PAD_ID), codes)[1]
    np.testing.assert_allclose(logits, uncond + s * (cond - uncond), atol=1e-4, rtol=1e-4)


def test_completion_keeps_the_first_rows_and_samples_the_rest():
    model = _model(grid=6, conv_kernel=5)
    text = _text(model, batch=2)
    image = jax.random.randint(jax.random.key(9), (2, 6, 6), 0, model.image_vocab)
    rows = 2
    codes, logits = _sample(model, text, prefix=image, keep=rows * 6, return_logits=True)
    np.testing.assert_array_equal(codes[:, :rows], image[:, :rows])
    assert (codes[:, rows:] != image[:, rows:]).any()
    np.testing.assert_allclose(logits, model(text, codes)[1], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("settings", [sampling.Settings(top_k=5), sampling.Settings(guidance=2.0)])
def test_uncached_reference_draws_the_same_codes(settings):
    model = _model()
    text = _text(model, batch=2)
    fn = lambda f: jax.jit(lambda t, r: f(model, t, r, settings))(text, jax.random.key(3))
    np.testing.assert_array_equal(fn(sampling.sample_codes), fn(sampling.sample_codes_uncached))

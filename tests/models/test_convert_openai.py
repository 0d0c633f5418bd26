"""OpenAI's PyTorch dVAE with random weights, converted, gives the same logits and images."""

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="test extra: pip install -r requirements-test.txt")
dall_e = pytest.importorskip("dall_e", reason="test extra: pip install -r requirements-test.txt")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from dalle_jax.models.dvae import pixels  # noqa: E402

from dalle_jax.models.dvae import convert_openai


def _rel_err(a, b):
    return float(np.max(np.abs(a - b)) / (np.max(np.abs(b)) + 1e-12))


@pytest.fixture(scope="module")
def converted():
    torch.manual_seed(0)
    enc = dall_e.Encoder(n_hid=64, n_blk_per_group=1, vocab_size=512)
    dec = dall_e.Decoder(n_hid=64, n_blk_per_group=1, vocab_size=512, n_init=32)
    # Random biases too, so a dropped or misplaced bias cannot hide.
    with torch.no_grad():
        for p in list(enc.parameters()) + list(dec.parameters()):
            if p.ndim == 1:
                p.normal_(std=0.1)
    return enc, dec, convert_openai.dvae_from_torch(enc, dec)


def test_encoder_logits_match(converted):
    enc, _, model = converted
    x = np.random.default_rng(0).random((2, 32, 32, 3), dtype=np.float32)
    want = enc(dall_e.map_pixels(torch.from_numpy(x).permute(0, 3, 1, 2))).permute(0, 2, 3, 1)
    got = model.encoder_output(jnp.asarray(x))
    assert got.shape == (2, 4, 4, 512)
    assert _rel_err(np.asarray(got), want.detach().numpy()) < 1e-4
    np.testing.assert_array_equal(np.asarray(model.encode(jnp.asarray(x))),
                                  want.argmax(-1).numpy())


def test_decoder_reconstruction_matches(converted):
    _, dec, model = converted
    codes = np.random.default_rng(1).integers(0, 512, (2, 4, 4))
    one_hot = torch.nn.functional.one_hot(torch.from_numpy(codes), 512).permute(0, 3, 1, 2).float()
    stats = dec(one_hot)
    want = dall_e.unmap_pixels(torch.sigmoid(stats[:, :3])).permute(0, 2, 3, 1).detach().numpy()
    got_stats = model.decode_stats(jnp.asarray(codes))
    assert _rel_err(np.asarray(got_stats), stats.permute(0, 2, 3, 1).detach().numpy()) < 1e-4
    got = np.asarray(model.decode(jnp.asarray(codes)))
    assert got.shape == (2, 32, 32, 3)
    assert _rel_err(got, want) < 1e-4
    # The relaxed path (one-hot through the 1×1 input convolution) agrees with the row lookup.
    relaxed = model.decoder(jax.nn.one_hot(jnp.asarray(codes), 512))
    assert _rel_err(np.asarray(relaxed), np.asarray(got_stats)) < 1e-5


def test_pixel_map_matches_openai():
    x = np.linspace(0, 1, 24, dtype=np.float32).reshape(1, 2, 4, 3)
    want = dall_e.map_pixels(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(np.asarray(pixels.map_pixels(jnp.asarray(x))), want, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(pixels.unmap_pixels(jnp.asarray(want))), x, atol=1e-6)
    np.testing.assert_allclose(pixels.map_pixels(jnp.asarray([0.0, 1.0])), [0.1, 0.9], rtol=1e-6)


def test_size_mismatch_is_named():
    enc = dall_e.Encoder(n_hid=64, n_blk_per_group=1, vocab_size=512)
    dec = dall_e.Decoder(n_hid=64, n_blk_per_group=1, vocab_size=1024)
    with pytest.raises(ValueError, match="vocab_size"):
        convert_openai.dvae_from_torch(enc, dec)

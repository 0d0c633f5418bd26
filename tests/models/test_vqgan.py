"""taming's VQGAN in NNX against taming's own PyTorch modules (PyPI taming-transformers-rom1504):
converted random weights give the same codes and, to 1e-4, the same decoded images."""

import jax
import numpy as np
import pytest
import torch
from flax import nnx
from taming.modules.diffusionmodules.model import Decoder, Encoder
from taming.modules.vqvae.quantize import GumbelQuantize, VectorQuantizer2

from dalle_jax.models.vqgan import convert
from dalle_jax.models.vqgan.model import PRESETS, VQGAN, VQGANConfig

# Small enough for a CPU test, with every part of the architecture: two levels (a down- and an
# up-sampling), width changes (1 × 1 shortcuts) and attention at the lower resolution.
SMALL = VQGANConfig(ch=32, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(8,), resolution=16,
                    z_channels=16, embed_dim=16, n_embed=64)


def _ddconfig(c: VQGANConfig) -> dict:
    return dict(ch=c.ch, out_ch=3, ch_mult=list(c.ch_mult), num_res_blocks=c.num_res_blocks,
                attn_resolutions=list(c.attn_resolutions), dropout=0.0, in_channels=3,
                resolution=c.resolution, z_channels=c.z_channels, double_z=False)


class _Taming(torch.nn.Module):
    """taming's VQModel (GumbelVQ) without its training loss: the same modules and names."""

    def __init__(self, c: VQGANConfig):
        super().__init__()
        self.encoder, self.decoder = Encoder(**_ddconfig(c)), Decoder(**_ddconfig(c))
        self.quant_conv = torch.nn.Conv2d(c.z_channels, c.embed_dim, 1)
        self.post_quant_conv = torch.nn.Conv2d(c.embed_dim, c.z_channels, 1)
        self.quantize = (VectorQuantizer2(c.n_embed, c.embed_dim, beta=0.25) if c.quantizer == "vq"
                         else GumbelQuantize(c.z_channels, c.embed_dim, n_embed=c.n_embed))

    def codes(self, x):
        h = self.quant_conv(self.encoder(x))
        if isinstance(self.quantize, GumbelQuantize):
            return self.quantize.proj(h).argmax(1)
        return self.quantize(h)[2][2].reshape(h.shape[0], h.shape[2], h.shape[3])

    def decode(self, codes):
        table = (self.quantize.embedding if isinstance(self.quantize, VectorQuantizer2)
                 else self.quantize.embed).weight
        return self.decoder(self.post_quant_conv(table[codes].permute(0, 3, 1, 2)))


def _random_taming(c: VQGANConfig, seed=0):
    torch.manual_seed(seed)
    model = _Taming(c).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():  # norms, biases and codebook away from defaults
            p.add_((0.5 if "embed" in name else 0.05) * torch.randn_like(p))
    return model


@pytest.mark.parametrize("quantizer", ["vq", "gumbel"])
def test_converted_weights_give_tamings_codes_and_images(quantizer, tmp_path):
    c = SMALL._replace(quantizer=quantizer)
    theirs = _random_taming(c)
    ours = convert.from_state_dict(c, theirs.state_dict())
    images = np.random.default_rng(0).uniform(-1, 1, (3, 16, 16, 3)).astype(np.float32)
    with torch.no_grad():
        want = theirs.codes(torch.from_numpy(images).permute(0, 3, 1, 2)).numpy()
    got = np.asarray(ours.encode(images))
    assert got.shape == (3, 8, 8) and len(np.unique(want)) > 8
    np.testing.assert_array_equal(got, want)
    with torch.no_grad():
        want_images = theirs.decode(torch.from_numpy(want)).permute(0, 2, 3, 1).numpy()
    decoded = np.asarray(ours.decode(got))
    assert np.linalg.norm(decoded - want_images) / np.linalg.norm(want_images) < 1e-4
    again = convert.load(convert.save(ours, str(tmp_path / "converted")))  # numpy alone
    np.testing.assert_array_equal(np.asarray(again.encode(images)), want)
    np.testing.assert_allclose(np.asarray(again.decode(got)), decoded, atol=1e-6)


def test_presets_have_tamings_parameter_count():
    for name, c in PRESETS.items():
        with torch.device("meta"):  # shapes only: nothing allocated
            theirs = _Taming(c)
        ours = nnx.eval_shape(lambda: VQGAN(c, rngs=nnx.Rngs(0)))
        count = sum(x.size for x in jax.tree.leaves(nnx.state(ours, nnx.Param)))
        assert count == sum(p.numel() for p in theirs.parameters()), name
    assert PRESETS["f16-16384"].resolution // PRESETS["f16-16384"].factor == 16
    assert PRESETS["f8-gumbel-8192"].resolution // PRESETS["f8-gumbel-8192"].factor == 32


def test_a_wrong_preset_is_named():
    theirs = _random_taming(SMALL)
    with pytest.raises(ValueError, match="wrong --preset"):
        convert.from_state_dict(SMALL._replace(n_embed=32), theirs.state_dict())
    with pytest.raises(KeyError):
        convert.from_state_dict(SMALL._replace(quantizer="gumbel"), theirs.state_dict())


def test_a_taming_checkpoint_loads_as_an_image_tokenizer(tmp_path, monkeypatch):
    """`vqgan:PRESET:CKPT` (what `data encode --tokenizer` and `sample` take): taming's Lightning
    checkpoint converted as it is read; its codes and decoded images are taming's."""
    from dalle_jax.generation.codec import load_codec

    monkeypatch.setitem(PRESETS, "small-test", SMALL)  # a published preset's shape, made small
    theirs = _random_taming(SMALL)
    ckpt = tmp_path / "last.ckpt"
    torch.save({"state_dict": {**theirs.state_dict(), "loss.logvar": torch.zeros(())}}, ckpt)
    codec = load_codec(f"vqgan:small-test:{ckpt}")
    assert codec.reference == f"vqgan:small-test:{ckpt}" and codec.grid_scale == 2
    images = np.random.default_rng(3).integers(0, 256, (5, 16, 16, 3), dtype=np.uint8)
    x = torch.from_numpy(images.astype(np.float32) / 127.5 - 1).permute(0, 3, 1, 2)
    with torch.no_grad():
        want = theirs.codes(x).numpy()
        want_images = theirs.decode(torch.from_numpy(want)).permute(0, 2, 3, 1).numpy()
    np.testing.assert_array_equal(codec.encode(images), want)  # 5 rows over 8 devices: padded
    np.testing.assert_allclose(codec.decode(want), (np.clip(want_images, -1, 1) + 1) / 2,
                               atol=1e-4)

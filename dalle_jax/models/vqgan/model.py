"""taming-transformers' VQGAN (Esser et al. 2021) as a Flax NNX module: encoding and decoding.

The architecture of taming's `VQModel` (and `GumbelVQ`) for inference, images NHWC in [−1, 1]:

- encoder: a 3 × 3 convolution to `ch`, then per level of `ch_mult` `num_res_blocks` residual
  blocks (GroupNorm(32, ε 1e-6), swish, 3 × 3 convolution, twice; a 1 × 1 shortcut where the
  width changes), each followed by self-attention (one head over all positions, 1 × 1
  projections) at the `attn_resolutions`, and between levels a stride-2 3 × 3 convolution after
  padding one row and column at the bottom right; then block, attention, block, GroupNorm, swish
  and a 3 × 3 convolution to `z_channels`, and the 1 × 1 `quant_conv` to `embed_dim`.
- codebook: `vq`, the nearest of `n_embed` entries (squared distance); `gumbel` (taming's
  `GumbelVQ`), the argmax of a 1 × 1 projection of `quant_conv`'s output to `n_embed` logits (the
  most likely code, where taming draws a Gumbel sample).
- decoder: the code vectors, the 1 × 1 `post_quant_conv`, a 3 × 3 convolution, block, attention,
  block, then per level (deepest first) `num_res_blocks + 1` blocks (with attention at the
  `attn_resolutions`) and a nearest-neighbour 2× upsampling followed by a 3 × 3 convolution
  between levels, GroupNorm, swish, a 3 × 3 convolution to RGB.

`PRESETS` holds the published models' settings: `f16-16384` and `f16-1024` (taming's ImageNet
VQGANs, 16 × 16 codes at 256 px; the first is what dalle-mini and minDALL-E tokenize with) and
`f8-gumbel-8192` (taming's Gumbel f8, 32 × 32 codes). `dalle_jax.models.vqgan.convert` loads their
PyTorch weights.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx


class VQGANConfig(NamedTuple):
    """taming's `ddconfig` plus the codebook's size, width and kind."""

    ch: int = 128
    ch_mult: tuple[int, ...] = (1, 1, 2, 2, 4)
    num_res_blocks: int = 2
    attn_resolutions: tuple[int, ...] = (16,)
    resolution: int = 256
    z_channels: int = 256
    embed_dim: int = 256
    n_embed: int = 16384
    quantizer: str = "vq"

    @property
    def factor(self) -> int:
        """Pixels per code along a side."""
        return 2 ** (len(self.ch_mult) - 1)


PRESETS = {
    "f16-16384": VQGANConfig(),
    "f16-1024": VQGANConfig(n_embed=1024),
    "f8-gumbel-8192": VQGANConfig(ch_mult=(1, 1, 2, 4), attn_resolutions=(32,), n_embed=8192,
                                  quantizer="gumbel"),
}


def _swish(x):
    return x * jax.nn.sigmoid(x)


def _conv(cin, cout, kernel, rngs, strides=1, padding="SAME"):
    return nnx.Conv(cin, cout, (kernel, kernel), strides, padding=padding, rngs=rngs)


def _norm(channels, rngs):
    return nnx.GroupNorm(channels, num_groups=32, epsilon=1e-6, use_fast_variance=False,
                         rngs=rngs)


class ResnetBlock(nnx.Module):
    """norm, swish, conv, norm, swish, conv, plus the (1 × 1 projected) input."""

    def __init__(self, cin: int, cout: int, rngs: nnx.Rngs):
        self.norm1, self.conv1 = _norm(cin, rngs), _conv(cin, cout, 3, rngs)
        self.norm2, self.conv2 = _norm(cout, rngs), _conv(cout, cout, 3, rngs)
        self.shortcut = _conv(cin, cout, 1, rngs) if cin != cout else None

    def __call__(self, x):
        h = self.conv1(_swish(self.norm1(x)))
        h = self.conv2(_swish(self.norm2(h)))
        return (self.shortcut(x) if self.shortcut is not None else x) + h


class AttnBlock(nnx.Module):
    """Single-head self-attention over all positions, 1 × 1 projections, residual."""

    def __init__(self, channels: int, rngs: nnx.Rngs):
        self.norm = _norm(channels, rngs)
        self.q, self.k, self.v = (_conv(channels, channels, 1, rngs) for _ in range(3))
        self.proj_out = _conv(channels, channels, 1, rngs)

    def __call__(self, x):
        b, h, w, c = x.shape
        n = self.norm(x)
        q, k, v = (f(n).reshape(b, h * w, 1, c) for f in (self.q, self.k, self.v))
        a = jax.nn.dot_product_attention(q, k, v, implementation="xla")
        return x + self.proj_out(a.reshape(b, h, w, c))


class Level(nnx.Module):
    """One resolution of the encoder or decoder: blocks, their attention, the resampling."""

    def __init__(self, widths: list[tuple[int, int]], attention: bool, resample: str | None,
                 rngs: nnx.Rngs):
        self.blocks = nnx.List([ResnetBlock(i, o, rngs) for i, o in widths])
        out = widths[-1][1]
        self.attn = nnx.List([AttnBlock(o, rngs) for _, o in widths] if attention else [])
        self.resample = resample
        self.conv = (_conv(out, out, 3, rngs, strides=2, padding="VALID") if resample == "down"
                     else _conv(out, out, 3, rngs) if resample == "up" else None)

    def __call__(self, x):
        for i, block in enumerate(self.blocks):
            x = block(x)
            if len(self.attn):
                x = self.attn[i](x)
        if self.resample == "down":
            x = self.conv(jnp.pad(x, ((0, 0), (0, 1), (0, 1), (0, 0))))
        elif self.resample == "up":
            x = self.conv(jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2))
        return x


class Middle(nnx.Module):
    """block, attention, block at the lowest resolution."""

    def __init__(self, channels: int, rngs: nnx.Rngs):
        self.block_1, self.attn_1 = ResnetBlock(channels, channels, rngs), AttnBlock(channels, rngs)
        self.block_2 = ResnetBlock(channels, channels, rngs)

    def __call__(self, x):
        return self.block_2(self.attn_1(self.block_1(x)))


class VQGAN(nnx.Module):
    """`encode` (images → codes) and `decode` (codes → images); see the module docstring."""

    def __init__(self, config: VQGANConfig, *, rngs: nnx.Rngs):
        c = self.config = config
        if c.quantizer not in ("vq", "gumbel"):
            raise ValueError(f"quantizer {c.quantizer!r}; choose 'vq' or 'gumbel'")
        levels = len(c.ch_mult)
        widths = [c.ch * m for m in c.ch_mult]
        # encoder
        self.conv_in = _conv(3, c.ch, 3, rngs)
        down, cin, res = [], c.ch, c.resolution
        for i, cout in enumerate(widths):
            pairs = [(cin if j == 0 else cout, cout) for j in range(c.num_res_blocks)]
            down.append(Level(pairs, res in c.attn_resolutions,
                              "down" if i < levels - 1 else None, rngs))
            cin, res = cout, res // 2 if i < levels - 1 else res
        self.down = nnx.List(down)
        self.enc_mid = Middle(cin, rngs)
        self.enc_norm, self.enc_out = _norm(cin, rngs), _conv(cin, c.z_channels, 3, rngs)
        self.quant_conv = _conv(c.z_channels, c.embed_dim, 1, rngs)
        # codebook
        if c.quantizer == "vq":
            self.codebook = nnx.Param(jax.random.uniform(
                rngs.params(), (c.n_embed, c.embed_dim), minval=-1 / c.n_embed,
                maxval=1 / c.n_embed))
            self.logits = None
        else:  # GumbelVQ: logits of quant_conv's output (taming's `quantize.proj`)
            self.logits = _conv(c.embed_dim, c.n_embed, 1, rngs)
            self.codebook = nnx.Param(0.02 * jax.random.normal(rngs.params(), (c.n_embed,
                                                                               c.embed_dim)))
        # decoder
        self.post_quant_conv = _conv(c.embed_dim, c.z_channels, 1, rngs)
        self.dec_in = _conv(c.z_channels, widths[-1], 3, rngs)
        self.dec_mid = Middle(widths[-1], rngs)
        up, cin, res = [], widths[-1], c.resolution // c.factor
        for i in reversed(range(levels)):  # built deepest first, kept in that order
            cout = widths[i]
            pairs = [(cin if j == 0 else cout, cout) for j in range(c.num_res_blocks + 1)]
            up.append(Level(pairs, res in c.attn_resolutions, "up" if i > 0 else None, rngs))
            cin, res = cout, res * 2 if i > 0 else res
        self.up = nnx.List(up)
        self.dec_norm, self.dec_out = _norm(cin, rngs), _conv(cin, 3, 3, rngs)

    @property
    def grid(self) -> int:
        """Codes per side at the configured resolution."""
        return self.config.resolution // self.config.factor

    def encoder_output(self, images: jax.Array) -> jax.Array:
        """Images (B, H, W, 3) in [−1, 1] → the encoder's (B, H/f, W/f, z_channels)."""
        h = self.conv_in(images)
        for level in self.down:
            h = level(h)
        return self.enc_out(_swish(self.enc_norm(self.enc_mid(h))))

    def encode(self, images: jax.Array) -> jax.Array:
        """Images (B, H, W, 3) in [−1, 1] (H, W multiples of the factor f) → codes (B, H/f, W/f)."""
        z = self.quant_conv(self.encoder_output(images))
        if self.logits is not None:  # the mode of taming's Gumbel sample
            return jnp.argmax(self.logits(z), axis=-1).astype(jnp.int32)
        e = self.codebook[...]
        d = (jnp.sum(z * z, -1, keepdims=True) + jnp.sum(e * e, -1)
             - 2 * jnp.einsum("bhwd,nd->bhwn", z, e))
        return jnp.argmin(d, axis=-1).astype(jnp.int32)

    def decode(self, codes: jax.Array) -> jax.Array:
        """Codes (B, h, w) → images (B, h·f, w·f, 3), unclipped (about [−1, 1])."""
        h = self.dec_in(self.post_quant_conv(self.codebook[...][codes]))
        h = self.dec_mid(h)
        for level in self.up:
            h = level(h)
        return self.dec_out(_swish(self.dec_norm(h)))

"""The dVAE encoder and decoder of DALL·E, laid out like OpenAI's released `dall_e` modules.

No normalisation layers. The encoder maps images (B, H, W, 3) to logits over the codebook on a grid
downsampled 8× (three 2× max-pools, after the first three groups); the decoder maps codes, one-hot
or relaxed (B, g, g, vocab), back to 6 channels: 3 logit-Laplace locations μ then 3 log-scales
ln b (three 2× nearest upsamplings, after its first three groups). `downsample` (beyond the paper)
keeps fewer of the pools, the first ones, and of the upsamplings, the last ones: 2 gives a 4×
grid, whose widest groups then run at a quarter of the image's side. Every residual block is
`id_path(x) + res_path(x) / n_blocks²`, with the residual path four ReLU→conv steps at a quarter
of the output width. Module and parameter names follow the PyTorch modules
(`blocks.group_1.block_1.res_path.conv_1`), which keeps the weight converter a rename. Kernels
are (kh, kw, in, out) and carry logical axis names for sharding.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

# Logical axis names of a convolution kernel (kh, kw, in, out) and its bias (out,).
KERNEL_AXES = ("conv_height", "conv_width", "conv_in", "conv_out")
BIAS_AXES = ("conv_out",)
GROUPS = 4  # the released model always has four groups
DOWNSAMPLE = 3  # 2× resamplings between groups in the released model: a grid 8× smaller


def check_downsample(downsample: int) -> int:
    """The number of 2× pools (1, 2 or 3), or a ValueError naming the bad value."""
    if downsample not in (1, 2, 3):
        raise ValueError(f"model.downsample={downsample!r}; choose 1, 2 or 3 (2× pools; paper 3)")
    return downsample


class Conv(nnx.Module):
    """A 'same'-padded square convolution (of `stride`), initialised like `dall_e.utils.Conv2d`.

    Weights ~ N(0, 1 / (n_in·k²)), bias zero; computation in `dtype`, parameters in float32.
    """

    def __init__(self, n_in: int, n_out: int, k: int, *, stride: int = 1, dtype=jnp.float32,
                 rngs: nnx.Rngs):
        if k % 2 != 1:
            raise ValueError(f"kernel size must be odd, got {k}")
        init = jax.nn.initializers.variance_scaling(1.0, "fan_in", "normal")
        self.w = nnx.Param(init(rngs.params(), (k, k, n_in, n_out), jnp.float32),
                           out_sharding=KERNEL_AXES)
        self.b = nnx.Param(jnp.zeros((n_out,), jnp.float32), out_sharding=BIAS_AXES)
        self.dtype, self.stride = dtype, stride

    def __call__(self, x_bhwc: jax.Array) -> jax.Array:
        y = jax.lax.conv_general_dilated(
            x_bhwc.astype(self.dtype), self.w[...].astype(self.dtype),
            window_strides=(self.stride, self.stride),
            padding="SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"),
        )
        return y + self.b[...].astype(self.dtype)


class ResBlock(nnx.Module):
    """`id_path(x) + post_gain · res_path(x)`; `kernels` are the four residual kernel sizes."""

    def __init__(self, n_in: int, n_out: int, n_blocks: int, kernels: tuple[int, ...], *,
                 dtype=jnp.float32, rngs: nnx.Rngs):
        if n_out % 4:
            raise ValueError(f"block width must be a multiple of 4, got {n_out}")
        n_hid = n_out // 4
        self.post_gain = 1.0 / n_blocks**2
        self.id_path = Conv(n_in, n_out, 1, dtype=dtype, rngs=rngs) if n_in != n_out else None
        widths = [n_in, n_hid, n_hid, n_hid, n_out]
        self.res_path = nnx.Dict({
            f"conv_{i + 1}": Conv(widths[i], widths[i + 1], k, dtype=dtype, rngs=rngs)
            for i, k in enumerate(kernels)
        })

    def __call__(self, x: jax.Array) -> jax.Array:
        h = x
        for i in range(len(self.res_path)):
            h = self.res_path[f"conv_{i + 1}"](jax.nn.relu(h))
        identity = x if self.id_path is None else self.id_path(x)
        return identity + self.post_gain * h


def max_pool_2x2(x_bhwc: jax.Array) -> jax.Array:
    """2× max-pooling, (B, H, W, C) → (B, H/2, W/2, C), as a max over a reshape.

    The same values as `lax.reduce_window`, whose gradient XLA's CPU backend builds from index
    arrays of the input's full shape (a seventh of a `shapes` step's op time); this one's gradient is
    an elementwise mask (shared equally among tied maxima, which `reduce_window` gives to one).
    """
    b, h, w, c = x_bhwc.shape
    return jnp.max(x_bhwc.reshape(b, h // 2, 2, w // 2, 2, c), axis=(2, 4))


ENCODER_KERNELS = (3, 3, 3, 1)
DECODER_KERNELS = (1, 3, 3, 3)


def _group(n_in: int, n_out: int, n_blk: int, kernels, dtype, rngs) -> nnx.Dict:
    """`n_blk` blocks; the first changes the width from n_in to n_out."""
    return nnx.Dict({
        f"block_{i + 1}": ResBlock(n_in if i == 0 else n_out, n_out, GROUPS * n_blk, kernels,
                                   dtype=dtype, rngs=rngs)
        for i in range(n_blk)
    })


def _run_group(group: nnx.Dict, x: jax.Array) -> jax.Array:
    for i in range(len(group)):
        x = group[f"block_{i + 1}"](x)
    return x


class Encoder(nnx.Module):
    """Images in [0, 1] mapped by `pixels.map_pixels`, (B, H, W, C) → code logits (B, H/f, W/f,
    vocab) with f = 2^downsample (8 in the paper)."""

    def __init__(self, *, n_hid: int = 256, n_blk_per_group: int = 2, input_channels: int = 3,
                 vocab_size: int = 8192, output_channels: int | None = None, dtype=jnp.float32,
                 downsample: int = DOWNSAMPLE, rngs: nnx.Rngs):
        widths = [n_hid, n_hid, 2 * n_hid, 4 * n_hid, 8 * n_hid]
        self.input_channels = input_channels
        self.downsample = check_downsample(downsample)
        self.input = Conv(input_channels, n_hid, 7, dtype=dtype, rngs=rngs)
        self.groups = nnx.Dict({
            f"group_{g + 1}": _group(widths[g], widths[g + 1], n_blk_per_group, ENCODER_KERNELS,
                                     dtype, rngs)
            for g in range(GROUPS)
        })
        # The dVAE's output is `vocab_size` logits; a VQ-VAE asks for its embedding width instead.
        self.output = Conv(8 * n_hid, output_channels or vocab_size, 1, dtype=jnp.float32, rngs=rngs)

    def __call__(self, x_bhwc: jax.Array) -> jax.Array:
        if x_bhwc.ndim != 4 or x_bhwc.shape[-1] != self.input_channels:
            raise ValueError(f"encoder input must be (B, H, W, {self.input_channels}), got {x_bhwc.shape}")
        factor = 2 ** self.downsample
        if x_bhwc.shape[1] % factor or x_bhwc.shape[2] % factor:
            raise ValueError(f"image height and width must be multiples of {factor}, got "
                             f"{x_bhwc.shape[1:3]}")
        h = self.input(x_bhwc)
        for g in range(GROUPS):
            h = _run_group(self.groups[f"group_{g + 1}"], h)
            if g < self.downsample:
                h = max_pool_2x2(h)  # (B, H/2^(g+1), W/2^(g+1), C)
        return self.output(jax.nn.relu(h).astype(jnp.float32))


class Decoder(nnx.Module):
    """Codes (B, g, g, vocab) one-hot or relaxed → (B, fg, fg, 2·C): μ then ln b per channel, with
    f = 2^downsample (8 in the paper)."""

    def __init__(self, *, n_init: int = 128, n_hid: int = 256, n_blk_per_group: int = 2,
                 output_channels: int = 3, vocab_size: int = 8192, input_channels: int | None = None,
                 dtype=jnp.float32, downsample: int = DOWNSAMPLE, rngs: nnx.Rngs):
        widths = [n_init, 8 * n_hid, 4 * n_hid, 2 * n_hid, n_hid]
        self.vocab_size = vocab_size
        self.downsample = check_downsample(downsample)
        self.input_channels = input_channels or vocab_size
        self.input = Conv(self.input_channels, n_init, 1, dtype=jnp.float32, rngs=rngs)
        self.groups = nnx.Dict({
            f"group_{g + 1}": _group(widths[g], widths[g + 1], n_blk_per_group, DECODER_KERNELS,
                                     dtype, rngs)
            for g in range(GROUPS)
        })
        self.output = Conv(n_hid, 2 * output_channels, 1, dtype=dtype, rngs=rngs)

    def from_features(self, h: jax.Array) -> jax.Array:
        """Runs everything after the input convolution; h is (B, g, g, n_init)."""
        for g in range(GROUPS):
            h = _run_group(self.groups[f"group_{g + 1}"], h)
            if GROUPS - 1 - self.downsample <= g < GROUPS - 1:
                h = jnp.repeat(jnp.repeat(h, 2, axis=1), 2, axis=2)  # nearest 2× upsampling
        return self.output(jax.nn.relu(h)).astype(jnp.float32)

    def __call__(self, z_bhwv: jax.Array) -> jax.Array:
        if z_bhwv.ndim != 4 or z_bhwv.shape[-1] != self.input_channels:
            raise ValueError(f"decoder input must be (B, g, g, {self.input_channels}), got {z_bhwv.shape}")
        return self.from_features(self.input(z_bhwv.astype(jnp.float32)))

    def decode_codes(self, codes_bhw: jax.Array) -> jax.Array:
        """Hard codes (B, g, g) int → output; a row lookup, the same as a one-hot 1×1 convolution."""
        h = self.input.w[...][0, 0][codes_bhw] + self.input.b[...]  # (B, g, g, n_init)
        return self.from_features(h)

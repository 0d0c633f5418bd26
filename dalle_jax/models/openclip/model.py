"""OpenAI's and LAION's CLIP (open_clip's ViT-B/32, ViT-B/16, ViT-L/14) as a Flax NNX module.

The architecture of open_clip's `CLIP` with a `VisionTransformer` and a causal text transformer:

- image: non-overlapping patch × patch patches of the normalised pixels, a linear map without bias
  (open_clip's stride-patch convolution), a class token first, learned positions, LayerNorm
  (`ln_pre`), pre-norm residual blocks, LayerNorm (`ln_post`) of the class token, a projection.
- text: token embeddings plus learned positions over `context` slots, the same blocks under a
  causal mask, LayerNorm, and the slot of the end-of-text token (the largest id of each row, as
  open_clip pools) projected.
- a block: x + out(attention(LN(x))), then x + fc2(act(fc1(LN(x)))); act is exact GELU or, for
  OpenAI's weights, QuickGELU (x·σ(1.702x), the `-quickgelu` names); LayerNorm ε 1e-5.

`logit_scale` is the log of the learned inverse temperature. Embeddings come out unnormalised,
as open_clip's `encode_image` / `encode_text` give them; `scores` compares normalised ones.
Parameters are stacked per tower (a leading layer axis) and the blocks run under `lax.scan`.
`dalle_jax.models.openclip.convert` fills them from open_clip's PyTorch state dict.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from dalle_jax.models.dalle.transformer import layer_norm  # ε 1e-5, statistics in float32

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
HEAD_WIDTH = 64  # open_clip's vision heads: width // 64


class Arch(NamedTuple):
    """The sizes of one open_clip model."""

    embed_dim: int
    image_size: int
    patch: int
    vision_width: int
    vision_layers: int
    text_width: int
    text_heads: int
    text_layers: int
    context: int = 77
    vocab: int = 49408
    quick_gelu: bool = False


ARCHS = {
    "ViT-B-32": Arch(512, 224, 32, 768, 12, 512, 8, 12),
    "ViT-B-16": Arch(512, 224, 16, 768, 12, 512, 8, 12),
    "ViT-L-14": Arch(768, 224, 14, 1024, 24, 768, 12, 12),
}


def arch(name: str) -> Arch:
    """The sizes of an open_clip model name; `-quickgelu` (OpenAI's weights) switches GELU to
    QuickGELU. A ValueError lists the known names."""
    base, quick = (name[:-len("-quickgelu")], True) if name.endswith("-quickgelu") else (name, False)
    if base not in ARCHS:
        raise ValueError(f"open_clip model {name!r}: this module knows {sorted(ARCHS)} "
                         "(each also as NAME-quickgelu)")
    return ARCHS[base]._replace(quick_gelu=quick)


def _activation(quick: bool):
    if quick:
        return lambda x: x * jax.nn.sigmoid(1.702 * x)
    return lambda x: jax.nn.gelu(x, approximate=False)


class Blocks(nnx.Module):
    """`layers` pre-norm residual blocks of `width` and `heads`, parameters stacked by layer."""

    def __init__(self, *, width: int, layers: int, heads: int, rngs: nnx.Rngs):
        if width % heads:
            raise ValueError(f"width {width} is not a multiple of {heads} heads")
        self.heads = heads

        def normal(*shape, std=0.02):
            return nnx.Param(std * jax.random.normal(rngs.params(), (layers, *shape)))

        def const(value, *shape):
            return nnx.Param(jnp.full((layers, *shape), value, jnp.float32))

        self.ln1_scale, self.ln1_bias = const(1.0, width), const(0.0, width)
        self.in_proj, self.in_proj_bias = normal(width, 3 * width), const(0.0, 3 * width)
        self.out_proj, self.out_proj_bias = normal(width, width), const(0.0, width)
        self.ln2_scale, self.ln2_bias = const(1.0, width), const(0.0, width)
        self.fc, self.fc_bias = normal(width, 4 * width), const(0.0, 4 * width)
        self.proj, self.proj_bias = normal(4 * width, width), const(0.0, width)

    def params(self) -> dict[str, jax.Array]:
        """The stacked parameter arrays by name."""
        return {k: v[...] for k, v in vars(self).items() if isinstance(v, nnx.Param)}

    def __call__(self, x: jax.Array, *, causal: bool, quick_gelu: bool) -> jax.Array:
        """(B, L, W) → (B, L, W) through every block."""
        b, length, width = x.shape
        heads, act = self.heads, _activation(quick_gelu)

        def block(x, p):
            h = layer_norm(x, p["ln1_scale"], p["ln1_bias"])
            qkv = (h @ p["in_proj"] + p["in_proj_bias"]).reshape(b, length, 3, heads, -1)
            a = jax.nn.dot_product_attention(qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2],
                                             is_causal=causal, implementation="xla")
            x = x + a.reshape(b, length, width) @ p["out_proj"] + p["out_proj_bias"]
            h = layer_norm(x, p["ln2_scale"], p["ln2_bias"])
            return x + act(h @ p["fc"] + p["fc_bias"]) @ p["proj"] + p["proj_bias"], None
        return jax.lax.scan(block, x, self.params())[0]


class OpenClip(nnx.Module):
    """open_clip's CLIP: `encode_image`, `encode_text`, `scores`; see the module docstring."""

    def __init__(self, a: Arch, *, rngs: nnx.Rngs):
        self.arch = a
        if a.image_size % a.patch:
            raise ValueError(f"image_size {a.image_size} is not a multiple of patch {a.patch}")
        grid = a.image_size // a.patch
        vw, tw = a.vision_width, a.text_width

        def normal(*shape, std=0.02):
            return nnx.Param(std * jax.random.normal(rngs.params(), shape))

        def ones(n):
            return nnx.Param(jnp.ones((n,), jnp.float32))

        def zeros(n):
            return nnx.Param(jnp.zeros((n,), jnp.float32))

        # Rows (patch row, patch column, channel) of each flattened patch → width.
        self.patch_embed = normal(a.patch * a.patch * 3, vw)
        self.class_embedding = normal(vw)
        self.vision_pos = normal(grid * grid + 1, vw)
        self.ln_pre_scale, self.ln_pre_bias = ones(vw), zeros(vw)
        self.vision = Blocks(width=vw, layers=a.vision_layers, heads=vw // HEAD_WIDTH, rngs=rngs)
        self.ln_post_scale, self.ln_post_bias = ones(vw), zeros(vw)
        self.vision_proj = normal(vw, a.embed_dim, std=vw ** -0.5)
        self.token_embedding = normal(a.vocab, tw)
        self.text_pos = normal(a.context, tw, std=0.01)
        self.text = Blocks(width=tw, layers=a.text_layers, heads=a.text_heads, rngs=rngs)
        self.ln_final_scale, self.ln_final_bias = ones(tw), zeros(tw)
        self.text_proj = normal(tw, a.embed_dim, std=tw ** -0.5)
        self.logit_scale = nnx.Param(jnp.asarray(np.log(1 / 0.07), jnp.float32))

    def preprocess(self, images_uint8: np.ndarray) -> np.ndarray:
        """uint8 (B, H, W, 3) → the normalised float32 (B, S, S, 3) `encode_image` takes: the
        shorter side resized to S = image_size (bicubic), centre-cropped, OpenAI's mean and std."""
        from PIL import Image

        size = self.arch.image_size
        out = []
        for image in np.asarray(images_uint8):
            pil = Image.fromarray(image)
            scale = size / min(pil.size)
            w, h = max(size, round(pil.size[0] * scale)), max(size, round(pil.size[1] * scale))
            pil = pil.resize((w, h), Image.BICUBIC)
            left, top = (w - size) // 2, (h - size) // 2
            out.append(np.asarray(pil.crop((left, top, left + size, top + size)), np.float32))
        x = np.stack(out) / 255.0
        return ((x - np.asarray(OPENAI_MEAN, np.float32)) / np.asarray(OPENAI_STD, np.float32))

    def encode_image(self, pixels: jax.Array) -> jax.Array:
        """Normalised pixels (B, S, S, 3) → image embeddings (B, embed_dim)."""
        a = self.arch
        b, size = pixels.shape[0], pixels.shape[1]
        if pixels.shape[1:] != (a.image_size, a.image_size, 3):
            raise ValueError(f"images of shape {pixels.shape[1:]}; this model takes "
                             f"{(a.image_size, a.image_size, 3)} (see `preprocess`)")
        g, p = size // a.patch, a.patch
        patches = pixels.reshape(b, g, p, g, p, 3).transpose(0, 1, 3, 2, 4, 5).reshape(b, g * g, -1)
        x = patches @ self.patch_embed[...]
        cls = jnp.broadcast_to(self.class_embedding[...], (b, 1, x.shape[-1]))
        x = jnp.concatenate([cls, x], axis=1) + self.vision_pos[...]
        x = layer_norm(x, self.ln_pre_scale[...], self.ln_pre_bias[...])
        x = self.vision(x, causal=False, quick_gelu=a.quick_gelu)
        pooled = layer_norm(x[:, 0], self.ln_post_scale[...], self.ln_post_bias[...])
        return pooled @ self.vision_proj[...]

    def encode_text(self, ids: jax.Array) -> jax.Array:
        """Token ids (B, context) from `ClipTokenizer` → text embeddings (B, embed_dim)."""
        a = self.arch
        if ids.shape[1] != a.context:
            raise ValueError(f"text of {ids.shape[1]} slots; this model takes {a.context}")
        x = self.token_embedding[...][ids] + self.text_pos[...]
        x = self.text(x, causal=True, quick_gelu=a.quick_gelu)
        x = layer_norm(x, self.ln_final_scale[...], self.ln_final_bias[...])
        pooled = x[jnp.arange(x.shape[0]), jnp.argmax(ids, axis=-1)]
        return pooled @ self.text_proj[...]

    def scores(self, pixels: jax.Array, ids: jax.Array) -> jax.Array:
        """Cosine similarity (B_images, B_texts) of normalised embeddings, times the logit scale."""
        i = self.encode_image(pixels)
        t = self.encode_text(ids)
        i = i / jnp.linalg.norm(i, axis=-1, keepdims=True)
        t = t / jnp.linalg.norm(t, axis=-1, keepdims=True)
        return jnp.exp(self.logit_scale[...]) * i @ t.T

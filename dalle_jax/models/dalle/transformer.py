"""The DALL·E transformer: a decoder-only stack over one stream of text tokens then image codes.

Stream (length text_len + grid², matching `attention_masks.stream_mask`): position p holds token p
and its output predicts token p + 1. So the text positions 0 … T − 2 predict text tokens 1 … T − 1
over the text vocabulary, and positions T − 1 … T + N − 2 predict the N image codes over the image
vocabulary (the last text position is where the image begins). Logits are computed only over the
vocabulary a position can emit.

Embeddings (paper §2.2, appendix B): text tokens plus a learned position per text slot, where a
padding token at slot i is replaced by its own learned token (`text_vocab + i`); image codes plus
learned row and column embeddings. Pre-norm residual blocks (attention, then a 4× MLP), a final
LayerNorm. The layers' parameters are stacked on a leading `layers` axis and run under
`lax.scan`, each layer with its static pattern (`attention_masks.layer_kinds`). `remat` picks what
the backward pass recomputes, and with it how the stack runs:

- 'dots' (keep each layer's input and every matmul output the backward pass needs, so that it
  recomputes no matmul: see `REMAT`) or 'full' (keep only each layer's input): one scan over
  all layers, the attention picking the layer's pattern with `lax.switch`. Rematerialising inside
  the switch keeps one layer's working set.
- 'none': keep everything. A switch would then keep every pattern's attention residuals at every
  layer, so instead the paper's schedule, which repeats with a period of four, runs as a scan over
  repeats of that unit with static patterns, then the few layers left over, unrolled
  (`layer_groups`: a 64-layer model compiles eight layer bodies).

Parameters are float32; `dtype='bfloat16'` computes in bfloat16. Projections multiply the
flattened (batch · position) rows by each weight as it is stored (`project`); what differs on CPU
devices is behind `xla_cpu.switch`.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from dalle_jax.text_ids import PAD_ID
from dalle_jax.models.dalle import attention_masks
from dalle_jax.models.dalle.attention import IMPLEMENTATIONS, attend
from dalle_jax.xla_cpu import switch
from dalle_jax.models.dalle.gelu import gelu
from dalle_jax.parallel.partitioning import constrain

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
# 'dots' keeps what spares the backward pass every matmul of the forward: q, k, v, the MLP's
# pre-activation, the residual stream after attention, and the `blocksparse` attention's output
# and log-sum-exp (`band_attention`); it recomputes norms, GELU and the attention's layout copies.
REMAT = {"none": None,
         "dots": jax.checkpoint_policies.save_only_these_names(
             "qkv", "mlp_hidden", "residual_mid", "attention_out", "attention_lse"),
         "full": jax.checkpoint_policies.nothing_saveable}
_EPS = 1e-5
# Weight matrices and their biases stay float32 into `project`, which rounds them itself and
# returns their gradients unrounded; every other parameter is cast to the computation dtype.
PROJECTIONS = ("qkv", "qkv_bias", "out", "out_bias", "mlp_in", "mlp_in_bias", "mlp_out",
               "mlp_out_bias")


def normal_param(rngs, shape, axes, std=0.02):
    """A float32 parameter ~ N(0, std²) whose axes carry the logical names `axes`."""
    return nnx.Param(std * jax.random.normal(rngs.params(), shape, jnp.float32), out_sharding=axes)


def masked_param(rngs, shape, axes, keep: np.ndarray, axis: int, std=0.02):
    """`normal_param`, with the slices of `axis` where `keep` is False set to zero."""
    shape_keep = [1] * len(shape)
    shape_keep[axis] = len(keep)
    w = std * jax.random.normal(rngs.params(), shape, jnp.float32)
    return nnx.Param(w * jnp.asarray(keep.reshape(shape_keep), jnp.float32), out_sharding=axes)


def zeros_param(shape, axes):
    """A float32 parameter of zeros named by `axes`."""
    return nnx.Param(jnp.zeros(shape, jnp.float32), out_sharding=axes)


def ones_param(shape, axes):
    """A float32 parameter of ones named by `axes`."""
    return nnx.Param(jnp.ones(shape, jnp.float32), out_sharding=axes)


def project(x: jax.Array, w: jax.Array, bias: jax.Array | None = None, out_dtype=None, *,
            contract: int = 1) -> jax.Array:
    """Rows x (M, *K) times a weight w (*K, *N) plus `bias` (*N), float32 accumulation, as
    `out_dtype` (default x's dtype); see `xla_cpu.switch.project`."""
    return switch.project(x, w, bias, out_dtype, contract=contract)


def rows_of(table: jax.Array, ids: jax.Array) -> jax.Array:
    """table[ids]: the rows of an embedding table (V, W) for a batch of ids, with the table
    gathered whole first. Left to itself, XLA looks up a table split over its width (W over
    `fsdp`) for the global batch on every device and all-gathers the result: at `paper` on 512
    chips, 7.75 GiB per device; the table itself is a few hundred MiB."""
    return constrain(table, (None, None))[ids]


def compute_params(p: dict, dtype) -> dict:
    """One layer's (or the stacked) parameters as the blocks take them: `PROJECTIONS` as they are
    (float32, for `project`), the rest cast to the computation dtype."""
    return {k: v if k in PROJECTIONS else v.astype(dtype) for k, v in p.items()}


def layer_norm(x: jax.Array, scale: jax.Array, bias: jax.Array) -> jax.Array:
    """LayerNorm over the last axis, statistics in float32."""
    x32 = x.astype(jnp.float32)
    mean = x32.mean(-1, keepdims=True)
    var = jnp.square(x32 - mean).mean(-1, keepdims=True)
    return ((x32 - mean) * jax.lax.rsqrt(var + _EPS) * scale + bias).astype(x.dtype)


def head_logits(h: jax.Array, weight: jax.Array) -> jax.Array:
    """Hidden states (..., W) times an output head (W, V) → float32 logits (..., V)."""
    rows = project(h.reshape(-1, h.shape[-1]), weight, out_dtype=jnp.float32)
    return rows.reshape(h.shape[:-1] + (-1,))


# Logical axes of each stacked layer parameter (leading `layers` axis): what the rules split.
LAYER_AXES = {
    "ln1_scale": ("layers", "norm"), "ln1_bias": ("layers", "norm"),
    "qkv": ("layers", "embed", None, "heads", "head_dim"),
    # (layers, 3, heads · head_dim): flat, so that FSDP can split it where neither the heads nor
    # the head width alone divide (the paper's 3 MiB bias over 128 devices)
    "qkv_bias": ("layers", None, "heads_flat"),
    "out": ("layers", "heads", "head_dim", "embed"), "out_bias": ("layers", "norm"),
    "ln2_scale": ("layers", "norm"), "ln2_bias": ("layers", "norm"),
    "mlp_in": ("layers", "embed", "mlp"), "mlp_in_bias": ("layers", "mlp_bias"),
    "mlp_out": ("layers", "mlp", "embed"), "mlp_out_bias": ("layers", "norm"),
}


class Layers(nnx.Module):
    """`depth` pre-norm blocks with their parameters stacked on a leading `layers` axis.

    `slots` ≥ `heads` heads are stored; the slots past `heads` are zero (query, key, value and
    output weights) and their attention output is masked, so they stay zero and the model is the
    `heads`-head one. They exist so that a `tensor` mesh axis divides the stored heads (the
    paper's 62 heads in 64 slots split 4 or 8 ways)."""

    def __init__(self, *, depth: int, width: int, heads: int, head_dim: int, mlp_ratio: int,
                 rngs: nnx.Rngs, slots: int = 0):
        mlp = mlp_ratio * width
        out_std = 0.02 / np.sqrt(2 * depth)  # residual branches scaled down with depth
        slots = slots or heads
        keep = np.arange(slots) < heads
        a = LAYER_AXES
        self.ln1_scale = ones_param((depth, width), a["ln1_scale"])
        self.ln1_bias = zeros_param((depth, width), a["ln1_bias"])
        self.qkv = masked_param(rngs, (depth, width, 3, slots, head_dim), a["qkv"], keep, 3)
        self.qkv_bias = zeros_param((depth, 3, slots * head_dim), a["qkv_bias"])
        self.out = masked_param(rngs, (depth, slots, head_dim, width), a["out"], keep, 1, out_std)
        self.out_bias = zeros_param((depth, width), a["out_bias"])
        self.ln2_scale = ones_param((depth, width), a["ln2_scale"])
        self.ln2_bias = zeros_param((depth, width), a["ln2_bias"])
        self.mlp_in = normal_param(rngs, (depth, width, mlp), a["mlp_in"])
        self.mlp_in_bias = zeros_param((depth, mlp), a["mlp_in_bias"])
        self.mlp_out = normal_param(rngs, (depth, mlp, width), a["mlp_out"], out_std)
        self.mlp_out_bias = zeros_param((depth, width), a["mlp_out_bias"])

    def stacked(self) -> dict[str, jax.Array]:
        """The stacked parameter arrays by name."""
        return {name: getattr(self, name)[...] for name in vars(self)
                if isinstance(getattr(self, name), nnx.Param)}


def attention_inputs(p: dict, x: jax.Array) -> jax.Array:
    """q, k, v (B, L, 3, H, D) of one layer for its input x (B, L, W): LayerNorm, projection."""
    b, length, width = x.shape
    heads, head_dim = p["qkv"].shape[-2:]
    h = layer_norm(x.reshape(b * length, width), p["ln1_scale"], p["ln1_bias"])
    bias = p["qkv_bias"].reshape(3, heads, head_dim)
    qkv = switch.checkpoint_name(project(h, p["qkv"], bias), "qkv")  # (B·L, 3, H, D)
    return constrain(qkv.reshape(b, length, 3, heads, head_dim),
                     ("batch", None, None, "heads", None))


def block_output(p: dict, x: jax.Array, a: jax.Array) -> jax.Array:
    """The rest of a block: x + out(a), then x + MLP(LayerNorm(x)); a is (B, L, H, D)."""
    b, length, width = x.shape
    a = a.reshape((b * length,) + a.shape[2:])  # (B·L, H, D)
    x = switch.checkpoint_name(x.reshape(b * length, width) + project(
        a, p["out"], p["out_bias"], contract=2), "residual_mid")
    h = layer_norm(x, p["ln2_scale"], p["ln2_bias"])
    h = gelu(switch.checkpoint_name(project(h, p["mlp_in"], p["mlp_in_bias"]), "mlp_hidden"))
    h = constrain(h, ("batch", "mlp"))  # rows are (batch · position)
    x = x + project(h, p["mlp_out"], p["mlp_out_bias"])
    return constrain(x.reshape(b, length, width), ("batch", None, None))


def block(p: dict, x: jax.Array, attn_fn) -> jax.Array:
    """One pre-norm block on (B, L, W) with the parameters `p` of one layer."""
    qkv = attention_inputs(p, x)
    return block_output(p, x, attn_fn(qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]))


def unused_slot_parameters(model: ml_collections.ConfigDict) -> int:
    """How many stored parameters the zero head slots of `config.model` hold (0 without
    `head_slots`): what a count of the stored arrays has beyond the model's own."""
    extra = max(0, (model.get("head_slots", 0) or model.heads) - model.heads)
    return model.depth * extra * model.head_dim * (4 * model.width + 3)


def layer_groups(kinds: tuple[str, ...]) -> tuple[tuple[str, ...], int, tuple[str, ...]]:
    """(unit, repeats, tail) with kinds == unit · repeats + tail and the fewest layer bodies to
    compile (len(unit) + len(tail)); ties go to the shorter unit. Paper, 64 layers: (row, column,
    row, row) × 15, then (row, column, row, conv)."""
    best = None
    for size in range(1, len(kinds) + 1):
        unit = kinds[:size]
        repeats = 1
        while kinds[repeats * size:(repeats + 1) * size] == unit:
            repeats += 1
        tail = kinds[repeats * size:]
        if best is None or size + len(tail) < len(best[0]) + len(best[2]):
            best = (unit, repeats, tail)
    return best


class DalleTransformer(nnx.Module):
    """Text-to-image-code transformer; `__call__(text, image) → (text_logits, image_logits)`."""

    def __init__(self, *, text_vocab: int, text_len: int, image_vocab: int, grid: int,
                 width: int, depth: int, heads: int, head_dim: int, mlp_ratio: int = 4,
                 attention: str = "dense", pattern: str = "sparse", conv_kernel: int = 11,
                 block_size: int = 64, dtype: str = "float32", remat: str = "none",
                 splash_interpret: bool = False, splash_blocks: tuple[int, int] = (0, 0),
                 head_slots: int = 0, cudnn_impl: str = "cudnn", rngs: nnx.Rngs):
        if attention not in IMPLEMENTATIONS:
            raise ValueError(f"model.attention={attention!r}; choose one of {IMPLEMENTATIONS}")
        if dtype not in DTYPES:
            raise ValueError(f"model.dtype={dtype!r}; choose one of {sorted(DTYPES)}")
        if remat not in REMAT:
            raise ValueError(f"model.remat={remat!r}; choose one of {sorted(REMAT)}")
        if text_len < 1 or grid < 1:
            raise ValueError(f"need text_len ≥ 1 and grid ≥ 1, got {text_len} and {grid}")
        if head_slots and head_slots < heads:
            raise ValueError(f"model.head_slots={head_slots} is fewer than model.heads={heads}; "
                             "use 0 (as many as heads) or at least that many")
        self.text_vocab, self.text_len, self.image_vocab, self.grid = text_vocab, text_len, image_vocab, grid
        self.attention, self.conv_kernel, self.block_size = attention, conv_kernel, block_size
        self.splash_interpret = splash_interpret
        if cudnn_impl not in ("cudnn", "xla"):
            raise ValueError(f"model.cudnn_impl={cudnn_impl!r}; choose 'cudnn' or 'xla'")
        self.cudnn_impl = cudnn_impl
        self.splash_blocks = tuple(b or block_size for b in splash_blocks)
        self.dtype, self.remat = DTYPES[dtype], remat
        self.kinds = attention_masks.layer_kinds(depth, pattern)
        self.text_embed = normal_param(rngs, (text_vocab + text_len, width), ("vocab", "embed"))
        self.text_pos = normal_param(rngs, (text_len, width), (None, "embed"))
        self.image_embed = normal_param(rngs, (image_vocab, width), ("vocab", "embed"))
        self.row_embed = normal_param(rngs, (grid, width), (None, "embed"))
        self.col_embed = normal_param(rngs, (grid, width), (None, "embed"))
        self.heads = heads
        self.layers = Layers(depth=depth, width=width, heads=heads, head_dim=head_dim,
                             mlp_ratio=mlp_ratio, rngs=rngs, slots=head_slots)
        self.final_scale = ones_param((width,), ("norm",))
        self.final_bias = zeros_param((width,), ("norm",))
        self.text_head = normal_param(rngs, (width, text_vocab), ("embed", "vocab"))
        self.image_head = normal_param(rngs, (width, image_vocab), ("embed", "vocab"))

    @classmethod
    def from_config(cls, model: ml_collections.ConfigDict, seed: int = 0) -> "DalleTransformer":
        """Builds the transformer that `config.model` describes."""
        return cls(text_vocab=model.text_vocab, text_len=model.text_len,
                   image_vocab=model.image_vocab, grid=model.grid, width=model.width,
                   depth=model.depth, heads=model.heads, head_dim=model.head_dim,
                   mlp_ratio=model.mlp_ratio, attention=model.attention, pattern=model.pattern,
                   conv_kernel=model.conv_kernel, block_size=model.block_size, dtype=model.dtype,
                   remat=model.remat, splash_interpret=model.get("splash_interpret", False),
                   splash_blocks=(model.get("splash_block_q", 0), model.get("splash_block_kv", 0)),
                   head_slots=model.get("head_slots", 0),
                   cudnn_impl=model.get("cudnn_impl", "cudnn"), rngs=nnx.Rngs(seed))

    @property
    def length(self) -> int:
        """Stream length: text_len + grid²."""
        return self.text_len + self.grid * self.grid

    def embed_text(self, text: jax.Array) -> jax.Array:
        """(B, T) text ids → (B, T, W): token (a pad token per slot) plus slot embeddings."""
        slots = jnp.arange(self.text_len)
        text = jnp.where(text == PAD_ID, self.text_vocab + slots, text)
        return rows_of(self.text_embed[...], text) + self.text_pos[...]

    def embed_image(self, codes: jax.Array, start: jax.Array | int = 0) -> jax.Array:
        """(B, n) codes at raster positions start … start + n − 1 → (B, n, W): token plus row and
        column embeddings."""
        pos = start + jnp.arange(codes.shape[1])
        g = self.grid
        return (rows_of(self.image_embed[...], codes) + self.row_embed[...][pos // g]
                + self.col_embed[...][pos % g])

    def embed(self, text: jax.Array, image: jax.Array) -> jax.Array:
        """(B, T) text ids and (B, g, g) or (B, g²) codes → (B, T + g², W) stream embeddings."""
        image = image.reshape(image.shape[0], -1)
        return jnp.concatenate([self.embed_text(text), self.embed_image(image)], axis=1)

    def _attention_fn(self, kind: str):
        mask = attention_masks.stream_mask(kind, self.text_len, self.grid, self.conv_kernel)
        order = (attention_masks.column_major_order(self.text_len, self.grid)
                 if kind == "column" and self.attention != "dense" else None)
        attn = functools.partial(attend, mask=mask, impl=self.attention,
                                 block_size=self.block_size, order=order,
                                 interpret=self.splash_interpret, splash_blocks=self.splash_blocks,
                                 cudnn_impl=self.cudnn_impl)
        slots = self.layers.qkv.shape[3]
        if slots == self.heads:
            return attn
        keep = (np.arange(slots) < self.heads)[:, None]  # (H, 1): the heads past `heads` are off

        def masked(q, k, v):
            return attn(q, k, v) * keep.astype(q.dtype)
        return masked

    def _layer(self, attn_fn):
        """layer(params of one layer, x) → x, rematerialised as `self.remat` says (only ever
        inside a scan, which keeps XLA from merging the recomputation with the forward pass)."""
        dtype = self.dtype

        def layer(p, x):
            return block(compute_params(p, dtype), x, attn_fn)
        if self.remat == "none":
            return layer
        return jax.checkpoint(layer, policy=REMAT[self.remat], prevent_cse=False)

    def _static_layers(self, kinds: tuple[str, ...]):
        """f(x, params with a leading axis of len(kinds)) running those layers in order."""
        layers = [self._layer(self._attention_fn(k)) for k in kinds]

        def run(x, p):
            for i, layer in enumerate(layers):
                x = layer(jax.tree.map(lambda v: v[i], p), x)
            return x
        return run

    def _switched_stack(self, x: jax.Array, stacked: dict) -> jax.Array:
        """All layers under one scan; each picks its pattern with `lax.switch` (remat inside)."""
        distinct = sorted(set(self.kinds), key=self.kinds.index)
        fns = [self._attention_fn(k) for k in distinct]
        ids = jnp.asarray([distinct.index(k) for k in self.kinds], jnp.int32)

        def step(x, layer_and_kind):
            p, kind = layer_and_kind
            attn = fns[0] if len(fns) == 1 else (
                lambda q, k, v: jax.lax.switch(kind, fns, q, k, v))
            return self._layer(attn)(p, x), None
        return jax.lax.scan(step, x, (stacked, ids))[0]

    def _grouped_stack(self, x: jax.Array, stacked: dict) -> jax.Array:
        """Scan over repeats of the schedule's unit with static patterns, then the rest."""
        unit, repeats, tail = layer_groups(self.kinds)
        scanned = len(unit) * repeats if repeats > 1 else 0
        if scanned:
            body = self._static_layers(unit)
            grouped = jax.tree.map(lambda v: v[:scanned].reshape(repeats, len(unit), *v.shape[1:]),
                                   stacked)
            x = jax.lax.scan(lambda x, p: (body(x, p), None), x, grouped)[0]
        rest = self.kinds[scanned:]
        if rest:
            x = self._static_layers(rest)(x, jax.tree.map(lambda v: v[scanned:], stacked))
        return x

    def hidden(self, text: jax.Array, image: jax.Array) -> jax.Array:
        """Final-normalised hidden states (B, T + g², W) of the stream."""
        x = constrain(self.embed(text, image).astype(self.dtype), ("batch", None, None))
        stack = self._grouped_stack if self.remat == "none" else self._switched_stack
        x = stack(x, self.layers.stacked())
        return layer_norm(x, self.final_scale[...], self.final_bias[...])

    def __call__(self, text: jax.Array, image: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(text_logits (B, T − 1, text_vocab), image_logits (B, g², image_vocab)), float32.

        text_logits[:, i] predicts text token i + 1; image_logits[:, j] predicts image code j.
        """
        h = self.hidden(text, image)
        t = self.text_len

        def head(rows, weight):
            return constrain(head_logits(rows, weight[...]), ("batch", None, "vocab"))
        return head(h[:, :t - 1], self.text_head), head(h[:, t - 1:-1], self.image_head)

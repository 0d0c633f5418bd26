"""Masked multi-head attention under a static numpy mask, in three interchangeable implementations.

`attend(q, k, v, mask, impl=…)` with q, k, v of shape (B, L, H, D) and `mask` an (L, L) numpy
boolean (`mask[q, k]`: query q may see key k), returns (B, L, H, D); q is scaled by 1/√D here.
`auto` picks one per platform when the step is traced (`resolve`).

- `dense`: one masked einsum over all L × L pairs: the reference.
- `blocksparse`: plain XLA, for masks made of a global prefix and a band, which is what every
  DALL·E pattern is (`band_plan`). The prefix (the text) is the longest run of first positions that
  every later query sees in full and that never see a later position: its queries attend densely
  among themselves, and every later query scores all prefix keys with one plain matmul. The rest
  (the image) is cut into blocks of `block_size`; a query block meets key blocks only at the few
  block offsets (diagonals) where the mask has entries, and those key blocks are static shifted
  slices of the keys, so no gather or scatter is needed (XLA's CPU scatter is slow). FLOPs and
  memory grow with the band's width, not with L². `order` (a permutation of positions, e.g.
  `attention_masks.column_major_order`) is applied first and undone after: the column pattern is a
  band in column-major order, as the paper arranges it.
- `splash`: JAX's Pallas splash attention (the TPU kernel) with the same numpy mask. Under a mesh
  (`partitioning.activation_sharding`) it runs inside `jax.shard_map` over the batch axes and the
  heads axis the rules give, each shard calling a kernel built for its own heads (a Mosaic kernel
  cannot be partitioned by XLA). Its query and key blocks (`splash_blocks`, default `block_size`)
  are rounded up to multiples of 128, as its kernels require. On devices other than TPUs it runs
  only in Pallas interpret mode, and only when asked (`interpret=True`, the config's
  `model.splash_interpret`): that is how the CPU tests check it against `dense`. Its output and
  log-sum-exp carry the checkpoint name `attention_out`.
- `cudnn`: `jax.nn.dot_product_attention` with cuDNN's fused kernel (GPUs, bfloat16 or float16):
  `is_causal`, so the kernel skips the blocks above the diagonal, plus the layer's pattern as an
  additive bias built once per trace, one (L, L) plane per head and a batch of 1 (cuDNN
  differentiates a bias only in that shape). It is never vmapped (the cached sampler has its own
  attention). `cudnn_impl='xla'` makes the same call with JAX's XLA implementation, which runs
  anywhere: that is how the CPU tests check it against `dense`.

Blocks are padded to a multiple of the block size; padding keys are never seen, padding queries
are dropped.
"""

from __future__ import annotations

import functools
import logging
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from dalle_jax.models.dalle.attention_masks import MASKED
from dalle_jax.models.dalle.band_attention import band_attention
from dalle_jax.parallel import partitioning
from dalle_jax.xla_cpu import switch

IMPLEMENTATIONS = ("dense", "blocksparse", "splash", "cudnn", "auto")
SPLASH_LANES = 128
# The bias of a masked pair for `cudnn`: what JAX itself uses for bfloat16 (cuDNN mishandles the
# difference of two much larger negatives); exp of it is 0 in every dtype.
CUDNN_MASKED = -float(2 << 40)


def attend(q: jax.Array, k: jax.Array, v: jax.Array, mask: np.ndarray, *, impl: str = "dense",
           block_size: int = 64, order: np.ndarray | None = None, interpret: bool = False,
           splash_blocks: tuple[int, int] | None = None, cudnn_impl: str = "cudnn") -> jax.Array:
    """Softmax(q kᵀ/√D + mask) v for (B, L, H, D) inputs; see the module docstring.

    `interpret` and `splash_blocks` (query block, key block) concern `splash` only, `cudnn_impl`
    ('cudnn' or 'xla') `cudnn` only; `order` applies to `blocksparse` and `splash`."""
    if impl not in IMPLEMENTATIONS:
        raise ValueError(f"attention implementation {impl!r}; choose one of {IMPLEMENTATIONS}")
    length = q.shape[1]
    if mask.shape != (length, length):
        raise ValueError(f"mask shape {mask.shape} does not match sequence length {length}")
    if impl == "auto":
        impl = resolve(impl, dtype=q.dtype)
    if impl == "cudnn":
        return _cudnn(q, k, v, mask, cudnn_impl)
    q = q * (q.shape[-1] ** -0.5)
    if impl == "dense":
        return _dense(q, k, v, mask)
    if order is not None:
        q, k, v = (x[:, order] for x in (q, k, v))
        mask = mask[np.ix_(order, order)]
    if impl == "blocksparse":
        out = _blocksparse(q, k, v, band_plan(mask, block_size))
    else:
        out = _splash(q, k, v, mask, splash_blocks or (block_size, block_size), interpret)
    if order is not None:
        out = out[:, np.argsort(order)]
    return out


def resolve(impl: str, *, platform: str | None = None, dtype=jnp.bfloat16) -> str:
    """The implementation `impl` stands for on `platform` (default: the traced step's,
    `switch.target_platform`): `auto` is `splash` on TPUs, `cudnn` on GPUs where its kernel
    compiles for `dtype` (else `blocksparse`), `blocksparse` elsewhere; the others are
    themselves. The choice is logged once per platform and dtype."""
    if impl != "auto":
        return impl
    platform = platform or switch.target_platform()
    if platform == "tpu":
        choice = "splash"
    elif platform in ("gpu", "cuda", "rocm") and cudnn_compiles(jnp.dtype(dtype).name):
        choice = "cudnn"
    else:
        choice = "blocksparse"
    _log_choice(platform, jnp.dtype(dtype).name, choice)
    return choice


@functools.cache
def _log_choice(platform: str, dtype: str, choice: str) -> None:
    logging.info("model.attention='auto' on %s devices (%s): %s", platform, dtype, choice)


@functools.cache
def cudnn_compiles(dtype: str = "bfloat16") -> bool:
    """Whether cuDNN's fused attention compiles on the default backend for `dtype` (checked once:
    a small causal call with a bias, forward and backward, compiled and not run)."""
    x = jax.ShapeDtypeStruct((1, 128, 2, 64), jnp.dtype(dtype))
    bias = jax.ShapeDtypeStruct((1, 2, 128, 128), jnp.dtype(dtype))

    def loss(q, k, v, b):
        return jax.nn.dot_product_attention(q, k, v, bias=b, is_causal=True,
                                            implementation="cudnn").astype(jnp.float32).sum()
    try:
        jax.jit(jax.grad(loss, argnums=(0, 1, 2))).lower(x, x, x, bias).compile()
        return True
    except Exception as e:  # noqa: BLE001 (any failure means: not this kernel here)
        logging.info("cuDNN attention does not compile here (%s: %s)", type(e).__name__,
                     str(e).splitlines()[0] if str(e) else "")
        return False


def _cudnn(q, k, v, mask, cudnn_impl):
    if cudnn_impl not in ("cudnn", "xla"):
        raise ValueError(f"cudnn_impl={cudnn_impl!r}; choose 'cudnn' or 'xla'")
    if cudnn_impl == "cudnn":
        platform = switch.target_platform()
        if platform not in ("gpu", "cuda", "rocm"):
            raise ValueError(f"model.attention='cudnn' is cuDNN's GPU kernel, and these are "
                             f"{platform} devices: choose 'blocksparse' or 'auto'")
        if q.dtype not in (jnp.bfloat16, jnp.float16):
            raise ValueError(f"model.attention='cudnn' needs bfloat16 or float16 activations, got "
                             f"{q.dtype}: set model.dtype='bfloat16'")
    length, heads = q.shape[1], q.shape[2]
    causal = np.tril(np.ones((length, length), bool))
    if (mask & ~causal).any():
        raise ValueError("cudnn attention takes causal patterns only (is_causal)")
    bias = None
    if not np.array_equal(mask, causal):  # a pattern within the causal triangle
        plane = np.where(mask, 0.0, CUDNN_MASKED).astype(q.dtype)
        bias = jnp.broadcast_to(jnp.asarray(plane), (1, heads, length, length))
    return jax.nn.dot_product_attention(q, k, v, bias=bias, is_causal=True,
                                        implementation=cudnn_impl)


def _dense(q, k, v, mask):
    weights = _softmax_weights(jnp.einsum("bqhd,bkhd->bhqk", q, k), mask, v.dtype)
    return jnp.einsum("bhqk,bkhd->bqhd", weights, v)


def _pad(x, length):
    return jnp.pad(x, ((0, 0), (0, length - x.shape[1]), (0, 0), (0, 0)))


def _padded_mask(mask: np.ndarray, block: int) -> np.ndarray:
    if block < 1:
        raise ValueError(f"attention block_size must be positive, got {block}")
    length = mask.shape[0]
    padded_length = -(-length // block) * block
    out = np.zeros((padded_length, padded_length), dtype=bool)
    out[:length, :length] = mask
    idx = np.arange(length, padded_length)
    out[idx, idx] = True
    return out


class BandPlan(NamedTuple):
    """How `blocksparse` covers a mask: a dense prefix, then a band of block diagonals.

    prefix: length G of the global prefix; prefix_mask: (G, G) mask among its positions.
    block: block size; offsets: the block diagonals o (key block = query block − o) that hold
    entries of the rest; tiles: (n, block, len(offsets) · block) mask of each query block of the
    rest against its key blocks, side by side in the order of `offsets`.
    """

    prefix: int
    prefix_mask: np.ndarray
    block: int
    offsets: tuple[int, ...]
    tiles: np.ndarray

    @property
    def keys_per_query(self) -> int:
        """Keys scored by each query of the rest: the prefix plus its band (the prefix alone when
        the whole mask is a prefix, as a causal one is)."""
        return self.prefix + (len(self.offsets) * self.block if len(self.tiles) else 0)


def global_prefix(mask: np.ndarray) -> int:
    """Largest G such that every G' ≤ G has mask[G':, :G'] all True and mask[:G', G':] all False
    (the prefix grows position by position while it stays global; for a causal mask such as the
    text part of the stream the second condition always holds)."""
    length = mask.shape[0]
    rows = np.arange(length)
    # seen_from[j]: first query row from which every later row sees key j (length if none does).
    all_below = np.logical_and.accumulate(mask[::-1], axis=0)[::-1]
    seen_from = np.where(all_below.any(0), np.argmax(all_below, axis=0), length)
    # last_seen[i]: the last key query i sees (-1 if none).
    last_seen = np.where(mask.any(1), length - 1 - np.argmax(mask[:, ::-1], axis=1), -1)
    need = np.maximum.accumulate(seen_from)  # need[G-1] ≤ G: every later row sees keys < G
    reach = np.maximum.accumulate(last_seen)  # reach[G-1] < G: the first G see nothing later
    ok = (need <= rows + 1) & (reach < rows + 1)
    return int(np.argmin(ok)) if not ok.all() else length


def band_plan(mask: np.ndarray, block: int) -> BandPlan:
    """The prefix and block band of a boolean (L, L) mask for `blocksparse`."""
    if block < 1:
        raise ValueError(f"attention block_size must be positive, got {block}")
    g = global_prefix(mask)
    rest = mask[g:, g:]
    n = -(-rest.shape[0] // block)
    padded = np.zeros((n * block, n * block), dtype=bool)
    padded[:rest.shape[0], :rest.shape[0]] = rest
    touched = padded.reshape(n, block, n, block).any(axis=(1, 3))
    qi, kj = np.nonzero(touched)
    offsets = tuple(range(int((qi - kj).min()), int((qi - kj).max()) + 1)) if len(qi) else (0,)
    tiles = np.zeros((n, block, len(offsets) * block), dtype=bool)
    for slot, o in enumerate(offsets):
        for i in range(max(0, o), min(n, n + o)):
            tiles[i, :, slot * block:(slot + 1) * block] = padded[
                i * block:(i + 1) * block, (i - o) * block:(i - o + 1) * block]
    return BandPlan(g, mask[:g, :g], block, offsets, tiles)


def _softmax_weights(logits, mask, dtype):
    logits = jnp.where(mask, logits, MASKED)
    return jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(dtype)


def _blocksparse(q, k, v, plan: BandPlan):
    b, length, h, d = q.shape
    g, block, offsets = plan.prefix, plan.block, plan.offsets
    n = plan.tiles.shape[0]
    q, k, v = (x.transpose(0, 2, 1, 3) for x in (q, k, v))  # (B, H, L, D): batched matmuls
    outs = []
    if g:  # prefix queries: dense among the prefix
        w = _softmax_weights(jnp.einsum("bhqd,bhkd->bhqk", q[:, :, :g], k[:, :, :g]),
                             plan.prefix_mask, v.dtype)
        outs.append(jnp.einsum("bhqk,bhkd->bhqd", w, v[:, :, :g]))
    if length > g:
        def blocks(x, before=0, after=0):  # rest of x → (B, H, before + n + after, block, D)
            rest = x[:, :, g:]
            pad = ((0, 0), (0, 0), (before * block, (n + after) * block - rest.shape[2]), (0, 0))
            return jnp.pad(rest, pad).reshape(b, h, before + n + after, block, d)

        before, after = max(0, max(offsets)), max(0, -min(offsets))
        kb, vb = blocks(k, before, after), blocks(v, before, after)

        def band(xb):  # key block i − o of query block i, for each offset, side by side
            parts = [xb[:, :, before - o:before - o + n] for o in offsets]
            return jnp.stack(parts, axis=3).reshape(b, h, n, len(offsets) * block, d)

        prefix = (k[:, :, :g], v[:, :, :g]) if g else (None, None)
        out = band_attention(blocks(q), band(kb), band(vb), plan.tiles, *prefix)
        outs.append(out.reshape(b, h, n * block, d)[:, :, :length - g])
    return jnp.concatenate(outs, axis=2).transpose(0, 2, 1, 3)


def _lanes(block: int) -> int:
    if block < 1:
        raise ValueError(f"splash block size must be positive, got {block}")
    return -(-block // SPLASH_LANES) * SPLASH_LANES


def _splash_kernel(mask: np.ndarray, heads: int, blocks: tuple[int, int], interpret: bool):
    # Built per trace (not cached): the kernel holds its block metadata as arrays of that trace.
    from jax.experimental.pallas.ops.tpu import splash_attention as splash

    bq, bkv = blocks
    sizes = splash.BlockSizes(block_q=bq, block_kv=bkv, block_kv_compute=bkv, block_q_dkv=bq,
                              block_kv_dkv=bkv, block_kv_dkv_compute=bkv, block_q_dq=bq,
                              block_kv_dq=bkv)
    heads_mask = splash.MultiHeadMask([splash.NumpyMask(mask)] * heads)
    return splash.make_splash_mha(heads_mask, block_sizes=sizes, head_shards=1, q_seq_shards=1,
                                  residual_checkpoint_name="attention_out", interpret=interpret)


def _splash(q, k, v, mask, blocks, interpret):
    platform = switch.target_platform()
    if platform != "tpu" and not interpret:
        raise ValueError(f"model.attention='splash' is the TPU kernel, and these are {platform} "
                         "devices: set model.splash_interpret=True to run it in Pallas interpret "
                         "mode (slow: for tests), or choose 'blocksparse'")
    length = q.shape[1]
    blocks = tuple(_lanes(b) for b in blocks)
    padded = _padded_mask(mask, int(np.lcm(*blocks)))
    q, k, v = (_pad(x, padded.shape[0]).transpose(0, 2, 1, 3) for x in (q, k, v))  # (B, H, L, D)

    def local(q, k, v):  # one shard's (b, h, L, D): a kernel for its h heads
        kernel = _splash_kernel(padded, q.shape[1], blocks, interpret)
        return jax.vmap(kernel)(q, k, v)

    mesh, rules = partitioning.current_mesh(), partitioning.current_rules()
    if mesh is None or mesh.size == 1:
        out = local(q, k, v)
    else:
        spec = partitioning.resolve_spec(("batch", "heads", None, None), q.shape, rules, mesh)
        out = jax.shard_map(local, mesh=mesh, in_specs=(spec,) * 3, out_specs=spec,
                            check_vma=False)(q, k, v)
    return out.transpose(0, 2, 1, 3)[:, :length]

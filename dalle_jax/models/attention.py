"""Masked multi-head attention under a static numpy mask, in three interchangeable implementations.

`attend(q, k, v, mask, impl=…)` with q, k, v of shape (B, L, H, D) and `mask` an (L, L) numpy
boolean (`mask[q, k]`: query q may see key k), returns (B, L, H, D); q is scaled by 1/√D here.

- `dense`: one masked einsum over all L × L pairs: the reference.
- `blocksparse`: plain XLA. The stream is cut into blocks of `block_size`; from the numpy mask each
  query block gets the static list of key blocks it touches; keys and values of those blocks are
  gathered and only those products are computed, so FLOPs and memory grow with the pattern's
  nonzero blocks rather than with L². `order` (a permutation of positions, e.g.
  `attention_masks.column_major_order`) is applied first and undone after: the column pattern is a
  band in column-major order, as the paper arranges it.
- `splash`: JAX's Pallas splash attention with the same numpy mask (TPU; on other backends it runs
  in interpret mode, which is how the tests check it agrees with `dense`). Its blocks are
  `block_size` rounded up to a multiple of 128, as its kernels require.

The stream is padded to a multiple of the block size; a padding position sees only itself.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

IMPLEMENTATIONS = ("dense", "blocksparse", "splash")
_MASKED = -1e30  # finite, so a row never becomes NaN
SPLASH_LANES = 128


def attend(q: jax.Array, k: jax.Array, v: jax.Array, mask: np.ndarray, *, impl: str = "dense",
           block_size: int = 64, order: np.ndarray | None = None,
           interpret: bool | None = None) -> jax.Array:
    """Softmax(q kᵀ/√D + mask) v for (B, L, H, D) inputs; see the module docstring."""
    if impl not in IMPLEMENTATIONS:
        raise ValueError(f"attention implementation {impl!r}; choose one of {IMPLEMENTATIONS}")
    length = q.shape[1]
    if mask.shape != (length, length):
        raise ValueError(f"mask shape {mask.shape} does not match sequence length {length}")
    q = q * (q.shape[-1] ** -0.5)
    if impl == "dense":
        return _dense(q, k, v, mask)
    if order is not None:
        q, k, v = (x[:, order] for x in (q, k, v))
        mask = mask[np.ix_(order, order)]
    if impl == "splash":  # its kernels take key blocks in multiples of 128 lanes
        block_size = max(SPLASH_LANES, -(-block_size // SPLASH_LANES) * SPLASH_LANES)
    padded = _padded_mask(mask, block_size)
    q, k, v = (_pad(x, padded.shape[0]) for x in (q, k, v))
    if impl == "blocksparse":
        out = _blocksparse(q, k, v, padded, block_size)
    else:
        out = _splash(q, k, v, padded, block_size,
                      jax.default_backend() != "tpu" if interpret is None else interpret)
    out = out[:, :length]
    if order is not None:
        out = out[:, np.argsort(order)]
    return out


def _dense(q, k, v, mask):
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k)
    logits = jnp.where(mask, logits, _MASKED)
    weights = jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(v.dtype)
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


def block_plan(mask: np.ndarray, block: int) -> tuple[np.ndarray, np.ndarray]:
    """(key_blocks (n, m) int32, block_masks (n, block, m·block) bool) of a padded mask.

    Row i of `key_blocks` lists the key blocks that query block i touches (padded to the longest
    list by repeating its last entry, whose mask is then all False); `block_masks` holds the mask
    entries of those blocks side by side.
    """
    n = mask.shape[0] // block
    tiles = mask.reshape(n, block, n, block).transpose(0, 2, 1, 3)  # (n, n, block, block)
    touched = tiles.any(axis=(2, 3))
    width = int(touched.sum(axis=1).max())
    key_blocks = np.zeros((n, width), np.int32)
    block_masks = np.zeros((n, block, width * block), dtype=bool)
    for i in range(n):
        js = np.flatnonzero(touched[i])
        key_blocks[i, :len(js)] = js
        key_blocks[i, len(js):] = js[-1]
        for slot, j in enumerate(js):
            block_masks[i, :, slot * block:(slot + 1) * block] = tiles[i, j]
    return key_blocks, block_masks


def _blocksparse(q, k, v, mask, block):
    b, length, h, d = q.shape
    n = length // block
    key_blocks, block_masks = block_plan(mask, block)
    width = key_blocks.shape[1]
    qb = q.reshape(b, n, block, h, d)

    def gather(x):  # (B, L, H, D) → (B, n, width·block, H, D): the key blocks of each query block
        return x.reshape(b, n, block, h, d)[:, key_blocks].reshape(b, n, width * block, h, d)

    logits = jnp.einsum("bnqhd,bnkhd->bnhqk", qb, gather(k))
    logits = jnp.where(block_masks[None, :, None], logits, _MASKED)
    weights = jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(v.dtype)
    out = jnp.einsum("bnhqk,bnkhd->bnqhd", weights, gather(v))
    return out.reshape(b, length, h, d)


def _splash_kernel(mask: np.ndarray, heads: int, block: int, interpret: bool):
    # Built per trace (not cached): the kernel holds its block metadata as arrays of that trace.
    from jax.experimental.pallas.ops.tpu import splash_attention as splash

    sizes = splash.BlockSizes(block_q=block, block_kv=block, block_kv_compute=block,
                              block_q_dkv=block, block_kv_dkv=block, block_kv_dkv_compute=block,
                              block_q_dq=block, block_kv_dq=block)
    heads_mask = splash.MultiHeadMask([splash.NumpyMask(mask)] * heads)
    return splash.make_splash_mha(heads_mask, block_sizes=sizes, head_shards=1, q_seq_shards=1,
                                  interpret=interpret)


def _splash(q, k, v, mask, block, interpret):
    kernel = _splash_kernel(mask, q.shape[2], block, interpret)
    heads_first = lambda x: x.transpose(0, 2, 1, 3)  # noqa: E731  (B, H, L, D)
    out = jax.vmap(kernel)(heads_first(q), heads_first(k), heads_first(v))
    return out.transpose(0, 2, 1, 3)

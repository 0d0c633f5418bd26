"""The static attention patterns of DALL·E (paper §2.2, appendix B), as numpy boolean masks.

The stream is `text_len` text positions followed by grid × grid image positions in raster order;
`mask[q, k]` says whether query position q may attend to key position k. For every pattern:
text → text is causal, every image position sees every text position, text never sees image.
Image → image (W = grid, raster order):

- `row`: a position sees itself and the previous W image positions (q − W ≤ k ≤ q);
- `column`: it sees the earlier image positions of its own column ((q − k) mod W = 0, k ≤ q);
- `conv`: it sees the earlier image positions inside a K × K window centred on it;
- `full`: every earlier image position (dense causal, for comparison).

`layer_kinds(n)` gives the paper's assignment: the last layer `conv`; otherwise `column` where
(i − 2) mod 4 = 0 for the 1-based layer index i, `row` elsewhere. Masks are built at trace time
from static ints, so they are plain numpy and cost nothing at run time.
"""

from __future__ import annotations

import functools

import numpy as np

# The score of a key a query may not see: finite, so a fully masked row never becomes NaN.
MASKED = -1e30

KINDS = ("row", "column", "conv", "full")


def layer_kinds(num_layers: int, pattern: str = "sparse") -> tuple[str, ...]:
    """Pattern of each layer: the paper's row/column/conv schedule, or `full` everywhere."""
    if num_layers < 1:
        raise ValueError(f"num_layers must be at least 1, got {num_layers}")
    if pattern == "full":
        return ("full",) * num_layers
    if pattern != "sparse":
        raise ValueError(f"attention pattern {pattern!r}; choose 'sparse' or 'full'")
    kinds = ["column" if (i - 2) % 4 == 0 else "row" for i in range(1, num_layers + 1)]
    kinds[-1] = "conv"
    return tuple(kinds)


def image_mask(kind: str, grid: int, kernel: int = 11) -> np.ndarray:
    """(grid², grid²) boolean image → image mask of one pattern, raster order."""
    if kind not in KINDS:
        raise ValueError(f"attention kind {kind!r}; choose one of {KINDS}")
    if kind == "conv" and (kernel < 1 or kernel % 2 == 0):
        raise ValueError(f"conv attention kernel must be odd and positive, got {kernel}")
    n = grid * grid
    q = np.arange(n)[:, None]
    k = np.arange(n)[None, :]
    causal = k <= q
    if kind == "full":
        return causal
    if kind == "row":
        return causal & (q - k <= grid)
    if kind == "column":
        return causal & ((q - k) % grid == 0)
    half = kernel // 2
    near_rows = np.abs(q // grid - k // grid) <= half
    near_cols = np.abs(q % grid - k % grid) <= half
    return causal & near_rows & near_cols


@functools.lru_cache(maxsize=64)
def stream_mask(kind: str, text_len: int, grid: int, kernel: int = 11) -> np.ndarray:
    """(L, L) boolean mask over the whole [text ; image] stream, L = text_len + grid²."""
    if text_len < 0 or grid < 1:
        raise ValueError(f"need text_len ≥ 0 and grid ≥ 1, got {text_len} and {grid}")
    n = grid * grid
    mask = np.zeros((text_len + n, text_len + n), dtype=bool)
    mask[:text_len, :text_len] = np.tril(np.ones((text_len, text_len), dtype=bool))
    mask[text_len:, :text_len] = True
    mask[text_len:, text_len:] = image_mask(kind, grid, kernel)
    mask.setflags(write=False)
    return mask


def column_major_order(text_len: int, grid: int) -> np.ndarray:
    """Permutation of stream positions that lists image positions column by column.

    Text positions stay first. Under this order the column pattern becomes a band (each position
    sees the previous `grid` positions at most), like the row pattern in raster order: the
    blocksparse implementation applies `column` layers to the permuted stream.
    """
    image = text_len + np.arange(grid * grid).reshape(grid, grid).T.reshape(-1)
    return np.concatenate([np.arange(text_len), image])

"""The static attention masks against hand-drawn expectations on a 3 × 3 grid with 2 text tokens."""

import numpy as np
import pytest

from dalle_jax.models.dalle.attention_masks import (column_major_order, image_mask, layer_kinds,
                                              stream_mask)


def _draw(rows: str) -> np.ndarray:
    return np.array([[c == "x" for c in row.split()] for row in rows.strip().splitlines()])


# Image positions 0..8 of a 3 × 3 grid in raster order (row r, column c at 3r + c).
ROW = _draw("""
x . . . . . . . .
x x . . . . . . .
x x x . . . . . .
x x x x . . . . .
. x x x x . . . .
. . x x x x . . .
. . . x x x x . .
. . . . x x x x .
. . . . . x x x x
""")
COLUMN = _draw("""
x . . . . . . . .
. x . . . . . . .
. . x . . . . . .
x . . x . . . . .
. x . . x . . . .
. . x . . x . . .
x . . x . . x . .
. x . . x . . x .
. . x . . x . . x
""")
# Kernel 3: the earlier positions among the 8 neighbours (and itself).
CONV3 = _draw("""
x . . . . . . . .
x x . . . . . . .
. x x . . . . . .
x x . x . . . . .
x x x x x . . . .
. x x . x x . . .
. . . x x . x . .
. . . x x x x x .
. . . . x x . x x
""")


@pytest.mark.parametrize("kind,want", [("row", ROW), ("column", COLUMN), ("conv", CONV3),
                                       ("full", np.tril(np.ones((9, 9), bool)))])
def test_image_masks_match_drawings(kind, want):
    np.testing.assert_array_equal(image_mask(kind, 3, kernel=3), want)


def test_stream_mask_text_rules():
    m = stream_mask("row", 2, 3, 3)
    assert m.shape == (11, 11)
    np.testing.assert_array_equal(m[:2, :2], [[True, False], [True, True]])  # text causal
    assert not m[:2, 2:].any()  # text never sees image
    assert m[2:, :2].all()  # every image position sees all text
    np.testing.assert_array_equal(m[2:, 2:], ROW)
    with pytest.raises(ValueError):
        m[0, 0] = False  # cached masks are read-only


def test_conv_kernel_11_at_grid_32_is_a_causal_window():
    m = image_mask("conv", 32, kernel=11)
    q = 16 * 32 + 16  # centre of the grid
    seen = np.flatnonzero(m[q])
    rows, cols = seen // 32, seen % 32
    assert rows.min() == 11 and rows.max() == 16 and cols.min() == 11 and cols.max() == 21
    assert len(seen) == 5 * 11 + 6  # five full rows above, and the left half of its own row


def test_layer_schedule_of_the_paper():
    assert layer_kinds(4) == ("row", "column", "row", "conv")
    kinds = layer_kinds(64)
    assert kinds[:5] == ("row", "column", "row", "row", "row") and kinds[5] == "column"
    assert kinds[-1] == "conv" and kinds.count("conv") == 1
    assert [i + 1 for i, k in enumerate(kinds) if k == "column"] == list(range(2, 63, 4))
    assert layer_kinds(3, "full") == ("full",) * 3
    with pytest.raises(ValueError, match="'axial'"):
        layer_kinds(4, "axial")
    with pytest.raises(ValueError, match="'diagonal'"):
        image_mask("diagonal", 3)
    with pytest.raises(ValueError, match="odd"):
        image_mask("conv", 3, kernel=4)


def test_column_major_order_turns_column_mask_into_a_band():
    text, grid = 2, 4
    perm = column_major_order(text, grid)
    assert sorted(perm) == list(range(text + grid * grid))
    m = stream_mask("column", text, grid)[np.ix_(perm, perm)]
    image = m[text:, text:]
    q, k = np.nonzero(image)
    assert (k <= q).all() and (q - k < grid).all()  # causal and within a band of width grid
    assert image.sum() == grid * grid * (grid + 1) // 2

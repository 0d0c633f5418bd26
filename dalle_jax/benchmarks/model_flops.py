"""FLOPs of a transformer training step, counted from the config (a multiply-add is two FLOPs).

XLA's own cost analysis counts the body of a `lax.scan` once, not once per layer, so the train
benchmark counts model FLOPs from the shapes instead, the way MFU is usually defined:

- projections: 2 · tokens · (W · 3HD + HD · W + 2 · W · rW) per layer (r the MLP ratio);
- attention: 4 · B · H · D per (query, key) pair the layer's mask allows (scores and weighted
  sum), so a sparse pattern is credited only with the pairs it needs;
- logits over the vocabulary each position emits: 2 · B · W · ((T − 1) · V_text + g² · V_image);
- a training step is three forward passes' worth (forward, and twice that backward); work that
  rematerialisation repeats and the blocks a block-sparse kernel computes beyond the mask are not
  counted, so the ratio to peak is the useful fraction.
"""

from __future__ import annotations

import ml_collections
import numpy as np

from dalle_jax.models.dalle import attention_masks


def forward_flops(m: ml_collections.ConfigDict, batch: int) -> dict[str, float]:
    """Forward FLOPs of one batch by part: projections, attention, logits."""
    length = m.text_len + m.grid ** 2
    tokens = batch * length
    hd = m.heads * m.head_dim
    projections = 2 * tokens * (m.width * 3 * hd + hd * m.width + 2 * m.width * m.mlp_ratio * m.width)
    pairs = sum(int(np.count_nonzero(attention_masks.stream_mask(kind, m.text_len, m.grid,
                                                                 m.conv_kernel)))
                for kind in attention_masks.layer_kinds(m.depth, m.pattern))
    return {
        "projections": float(m.depth * projections),
        "attention": float(4 * batch * hd * pairs),
        "logits": float(2 * batch * m.width * ((m.text_len - 1) * m.text_vocab
                                               + m.grid ** 2 * m.image_vocab)),
    }


def train_step_flops(m: ml_collections.ConfigDict, batch: int) -> float:
    """Model FLOPs of one training step (forward and backward, no rematerialisation)."""
    return 3 * sum(forward_flops(m, batch).values())

"""The optimizer pieces every stage shares: AdamW from `config.optimizer`, its decay mask by
parameter name, and the linear warm-up into a cosine decay.

Stage 1 (`training.dvae.trainer`), stage 2 (`training.dalle.optimizer`, which adds the plateau
schedule and gradient accumulation) and the reranker (`training.clip.trainer`) each build theirs
from these.
"""

from __future__ import annotations

from typing import Callable

import jax
import ml_collections
import optax


def decay_mask(decayed: Callable[[str], bool]) -> Callable[[dict], dict]:
    """A mask function for `optax.adamw`: True where `decayed(name)` holds for a parameter's own
    name (the last key of its path)."""
    return lambda params: jax.tree_util.tree_map_with_path(
        lambda path, _: decayed(str(getattr(path[-1], "key", path[-1]))), params)


def with_warmup(o: ml_collections.ConfigDict, after: optax.Schedule) -> optax.Schedule:
    """Linear warm-up from 0 to `learning_rate` over `warmup_steps`, then `after` (counted from
    the warm-up's end; no warm-up: `after` from step 0)."""
    warmup = optax.linear_schedule(0.0, o.learning_rate, max(1, o.warmup_steps))
    return optax.join_schedules([warmup, after], [o.warmup_steps])


def warmup_cosine(o: ml_collections.ConfigDict) -> optax.Schedule:
    """`with_warmup` into half a cosine down to `end_learning_rate` at `decay_steps`, constant
    after."""
    return with_warmup(o, optax.cosine_decay_schedule(
        o.learning_rate, max(1, o.decay_steps - o.warmup_steps),
        alpha=o.end_learning_rate / o.learning_rate))


def adamw_parts(o: ml_collections.ConfigDict, learning_rate: optax.Schedule,
                mask: Callable | None = None) -> list[optax.GradientTransformation]:
    """[clip by global norm (when `grad_clip_norm` > 0), AdamW (b1, b2, eps, weight_decay on the
    parameters `mask` marks)], for a stage to chain with more."""
    parts = []
    if o.get("grad_clip_norm"):
        parts.append(optax.clip_by_global_norm(o.grad_clip_norm))
    parts.append(optax.adamw(learning_rate, b1=o.b1, b2=o.b2, eps=o.eps,
                             weight_decay=o.weight_decay, mask=mask))
    return parts


def adamw(o: ml_collections.ConfigDict, learning_rate: optax.Schedule,
          mask: Callable | None = None) -> optax.GradientTransformation:
    """`adamw_parts` chained: the optimizer of `config.optimizer`."""
    return optax.chain(*adamw_parts(o, learning_rate, mask))

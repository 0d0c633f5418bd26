"""The paper's cosine schedules as optax schedules: learning rate, gumbel temperature, KL weight
(and a gumbel-noise scale, constant 1 in the paper).

Each anneals from `start` to `end` over `steps` updates along half a cosine and then stays at
`end`; this works in both directions (the KL weight rises 0 → 6.6, the others fall).
"""

from __future__ import annotations

import ml_collections
import optax


def cosine(start: float, end: float, steps: int) -> optax.Schedule:
    """start → end over `steps` updates by half a cosine, then `end`."""
    if steps <= 0:
        raise ValueError(f"schedule length must be positive, got {steps}")
    if start > 0 and end >= 0 and start >= end:
        return optax.cosine_decay_schedule(start, steps, alpha=end / start)
    # Rising (or from zero): mirror a decay from (start − end) to 0 around `end`.
    gap = optax.cosine_decay_schedule(start - end, steps, alpha=0.0) if start != end else None
    return (lambda step: end + gap(step)) if gap else optax.constant_schedule(end)


def dvae_schedules(config: ml_collections.ConfigDict) -> dict[str, optax.Schedule]:
    """{'learning_rate', 'temperature', 'beta', 'noise_scale'} of a dVAE config."""
    o, g, k = config.optimizer, config.gumbel, config.kl
    return {
        "learning_rate": cosine(o.learning_rate, o.end_learning_rate, o.decay_steps),
        "temperature": cosine(g.start_temperature, g.end_temperature, g.anneal_steps),
        "beta": cosine(k.start_beta, k.end_beta, k.anneal_steps),
        "noise_scale": cosine(g.start_noise, g.end_noise, g.noise_steps),
    }

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
    g, k = config.gumbel, config.kl
    return {
        "learning_rate": dvae_learning_rate(config),
        "temperature": cosine(g.start_temperature, g.end_temperature, g.anneal_steps),
        "beta": cosine(k.start_beta, k.end_beta, k.anneal_steps),
        "noise_scale": cosine(g.start_noise, g.end_noise, g.noise_steps),
    }


def dvae_learning_rate(config: ml_collections.ConfigDict) -> optax.Schedule:
    """Cosine `learning_rate` → `end_learning_rate` over `decay_steps`; with a decoder phase
    (`decoder_phase.from_step` > 0) it restarts there at `decoder_phase.learning_rate` and falls by
    its own cosine to `end_learning_rate` at `decoder_phase.end_step` (0: at `decay_steps`), so the
    joint cosine may be cut before its end."""
    o = config.optimizer
    main = cosine(o.learning_rate, o.end_learning_rate, o.decay_steps)
    start = decoder_phase_start(config)
    if not start:
        return main
    end_step = int(config.decoder_phase.get("end_step", 0))
    end, name = ((end_step, "decoder_phase.end_step") if end_step
                 else (o.decay_steps, "optimizer.decay_steps"))
    if start >= end:
        raise ValueError(f"decoder_phase.from_step={start} must come before {name}={end}")
    phase = cosine(config.decoder_phase.learning_rate, o.end_learning_rate, end - start)
    return optax.join_schedules([main, phase], [start])


def decoder_phase_start(config: ml_collections.ConfigDict) -> int:
    """The step from which a stage-1 run trains its decoder alone (0: never; configs older than
    the option have none)."""
    start = config.get("decoder_phase", {}).get("from_step", 0)
    if start < 0:
        raise ValueError(f"decoder_phase.from_step must be 0 (off) or a step, got {start}")
    return int(start)

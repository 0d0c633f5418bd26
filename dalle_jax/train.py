"""Training entry point for every stage; the config's `model.family` picks the trainer.

  python -m dalle_jax.train --config=configs/dvae.py:shapes --workdir=workdirs/dvae_shapes
  python -m dalle_jax.train --config=configs/dvae.py:tiny --workdir=workdirs/dvae --config.train.num_steps=20

Re-running the same command on the same workdir resumes from its newest checkpoint.
"""

from __future__ import annotations

import json
import sys

from absl import flags
from ml_collections import config_flags

from dalle_jax.cli import fail, join_hosts, parse_flags
from dalle_jax.xla_cpu.huge_pages import use_huge_pages


def _dvae(config, workdir):
    from dalle_jax.training.dvae.trainer import train_and_evaluate

    return train_and_evaluate(config, workdir)


def _dalle(config, workdir):
    from dalle_jax.training.dalle.trainer import train_and_evaluate

    return train_and_evaluate(config, workdir)


def _clip(config, workdir):
    from dalle_jax.training.clip.trainer import train_and_evaluate

    return train_and_evaluate(config, workdir)


def _pipeline(config, workdir):
    from dalle_jax.training.pipeline_trainer import train_and_evaluate

    return train_and_evaluate(config, workdir)


TRAINERS = {"dvae": _dvae, "dalle": _dalle, "clip": _clip, "pipeline": _pipeline}


def main(argv: list[str]) -> None:
    """Parses flags and runs the trainer of the config's model family."""
    config = config_flags.DEFINE_config_file("config", None, "config file[:preset]", lock_config=True,
                                             sys_argv=["train", *argv])
    workdir = flags.DEFINE_string("workdir", None, "run directory: checkpoints, metrics, images")
    flags.mark_flags_as_required(["config", "workdir"])
    parse_flags("python -m dalle_jax.train", argv)
    join_hosts()
    family = config.value.model.family
    if family not in TRAINERS:
        fail(f"model.family={family!r}; choose one of {sorted(TRAINERS)}")
    try:
        result = TRAINERS[family](config.value, workdir.value)
    except (ValueError, FileNotFoundError) as e:
        fail(str(e))
    print(json.dumps({"workdir": workdir.value, "eval": result}))


if __name__ == "__main__":
    use_huge_pages()  # restarts once with glibc's huge-page tunable, where it helps
    main(sys.argv[1:])

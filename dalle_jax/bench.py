"""Benchmarks; each prints one JSON line.

  python -m dalle_jax.bench dvae --config=configs/dvae.py:shapes [--seconds=5]
  python -m dalle_jax.bench plan --config=configs/dalle.py:paper --mesh=data:64,fsdp:8,tensor:4
"""

from __future__ import annotations

import json
import sys

from absl import flags
from ml_collections import config_flags

from dalle_jax.cli import fail, parse_flags


def _dvae(config, args):
    from dalle_jax.benchmarks import dvae

    return dvae.run(config, seconds=args["seconds"])


def _plan(config, args):
    from dalle_jax.benchmarks import plan

    if not args["mesh"]:
        raise ValueError("bench plan needs --mesh=AXIS:SIZE,…, e.g. data:64,fsdp:8,tensor:4")
    return plan.run(config, plan.parse_mesh(args["mesh"]))


BENCHMARKS = {"dvae": _dvae, "plan": _plan}


def main(argv: list[str]) -> None:
    """`bench NAME --config=…`: runs one benchmark and prints its JSON."""
    if not argv or argv[0] not in BENCHMARKS:
        fail(f"usage: python -m dalle_jax.bench {{{','.join(BENCHMARKS)}}} --config=FILE[:preset]")
    name, rest = argv[0], argv[1:]
    config = config_flags.DEFINE_config_file("config", None, "config file[:preset]", lock_config=True,
                                             sys_argv=["bench", *rest])
    seconds = flags.DEFINE_float("seconds", 5.0, "time each measurement at least this long")
    mesh = flags.DEFINE_string("mesh", "", "plan: mesh axis sizes, e.g. data:64,fsdp:8,tensor:4")
    flags.mark_flags_as_required(["config"])
    parse_flags(f"python -m dalle_jax.bench {name}", rest)
    try:
        args = {"seconds": seconds.value, "mesh": mesh.value}
        print(json.dumps(BENCHMARKS[name](config.value, args)))
    except ValueError as e:
        fail(str(e))


if __name__ == "__main__":
    main(sys.argv[1:])

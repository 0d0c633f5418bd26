"""Benchmarks; each prints one JSON line.

  python -m dalle_jax.bench dvae --config=configs/dvae.py:shapes [--seconds=5]
  python -m dalle_jax.bench plan --config=configs/dalle.py:paper --mesh=data:8,fsdp:8
      [--topology=v5p:4x4x4]
  python -m dalle_jax.bench compile --config=configs/dalle.py:paper --topology=v5p:4x4x4
      --mesh=data:8,fsdp:8 [--step=train|eval|sample]
  python -m dalle_jax.bench train --config=configs/dalle.py:small [--attention=dense|blocksparse|auto]
      [--attention_shape=256,32] [--profile=DIR]
  python -m dalle_jax.bench sample --config=configs/dalle.py:small [--batches=1,8] [--skip_uncached]
"""

from __future__ import annotations

import json
import os
import sys

from absl import flags
from ml_collections import config_flags

from dalle_jax.cli import fail, parse_flags, print_commands, wants_help
from dalle_jax.xla_cpu.huge_pages import use_huge_pages


def _dvae(config, args):
    """Stage-1 training and encoding throughput of a dVAE config, against a matmul peak."""
    from dalle_jax.benchmarks import dvae

    return dvae.run(config, seconds=args["seconds"])


def _plan(config, args):
    """Parameter count and per-device memory of a transformer config on a mesh (no devices)."""
    from dalle_jax.benchmarks import plan

    if not args["mesh"]:
        raise ValueError("bench plan needs --mesh=AXIS:SIZE,…, e.g. data:64,fsdp:8,tensor:4")
    return plan.run(config, plan.parse_mesh(args["mesh"]), topology=args["topology"] or None)


def _compile(config, args):
    """Compiles a step for a TPU topology on this machine: XLA's memory and collectives."""
    from dalle_jax.benchmarks import compile as compile_bench
    from dalle_jax.benchmarks import plan

    if not args["topology"] or not args["mesh"]:
        raise ValueError("bench compile needs --topology=NAME (e.g. v5p:4x4x4) and "
                         "--mesh=AXIS:SIZE,… (e.g. data:8,fsdp:8)")
    return compile_bench.run(config, topology=args["topology"],
                             mesh_axes=plan.parse_mesh(args["mesh"]), step=args["step"])


def _train(config, args):
    """Transformer training throughput and model-FLOPs utilisation; the attention op alone."""
    from dalle_jax.benchmarks import train

    if args["attention"]:
        config.model.attention = args["attention"]
    shape = None
    if args["attention_shape"]:
        parts = args["attention_shape"].split(",")
        if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
            raise ValueError(f"--attention_shape={args['attention_shape']!r}: write TEXT_LEN,GRID")
        shape = (int(parts[0]), int(parts[1]))
    return train.run(config, seconds=args["seconds"], attention_shape=shape,
                     profile_dir=args["profile"] or None)


def _sample(config, args):
    """Sampler time per image, cached against uncached."""
    from dalle_jax.benchmarks import sample

    batches = tuple(int(b) for b in args["batches"].split(",") if b.strip())
    if not batches or min(batches) < 1:
        raise ValueError(f"--batches={args['batches']!r}: write positive sizes like 1,8")
    return sample.run(config, batches=batches, seconds=args["seconds"],
                      uncached=not args["skip_uncached"])


BENCHMARKS = {"dvae": _dvae, "plan": _plan, "compile": _compile, "train": _train,
              "sample": _sample}


def main(argv: list[str]) -> None:
    """`bench NAME --config=…`: runs one benchmark and prints its JSON."""
    if argv and wants_help(argv[:1]):
        print_commands("python -m dalle_jax.bench", __doc__, BENCHMARKS)
    if not argv or argv[0] not in BENCHMARKS:
        fail(f"usage: python -m dalle_jax.bench {{{','.join(BENCHMARKS)}}} --config=FILE[:preset]")
    name, rest = argv[0], argv[1:]
    config = config_flags.DEFINE_config_file("config", None, "config file[:preset]", lock_config=True,
                                             sys_argv=["bench", *rest])
    seconds = flags.DEFINE_float("seconds", 5.0, "time each measurement at least this long")
    mesh = flags.DEFINE_string("mesh", "", "plan, compile: mesh axis sizes, e.g. data:8,fsdp:8")
    topology = flags.DEFINE_string("topology", "",
                                   "compile, plan: TPU slice, e.g. v5p:4x4x4, v5e:2x2")
    step = flags.DEFINE_enum("step", "train", ["train", "eval", "sample"],
                             "compile: which step to compile")
    attention = flags.DEFINE_enum("attention", None,
                                  ["dense", "blocksparse", "splash", "cudnn", "auto"],
                                  "train: attention implementation (default: the config's)")
    attention_shape = flags.DEFINE_string("attention_shape", "",
                                          "train: TEXT_LEN,GRID of the attention-op timing")
    profile = flags.DEFINE_string("profile", "", "train: write a jax.profiler trace of 3 steps here")
    batches = flags.DEFINE_string("batches", "1,8", "sample: batch sizes to time")
    skip_uncached = flags.DEFINE_bool("skip_uncached", False, "sample: time the cached sampler only")
    flags.mark_flags_as_required(["config"])
    parse_flags(f"python -m dalle_jax.bench {name}", rest)
    try:
        args = {"seconds": seconds.value, "mesh": mesh.value, "topology": topology.value,
                "step": step.value, "attention": attention.value,
                "attention_shape": attention_shape.value, "profile": profile.value,
                "batches": batches.value, "skip_uncached": skip_uncached.value}
        print(json.dumps(BENCHMARKS[name](config.value, args)))
    except ValueError as e:
        fail(str(e))


if __name__ == "__main__":
    if sys.argv[1:2] in (["compile"], ["plan"]):  # compile for TPUs it does not have (plan with
        os.environ.setdefault("JAX_PLATFORMS", "cpu")  # --topology) or for none: JAX on the host
    use_huge_pages()  # restarts once with glibc's huge-page tunable, where it helps
    main(sys.argv[1:])

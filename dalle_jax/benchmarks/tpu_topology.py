"""TPU slices described without a TPU: their devices (from libtpu) and their memory per chip.

`topology_devices('v5p:4x4x4')` gives the 64 devices of that slice for `jax.jit(...).lower(...)
.compile()` to compile for, on any host with libtpu installed (`requirements-tpu.txt`).
"""

from __future__ import annotations

import importlib.util
import math
import os

# HBM per chip, GiB, by TPU generation (the prefix of a topology name).
HBM_GIB = {"v4": 32, "v5e": 16, "v5p": 95, "v6e": 32}


def chips_of(topology: str) -> int:
    """Chips of a topology name: 'v5p:4x4x4' → 64."""
    return math.prod(int(d) for d in topology.partition(":")[2].split("x"))


def hbm_per_device(topology: str, devices: int) -> float:
    """GiB of HBM each JAX device of the slice has: the chip's, shared by its devices (one per
    chip as `topology_devices` describes every generation)."""
    return HBM_GIB[topology.partition(":")[0]] * chips_of(topology) / devices


# Topology names known to work with the pinned libtpu (generation:chips per dimension).
KNOWN_TOPOLOGIES = ("v4:2x2x1", "v4:2x2x2", "v4:4x4x4", "v5e:2x2", "v5e:4x4", "v5e:8x8",
                    "v5e:16x16", "v5p:2x2x1", "v5p:2x2x2", "v5p:4x4x4", "v5p:8x8x8",
                    "v6e:2x2", "v6e:16x16")

def topology_devices(name: str) -> list:
    """The devices of the TPU slice `name` (e.g. 'v5p:4x4x4'); a ValueError names the install
    command when libtpu is missing, and the known names when `name` is not one."""
    generation = name.partition(":")[0]
    if generation not in HBM_GIB or ":" not in name:
        raise ValueError(f"--topology={name!r}: write GENERATION:SHAPE, one of "
                         f"{', '.join(KNOWN_TOPOLOGIES)}")
    if importlib.util.find_spec("libtpu") is None:
        raise ValueError("bench compile needs XLA's TPU compiler: pip install -r "
                         "requirements-tpu.txt (libtpu; no TPU needed)")
    # libtpu takes a lock file per process unless told not to: another process holding it (a
    # second compile, a test runner) would otherwise make this one fail.
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
    from jax.experimental import topologies

    # v4 and v5p chips hold two TensorCores, which JAX runs as one device ("megacore"), as
    # on a TPU VM; libtpu describes them one device per core unless asked.
    options = {"chip_config_name": "megacore"} if generation in ("v4", "v5p") else {}
    try:
        return list(topologies.get_topology_desc(platform="tpu", topology_name=name,
                                                 **options).devices)
    except Exception as e:  # libtpu's error for a shape it does not know
        raise ValueError(f"--topology={name!r} is not a TPU slice libtpu knows ({e}); known "
                         f"names: {', '.join(KNOWN_TOPOLOGIES)}") from None

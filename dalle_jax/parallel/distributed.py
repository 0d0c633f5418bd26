"""Multi-host start-up: call `jax.distributed.initialize()` when the environment says to.

- Explicit: `DALLE_JAX_COORDINATOR=host:port`, `DALLE_JAX_NUM_PROCESSES=N` and
  `DALLE_JAX_PROCESS_ID=i` (every process runs the same command with its own id), e.g. CPU hosts
  or a local two-process test.
- TPU VM pods: `DALLE_JAX_DISTRIBUTED=auto` (what `scripts/tpu_vm.sh` sets), or
  `TPU_WORKER_HOSTNAMES` listing more than one worker (as GKE sets it); JAX then finds the
  coordinator and the process ids by itself (`jax.distributed.initialize()` without arguments).
Otherwise this is a single-process run and nothing is done. Call it before anything touches the
devices (the training entry point does).
"""

from __future__ import annotations

import logging
import os
from typing import Mapping

import jax

from dalle_jax.parallel import hosts

ENV_COORDINATOR = "DALLE_JAX_COORDINATOR"
ENV_NUM_PROCESSES = "DALLE_JAX_NUM_PROCESSES"
ENV_PROCESS_ID = "DALLE_JAX_PROCESS_ID"
ENV_AUTO = "DALLE_JAX_DISTRIBUTED"


def initialize_from_env(environ: Mapping[str, str] | None = None) -> bool:
    """Initialises JAX's distributed runtime if `environ` asks for it; True if it did."""
    env = os.environ if environ is None else environ
    coordinator = env.get(ENV_COORDINATOR)
    if coordinator:
        missing = [k for k in (ENV_NUM_PROCESSES, ENV_PROCESS_ID) if not env.get(k, "").isdigit()]
        if missing:
            raise ValueError(f"{ENV_COORDINATOR}={coordinator!r} is set, so {missing} must be set "
                             "to non-negative integers as well")
        num, pid = int(env[ENV_NUM_PROCESSES]), int(env[ENV_PROCESS_ID])
        if not 0 <= pid < num:
            raise ValueError(f"{ENV_PROCESS_ID}={pid} must lie in [0, {ENV_NUM_PROCESSES}={num})")
        if jax.config.jax_platforms == "cpu" or env.get("JAX_PLATFORMS") == "cpu":
            jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(coordinator_address=coordinator, num_processes=num,
                                   process_id=pid)
        hosts.join()
        logging.info("process %d of %d, coordinator %s", pid, num, coordinator)
        return True
    auto = env.get(ENV_AUTO, "")
    if auto not in ("", "auto", "off"):
        raise ValueError(f"{ENV_AUTO}={auto!r}; set 'auto' (let JAX find the cluster) or 'off'")
    workers = [w for w in env.get("TPU_WORKER_HOSTNAMES", "").split(",") if w]
    if auto == "auto" or (auto != "off" and len(workers) > 1):
        jax.distributed.initialize()
        hosts.join()
        logging.info("cluster found by JAX: process %d of %d", jax.process_index(),
                     jax.process_count())
        return True
    return False

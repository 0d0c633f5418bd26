"""What the processes of a multi-host run do together: wait, write once, vote, share small state.

Every host of a pod slice runs the same command. Files every host reads (prepared data, the
tokenizer, the config) are written by the first process while the others wait for it
(`primary_first`); an array is read on a host only where that host holds it (`host_rows`, or an
output replicated to every device); a SIGTERM that reaches any one host stops all of them at the
same step (`StopVote`); and each host's small state (its data iterator position) travels to every
host as JSON (`gather_json`), so the first process can save all of them. In a one-process run
every function here is the plain local case and no collective is issued.

Waiting is done by the coordination service (`jax.distributed`'s barrier, through orbax's
`get_barrier_sync_fn`), never inside a device collective: a process that sits in a collective
for a host that is still busy (preparing data, compiling) can time out — the CPU backend's gloo
gives a new group of devices 30 s to meet — while a barrier waits as long as `WAIT_S`. Every
exchange of data here starts with such a barrier, so its collective runs with every host already
there.
"""

from __future__ import annotations

import json
import logging
import signal
from typing import Callable, TypeVar

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from orbax.checkpoint import multihost as ocp_multihost

T = TypeVar("T")

WAIT_S = 24 * 3600  # how long a host waits for the others at a barrier (data preparation included)
_used: dict[str, int] = {}  # barrier name -> times used: each use gets an id of its own


def is_primary() -> bool:
    """True on the process that writes the files every host shares (process 0)."""
    return jax.process_index() == 0


def barrier(name: str, timeout_s: int = WAIT_S) -> None:
    """Blocks until every process reaches the barrier `name`, for at most `timeout_s` seconds
    (nothing in a one-process run). Every process must pass the same barriers in the same order;
    a name may be used again (each use is its own barrier)."""
    if jax.process_count() == 1:
        return
    _used[name] = _used.get(name, 0) + 1
    logging.debug("process %d waits at %r", jax.process_index(), name)
    ocp_multihost.get_barrier_sync_fn()(key=f"dalle_jax: {name} #{_used[name]}",
                                        timeout_ms=timeout_s * 1000)


def join() -> None:
    """Meets every other process once, at start-up: a barrier, then a sum over every device of
    the run and the pairs that `multihost_utils` uses, so those devices' communicators are made
    while all hosts are there; later programs reuse them (called by
    `parallel.distributed.initialize_from_env`)."""
    if jax.process_count() == 1:
        return
    barrier("joined")
    mesh = jax.sharding.Mesh(np.asarray(jax.devices()), ("all",))
    ones = jax.make_array_from_process_local_data(
        jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("all")),
        np.ones(jax.local_device_count(), np.int32))
    total = jax.jit(jnp.sum, out_shardings=jax.sharding.NamedSharding(
        mesh, jax.sharding.PartitionSpec()))(ones)
    if int(total.addressable_data(0)) != jax.device_count():
        raise RuntimeError(f"joined {int(total.addressable_data(0))} devices of "
                           f"{jax.device_count()}")
    multihost_utils.sync_global_devices("dalle_jax: joined")


def primary_first(name: str, fn: Callable[[], T]) -> T:
    """`fn()` on the first process, then, once it is done, on every other one: for work that
    writes shared files when they are missing and reads them otherwise (preparing a dataset,
    training the tokenizer), so the other hosts read what the first one wrote instead of racing
    it. If it fails on the first process, the others raise a ValueError naming `name` and the
    error's first line, instead of waiting for files that never come."""
    if jax.process_count() == 1:
        return fn()
    out, error, failure = None, None, None
    if is_primary():
        try:
            out = fn()
        except Exception as e:  # told to the other processes, then raised here
            error, failure = f"{type(e).__name__}: {e}", e
    first = gather_json(error)[0]  # every process waits here for the first one
    if failure is not None:
        raise failure
    if is_primary():
        return out
    if first is not None:
        raise ValueError(f"process 0 failed {name}: {first.splitlines()[0]}")
    return fn()


def host_rows(array) -> np.ndarray:
    """This process's rows of a batch array (split over the mesh's batch axes), as numpy; the
    whole array in a one-process run or when every device holds it."""
    if not isinstance(array, jax.Array) or array.is_fully_addressable:
        return np.asarray(array)
    sharding = array.sharding
    return np.asarray(multihost_utils.global_array_to_host_local_array(
        array, sharding.mesh, sharding.spec))


def gather_json(value) -> list:
    """Every process's JSON-serialisable `value`, in process order, on every process."""
    if jax.process_count() == 1:
        return [value]
    barrier("gather_json")
    data = np.frombuffer(json.dumps(value, sort_keys=True).encode(), np.uint8)
    most = int(np.max(multihost_utils.process_allgather(np.asarray([data.size], np.int32))))
    return [json.loads(bytes(part).decode()) for part in _gather_padded(data, most)]


def _gather_padded(rows: np.ndarray, most: int) -> list[np.ndarray]:
    """Every process's `rows` (at most `most`), padded to `most` for one allgather and trimmed
    back to each one's own count; in process order."""
    padded = np.zeros((most,) + rows.shape[1:], rows.dtype)
    padded[:len(rows)] = rows
    counts = np.asarray(multihost_utils.process_allgather(np.asarray([len(rows)], np.int32)))
    stacked = np.asarray(multihost_utils.process_allgather(padded))
    return [part[:int(n)] for part, n in zip(stacked, counts.reshape(-1))]


def gather_rows(rows: np.ndarray, most: int) -> np.ndarray:
    """Every process's `rows` (at most `most` of them, the same trailing shape and dtype on all),
    stacked in process order, on every process: how hosts that each worked on their own share of
    the records hand the results to the one that writes them."""
    rows = np.asarray(rows)
    if len(rows) > most:
        raise ValueError(f"{len(rows)} rows, more than the {most} agreed on")
    if jax.process_count() == 1:
        return rows
    barrier("gather_rows")
    return np.concatenate(_gather_padded(rows, most))


class StopVote:
    """A SIGTERM (a TPU preemption notice) to any process stops every process at the same step.

    One process: a SIGTERM handler sets a flag, read at each step. Several processes: JAX's
    preemption service (started by `jax.distributed.initialize`) catches the SIGTERM on the host
    that gets it, tells the others through the coordinator, and agrees on a step every host has
    yet to reach; `should_stop(step)` is True on every host at that same step. All hosts must call
    it at every step, from the same first step. Use as a context manager."""

    def __init__(self):
        self._many = jax.process_count() > 1
        self._signal = None
        self._previous = None

    def __enter__(self) -> "StopVote":
        if not self._many:  # JAX's service holds the SIGTERM handler in a multi-process run
            self._previous = signal.signal(signal.SIGTERM, self._catch)
        return self

    def _catch(self, sig, _frame) -> None:
        self._signal = sig

    def should_stop(self, step: int) -> bool:
        """True when this step is the one to save and stop at."""
        if not self._many:
            return self._signal is not None
        try:
            return multihost_utils.reached_preemption_sync_point(step)
        except RuntimeError as e:  # the preemption service is off (jax_enable_preemption_service)
            if not getattr(self, "_warned", False):
                logging.warning("no cross-host preemption vote (%s): a SIGTERM is not caught", e)
                self._warned = True
            return False

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)

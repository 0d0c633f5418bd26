"""One of two 'hosts' on loopback: exercises `parallel.hosts` and prints what it saw as JSON.

Run as: python two_host_calls.py (with DALLE_JAX_* set for process 0 or 1 of two)
"""

import json
import os
import sys
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import NamedSharding, PartitionSpec as P  # noqa: E402

from dalle_jax.parallel import hosts  # noqa: E402
from dalle_jax.parallel.distributed import initialize_from_env  # noqa: E402

BUSY_S = 32  # longer than the CPU backend's gloo gives a new group of devices to meet (30 s)
initialize_from_env()
me = jax.process_index()
out = {"process": me}
# The second host comes late to the run's first program over every device (still compiling, say):
# the communicators made at start-up wait for it.
if me == 1:
    time.sleep(BUSY_S)
mesh = jax.make_mesh((jax.device_count(),), ("all",))
ones = jax.make_array_from_process_local_data(NamedSharding(mesh, P("all")),
                                              np.ones(jax.local_device_count(), np.float32))
out["device_count"] = jax.device_count()
out["devices"] = float(jax.jit(jnp.sum, out_shardings=NamedSharding(mesh, P()))(ones))
calls = []


def prepare():
    calls.append(me)
    if me == 0:  # busy for longer than a collective would wait
        time.sleep(BUSY_S)
    return f"made by {me}"


out["first"] = hosts.primary_first("making a thing", prepare)
out["calls"] = calls

# Each host has a different number of rows (3 and 1); all get both, in process order.
rows = np.full((3 - 2 * me, 2), me + 1, np.int32)
out["rows"] = hosts.gather_rows(rows, 4).tolist()
out["json"] = hosts.gather_json({"me": me, "text": "x" * (5 * me)})


def broken():
    raise RuntimeError("disk full\nmore detail")


try:
    hosts.primary_first("writing the data", broken)
except Exception as e:  # noqa: BLE001 - reported to the test
    out["error"] = f"{type(e).__name__}: {e}"
print(json.dumps(out), flush=True)

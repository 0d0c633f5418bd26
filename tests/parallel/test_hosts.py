"""What processes do together (`parallel.hosts`), as two processes on loopback and as one."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from dalle_jax.parallel import hosts
from tests.helpers.processes import ROOT, env, free_port

SCRIPT = os.path.join(ROOT, "tests", "helpers", "two_host_calls.py")


def test_two_processes_gather_write_first_and_hear_of_a_failure():
    port = free_port()
    procs = [subprocess.Popen([sys.executable, SCRIPT], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True,
                              env=env(2, DALLE_JAX_COORDINATOR=f"127.0.0.1:{port}",
                                       DALLE_JAX_NUM_PROCESSES="2", DALLE_JAX_PROCESS_ID=str(i)))
             for i in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), "\n".join(err[-2000:] for _, err in outs)
    first, second = (json.loads(out.strip().splitlines()[-1]) for out, _ in outs)
    # Each host added one per device of its own; the second came 32 s late to that sum.
    assert first["devices"] == second["devices"] == first["device_count"] == 4
    assert first["rows"] == second["rows"] == [[1, 1]] * 3 + [[2, 2]]
    assert first["json"] == second["json"] == [{"me": 0, "text": ""}, {"me": 1, "text": "xxxxx"}]
    # The first process made it, busy for 32 s (longer than the CPU backend's gloo gives a new
    # group of devices to meet); the second waited at a barrier, then ran the same call after it.
    assert first["first"] == "made by 0" and second["first"] == "made by 1"
    assert first["calls"] == [0] and second["calls"] == [1]
    assert first["error"] == "RuntimeError: disk full\nmore detail"
    assert second["error"] == "ValueError: process 0 failed writing the data: RuntimeError: disk full"


def test_one_process_is_the_plain_local_case():
    rows = np.arange(6).reshape(3, 2)
    np.testing.assert_array_equal(hosts.gather_rows(rows, 4), rows)
    with pytest.raises(ValueError, match="5 rows, more than the 4 agreed on"):
        hosts.gather_rows(np.zeros((5, 2)), 4)
    assert hosts.gather_json({"a": 1}) == [{"a": 1}]
    assert hosts.primary_first("x", lambda: 7) == 7 and hosts.is_primary()

"""Starting the project's commands as the processes of a multi-host run on loopback (CPU devices
each), with a timeout, a free port each, and every process's log shown when one fails."""

import json
import os
import socket
import subprocess
import sys

import numpy as np

from tests.helpers.xla_flags import xla_flags

from tests.helpers.paths import ROOT
TIMEOUT = 600


def env(devices, **extra):
    """A child environment: `devices` CPU devices, no inherited multi-host settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DALLE_JAX_")}
    env.update(XLA_FLAGS=xla_flags(devices), JAX_PLATFORMS="cpu",
               PYTHONPATH=ROOT, **extra)
    return env


def free_port():
    """A loopback port free at the time of asking."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(module: str, args: list[str]) -> list[subprocess.Popen]:
    """`python -m module args` as processes 0 and 1 of a two-process run."""
    port = free_port()
    return [subprocess.Popen([sys.executable, "-m", module, *args], cwd=ROOT,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=env(2, DALLE_JAX_COORDINATOR=f"127.0.0.1:{port}",
                                      DALLE_JAX_NUM_PROCESSES="2", DALLE_JAX_PROCESS_ID=str(i)))
            for i in range(2)]


def finish(procs) -> list[tuple[str, str]]:
    """Both processes' (stdout, stderr); both logs are shown if either fails or hangs."""
    try:
        outs = [p.communicate(timeout=TIMEOUT) for p in procs]
    except subprocess.TimeoutExpired:
        for p in procs:
            p.kill()
        outs = [p.communicate() for p in procs]
        raise AssertionError("timed out:\n" + logs(outs)) from None
    assert all(p.returncode == 0 for p in procs), logs(outs, procs)
    return outs


def logs(outs, procs=None) -> str:
    """The tail of each process's stderr, with its exit status."""
    return "\n".join(f"--- process {i} (exit {p.returncode if procs else '?'}) ---\n{err[-2500:]}"
                     for i, ((_, err), p) in enumerate(zip(outs, procs or [None] * len(outs))))


def one(module: str, args: list[str]) -> str:
    """`python -m module args` as one process with four devices; its stdout."""
    run = subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, env=env(4),
                         capture_output=True, text=True, timeout=TIMEOUT)
    assert run.returncode == 0, run.stderr[-3000:]
    return run.stdout


def records(workdir, split="train") -> list[dict]:
    """The complete metric lines of `split` in a workdir's metrics.jsonl ([] if none yet)."""
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        lines = [line for line in f if line.endswith("\n")]
    return [r for r in map(json.loads, lines) if r["split"] == split]


def same_curve(a: list[dict], b: list[dict]) -> None:
    """Two metric curves at the same steps with the same loss and learning rate."""
    assert [r["step"] for r in a] == [r["step"] for r in b] and a
    for x, y in zip(a, b):
        for key in ("loss", "learning_rate"):
            if key in x:
                np.testing.assert_allclose(x[key], y[key], rtol=2e-4, atol=1e-6,
                                           err_msg=f"step {x['step']} {key}")

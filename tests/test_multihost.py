"""Two processes on loopback (two CPU devices each) train like one process with four devices."""

import json
import os
import socket
import subprocess
import sys

import jax
import pytest

from dalle_jax.parallel.distributed import initialize_from_env

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "tests", "helpers", "multihost_steps.py")


def _env(devices, **extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("DALLE_JAX_")}
    env.update(XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", JAX_PLATFORMS="cpu",
               PYTHONPATH=ROOT, **extra)
    return env


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_match_one():
    one = subprocess.run([sys.executable, SCRIPT, "3"], env=_env(4), capture_output=True,
                         text=True, timeout=600)
    assert one.returncode == 0, one.stderr[-2000:]
    want = json.loads(one.stdout.strip().splitlines()[-1])
    port = _free_port()
    procs = [subprocess.Popen([sys.executable, SCRIPT, "3"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True,
                              env=_env(2, DALLE_JAX_COORDINATOR=f"127.0.0.1:{port}",
                                       DALLE_JAX_NUM_PROCESSES="2", DALLE_JAX_PROCESS_ID=str(i)))
             for i in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-2000:]
    got = [json.loads(out.strip().splitlines()[-1]) for out, _ in outs]
    assert want["processes"] == 1 and want["devices"] == 4
    for g in got:
        assert g["processes"] == 2 and g["devices"] == 4
        assert g["losses"] == pytest.approx(want["losses"], rel=1e-5)


def test_environment_is_checked(monkeypatch):
    assert initialize_from_env({}) is False
    assert initialize_from_env({"TPU_WORKER_HOSTNAMES": "only-me"}) is False
    calls = []
    monkeypatch.setattr(jax.distributed, "initialize", lambda **kw: calls.append(kw))
    assert initialize_from_env({"DALLE_JAX_DISTRIBUTED": "auto"}) is True
    assert initialize_from_env({"TPU_WORKER_HOSTNAMES": "w0,w1"}) is True
    assert initialize_from_env({"TPU_WORKER_HOSTNAMES": "w0,w1", "DALLE_JAX_DISTRIBUTED": "off"}) is False
    assert calls == [{}, {}]  # JAX finds the cluster itself
    with pytest.raises(ValueError, match="DALLE_JAX_DISTRIBUTED='yes'"):
        initialize_from_env({"DALLE_JAX_DISTRIBUTED": "yes"})
    with pytest.raises(ValueError, match="DALLE_JAX_PROCESS_ID"):
        initialize_from_env({"DALLE_JAX_COORDINATOR": "127.0.0.1:1", "DALLE_JAX_NUM_PROCESSES": "2"})
    with pytest.raises(ValueError, match=r"\[0, DALLE_JAX_NUM_PROCESSES=2\)"):
        initialize_from_env({"DALLE_JAX_COORDINATOR": "127.0.0.1:1", "DALLE_JAX_NUM_PROCESSES": "2",
                             "DALLE_JAX_PROCESS_ID": "5"})

"""Joining a multi-host run: the environment that starts JAX's distributed runtime is checked;
and the helpers (a child environment, a free port) of the tests that start processes on loopback."""

import os
import socket

import jax
import pytest

from dalle_jax.parallel.distributed import initialize_from_env

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _env(devices, **extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("DALLE_JAX_")}
    env.update(XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", JAX_PLATFORMS="cpu",
               PYTHONPATH=ROOT, **extra)
    return env


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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

"""Joining a multi-host run: the environment that starts JAX's distributed runtime is checked."""

import jax
import pytest

from dalle_jax.parallel.distributed import initialize_from_env


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

"""The notebook's installer: which JAX each runtime gets, how a runtime is recognised, and that
nothing is installed where the pins are already met."""

import os
import subprocess

import pytest

from dalle_jax import runtime_setup
from tests.helpers.paths import ROOT

REQUIREMENTS = os.path.join(ROOT, "requirements.txt")


def test_each_runtime_gets_the_pinned_jax_with_its_plugin():
    version = runtime_setup.pinned("jax", REQUIREMENTS)
    import jax

    assert version == jax.__version__  # this environment was installed from the same pins
    assert runtime_setup.jax_requirement("cpu", version) == f"jax=={version}"
    assert runtime_setup.jax_requirement("gpu", version) == f"jax[cuda12]=={version}"
    assert runtime_setup.jax_requirement("tpu", version) == f"jax[tpu]=={version}"
    with pytest.raises(ValueError, match="'ipu'"):
        runtime_setup.jax_requirement("ipu", version)
    with pytest.raises(ValueError, match="no_such_package"):
        runtime_setup.pinned("no_such_package", REQUIREMENTS)
    gpu = runtime_setup.install_commands("gpu", REQUIREMENTS, python="py")
    assert [c[5:] for c in gpu] == [["-r", REQUIREMENTS], [f"jax[cuda12]=={version}"],
                                    ["--no-deps", "-e", "."]]
    assert len(runtime_setup.install_commands("cpu", REQUIREMENTS, python="py")) == 2


def test_runtimes_are_recognised_without_jax():
    def nvidia(returncode):
        return lambda cmd, **kw: subprocess.CompletedProcess(cmd, returncode)

    none, found = (lambda name: None), (lambda name: "/usr/bin/" + name)
    assert runtime_setup.accelerator({"COLAB_TPU_ADDR": "10.0.0.2:8470"}, which=none) == "tpu"
    assert runtime_setup.accelerator({}, which=found, run=nvidia(0)) == "gpu"
    assert runtime_setup.accelerator({}, which=found, run=nvidia(9)) == "cpu"  # no GPU behind it
    assert runtime_setup.accelerator({}, which=none) == "cpu"


def test_nothing_is_installed_where_the_pins_are_met(monkeypatch):
    calls = []
    monkeypatch.chdir(ROOT)
    assert runtime_setup.installed()
    assert runtime_setup.ensure("gpu", run=lambda cmd, **kw: calls.append(cmd)) == "gpu"
    assert calls == []
    monkeypatch.setattr(runtime_setup, "MODULES", runtime_setup.MODULES + ("no_such.module",))
    assert not runtime_setup.installed()
    runtime_setup.ensure("tpu", run=lambda cmd, **kw: calls.append(cmd))
    assert [c[-1] for c in calls] == ["requirements.txt", runtime_setup.jax_requirement(
        "tpu", runtime_setup.pinned("jax")), "."]

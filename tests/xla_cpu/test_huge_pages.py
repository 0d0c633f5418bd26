"""The entry points' restart with glibc's huge-page tunable: when it happens, and that it keeps the
command line and process id."""

import os
import subprocess
import sys

import pytest

from dalle_jax.xla_cpu import huge_pages
from dalle_jax.xla_cpu.huge_pages import OPT_OUT, TUNABLE, tunables_to_add


@pytest.mark.parametrize("environ, mode, libc, expected", [
    ({}, "madvise", (2, 36), f"{TUNABLE}=1"),
    ({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}, "madvise", (2, 35),
     f"glibc.malloc.arena_max=2:{TUNABLE}=1"),
    ({OPT_OUT: "1"}, "madvise", (2, 39), f"{TUNABLE}=1"),
    ({OPT_OUT: "0"}, "madvise", (2, 36), None),  # opted out
    ({"GLIBC_TUNABLES": f"{TUNABLE}=0"}, "madvise", (2, 36), None),  # the user's own choice
    ({"GLIBC_TUNABLES": f"{TUNABLE}=1"}, "madvise", (2, 36), None),  # already restarted
    ({}, "always", (2, 36), None),  # huge pages without asking
    ({}, "never", (2, 36), None),
    ({}, None, (2, 36), None),  # no THP file
    ({}, "madvise", (2, 34), None),  # glibc without the tunable
    ({}, "madvise", None, None),  # not glibc
])
def test_tunables_to_add(environ, mode, libc, expected):
    assert tunables_to_add(environ, mode, libc) == expected


def test_thp_mode_reads_the_bracketed_choice(tmp_path):
    path = tmp_path / "enabled"
    path.write_text("always [madvise] never\n")
    assert huge_pages.thp_mode(str(path)) == "madvise"
    path.write_text("garbage\n")
    assert huge_pages.thp_mode(str(path)) is None
    assert huge_pages.thp_mode(str(tmp_path / "missing")) is None


def test_active():
    assert huge_pages.active({}, "always")
    assert huge_pages.active({"GLIBC_TUNABLES": f"{TUNABLE}=1"}, "madvise")
    assert not huge_pages.active({}, "madvise")
    assert not huge_pages.active({"GLIBC_TUNABLES": f"{TUNABLE}=1"}, "never")


_CHILD = """
import os, sys
from dalle_jax.xla_cpu.huge_pages import use_huge_pages
print("start", os.getpid(), flush=True)
use_huge_pages()
print("after", os.getpid(), sys.argv[1:], os.environ.get("GLIBC_TUNABLES", ""), flush=True)
"""


def _run_child(**env):
    environ = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", OPT_OUT)}
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    environ.update(env, PYTHONPATH=os.pathsep.join([root, environ.get("PYTHONPATH", "")]))
    out = subprocess.run([sys.executable, "-c", _CHILD, "--flag=a b", "x"], env=environ,
                         capture_output=True, text=True, check=True, timeout=120)
    return [line.split(" ", 2) for line in out.stdout.splitlines()]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc tunables, Linux THP")
def test_restart_keeps_the_command_line_and_process():
    lines = _run_child()
    restarts = tunables_to_add({}, huge_pages.thp_mode(), huge_pages.glibc_version()) is not None
    starts = [line for line in lines if line[0] == "start"]
    (after,) = [line for line in lines if line[0] == "after"]
    assert len(starts) == (2 if restarts else 1)
    assert {pid for _, pid in starts} == {after[1]}  # execve: the same process
    assert after[2].startswith("['--flag=a b', 'x']")
    assert (f"{TUNABLE}=1" in after[2]) == restarts


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc tunables, Linux THP")
def test_opting_out_keeps_the_process_as_started():
    lines = _run_child(**{OPT_OUT: "0"})
    assert [line[0] for line in lines] == ["start", "after"]
    assert TUNABLE not in lines[1][2]


def test_only_a_process_computing_on_the_cpu_restarts(tmp_path):
    """TPU and GPU processes keep their start: the tunable is for XLA's CPU scratch buffers."""
    none = (str(tmp_path / "no-such-device*"),)
    (tmp_path / "accel0").write_text("")
    tpu = (str(tmp_path / "accel*"),)
    assert huge_pages.computes_on_cpu({}, none)
    assert not huge_pages.computes_on_cpu({}, tpu)  # a TPU VM's /dev/accel0
    assert huge_pages.computes_on_cpu({"JAX_PLATFORMS": "cpu"}, tpu)  # asked for, on any host
    assert not huge_pages.computes_on_cpu({"JAX_PLATFORMS": "tpu,cpu"}, none)
    assert not huge_pages.computes_on_cpu({"JAX_PLATFORMS": "cuda"}, none)


def test_a_tpu_process_is_not_restarted():
    lines = _run_child(JAX_PLATFORMS="tpu")
    assert [line[0] for line in lines] == ["start", "after"]
    assert TUNABLE not in lines[1][2]

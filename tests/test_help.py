"""`--help` on every entry point: its usage, then each of its flags on one line with its default."""

import os
import re
import subprocess
import sys

import pytest

from tests.helpers.paths import ROOT

FLAG_LINE = re.compile(r"^  --\w+ \([^)]*\): \S")

COMMANDS = {
    "dalle_jax.train": ["--config (required)", "--workdir (required)"],
    "dalle_jax.sample": ["--workdir", "--prompt", "--num_samples (8)", "--rerank (0)", "--top_k (0)"],
    "dalle_jax.evaluate": ["--workdir (required)", "--num_captions (64)", "--clip_workdir"],
    "dalle_jax.bench compile": ["--config (required)", "--topology", "--mesh", "--step (train)"],
    "dalle_jax.data inspect": ["--config (required)", "--workdir (required)", "--num_batches (4)"],
}


def _help(command: str) -> str:
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    run = subprocess.run([sys.executable, "-m", *command.split(), "--help"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    return run.stdout


@pytest.mark.parametrize("command", COMMANDS)
def test_help_lists_each_flag_on_one_line(command):
    out = _help(command)
    assert out.startswith(f"usage: python -m {command} ")
    flag_lines = out.split("\nflags:\n", 1)[1].splitlines()
    assert flag_lines and all(FLAG_LINE.match(line) for line in flag_lines), flag_lines
    for expected in COMMANDS[command]:
        assert any(line.startswith(f"  {expected}") for line in flag_lines), (expected, flag_lines)
    assert not any("jax_" in line or "grain" in line for line in flag_lines)  # the libraries' own


@pytest.mark.parametrize("command,names", [
    ("dalle_jax.data", ["prepare", "inspect", "encode"]),
    ("dalle_jax.bench", ["dvae", "plan", "compile", "train", "sample"])])
def test_help_of_a_command_group_lists_its_commands(command, names):
    out = _help(command)
    listed = out.split("\ncommands:\n", 1)[1].splitlines()
    assert [line.split(":")[0].strip() for line in listed] == names
    assert all(len(line.split(": ", 1)[1]) > 10 for line in listed)


@pytest.mark.parametrize("command", ["prepare", "encode"])
def test_data_prepare_and_encode_help(command):
    out = _help(f"dalle_jax.data {command}")
    assert out.startswith(f"usage: python -m dalle_jax.data {command}") and "--data_dir" in out

"""The data command line: JSON summary on success; one-line errors and exit status 2 on bad values."""

import json
import os
import subprocess
import sys

import pytest

from tests.helpers.paths import ROOT
from tests.helpers.xla_flags import xla_flags


def _run(*args):
    env = dict(os.environ, XLA_FLAGS=xla_flags(8), JAX_PLATFORMS="cpu")
    return subprocess.run([sys.executable, "-m", "dalle_jax.data", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)


def _one_line_error(result, *fragments):
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_unknown_dataset(tmp_path):
    _one_line_error(_run("prepare", "--dataset=imagenet_typo", f"--data_dir={tmp_path}"), "'imagenet_typo'")


def test_missing_and_empty_source(tmp_path):
    missing = tmp_path / "nope"
    _one_line_error(_run("prepare", "--dataset=image_text_folder", f"--source={missing}",
                         f"--data_dir={tmp_path}/d"), str(missing))
    empty = tmp_path / "empty"
    empty.mkdir()
    _one_line_error(_run("prepare", "--dataset=image_text_folder", f"--source={empty}",
                         f"--data_dir={tmp_path}/d"), str(empty))


def test_bad_option_for_dataset(tmp_path):
    _one_line_error(_run("prepare", "--dataset=shapes", f"--data_dir={tmp_path}", "--source=x"), "'source'")
    _one_line_error(_run("prepare", "--dataset=shapes", f"--data_dir={tmp_path}", "--resolution=7"), "7")


def test_inspect_tiny_end_to_end(tmp_path):
    work = tmp_path / "work"
    result = _run("inspect", "--config=configs/data.py:tiny", f"--workdir={work}", "--num_batches=2",
                  f"--config.data.data_dir={tmp_path}/data", "--config.data.global_batch_size=16",
                  "--config.mesh.fsdp=2")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["dataset"] == "shapes"
    assert summary["splits"] == {"train": 256, "validation": 32, "test": 32, "heldout": 32}
    assert summary["mesh"] == {"data": 4, "fsdp": 2, "tensor": 1}
    assert summary["batch"]["image"]["shape"] == [16, 32, 32, 3]
    assert summary["batch"]["text"]["shape"] == [16, 16]
    assert "'data', 'fsdp'" in summary["batch"]["image"]["sharding"]
    assert summary["tokenizer"]["vocab_size"] <= 512
    assert (work / "tokenizer.json").exists() and (work / "batch.png").stat().st_size > 1000


@pytest.mark.parametrize("args, fragment", [
    (["--config.data.resolutoin=3"], "'resolutoin'"),
    (["--config.data.resolution=big"], "big"),
    (["--config=configs/data.py:huge"], "'huge'"),
])
def test_inspect_bad_config(tmp_path, args, fragment):
    _one_line_error(_run("inspect", "--config=configs/data.py:tiny", f"--workdir={tmp_path}", *args), fragment)

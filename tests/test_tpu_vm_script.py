"""scripts/tpu_vm.sh builds the gcloud commands the README's TPU VM recipe describes."""

import json
import os
import subprocess
import sys

import pytest

from tests.helpers.paths import ROOT

SCRIPT = os.path.join(ROOT, "scripts", "tpu_vm.sh")


def _run(tmp_path, *args, env=None):
    log = tmp_path / "calls.jsonl"
    fake = tmp_path / "gcloud"  # records each call's arguments as one JSON line
    fake.write_text(f"#!{sys.executable}\nimport json, sys\n"
                    f"open({str(log)!r}, 'a').write(json.dumps(sys.argv[1:]) + '\\n')\n")
    fake.chmod(0o755)
    full_env = {**os.environ, "GCLOUD": str(fake), "TPU": "pod", "ZONE": "us-central2-b",
                **(env or {})}
    done = subprocess.run(["bash", SCRIPT, *args], env=full_env, capture_output=True, text=True)
    calls = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return done, calls


def test_train_runs_one_command_on_every_worker(tmp_path):
    done, calls = _run(tmp_path, "train", "configs/dalle.py:paper", "/mnt/shared/run",
                       "--config.train.num_steps=10", "--config.data.data_dir=/mnt/d ata")
    assert done.returncode == 0, done.stderr
    [call] = calls
    assert call[:5] == ["compute", "tpus", "tpu-vm", "ssh", "pod"]
    assert "--zone=us-central2-b" in call and "--worker=all" in call
    command = next(a for a in call if a.startswith("--command="))
    assert "DALLE_JAX_DISTRIBUTED=auto" in command
    assert ("python3 -m dalle_jax.train --config=configs/dalle.py:paper --workdir=/mnt/shared/run "
            "--config.train.num_steps=10 --config.data.data_dir=/mnt/d\\ ata") in command


def test_setup_stop_and_project(tmp_path):
    scratch = tmp_path / "scratch"  # the script's temporary directory: removed when it ends
    scratch.mkdir()
    done, calls = _run(tmp_path, "setup", env={"PROJECT": "p1", "TMPDIR": str(scratch)})
    assert done.returncode == 0, done.stderr
    assert os.listdir(scratch) == []
    scp, ssh = calls
    assert scp[:4] == ["compute", "tpus", "tpu-vm", "scp"] and "--project=p1" in scp
    with open(os.path.join(ROOT, "requirements.txt")) as f:
        jax_pin = next(line.strip() for line in f if line.startswith("jax=="))
    assert f"'jax[tpu]=={jax_pin[5:]}'" in ssh[-1] and "--worker=all" in ssh
    done, calls = _run(tmp_path, "stop")
    assert "pkill -TERM" in calls[-1][-1]


@pytest.mark.parametrize("args,env,message", [
    ((), {}, "usage"),
    (("train", "configs/dalle.py:paper"), {}, "usage"),
    (("train", "c", "w"), {"ZONE": ""}, "ZONE"),
])
def test_bad_usage_is_explained(tmp_path, args, env, message):
    done, calls = _run(tmp_path, *args, env=env)
    assert done.returncode != 0 and not calls
    assert message in done.stderr

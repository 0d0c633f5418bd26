"""`python -m dalle_jax.train` as a pod runs it: the same command in two processes on loopback
(two CPU devices each), sharing one fresh data_dir and one workdir. Both prepare the same data and
tokenizer without racing, train, write images once, and a SIGTERM to one of them stops both at
the same step with a checkpoint holding each process's data position; the same command resumes
both from it."""

import json
import os
import re
import signal
import subprocess
import sys
import time

from tests.test_multihost import _env, _free_port

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _launch(args: list[str], port: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-m", "dalle_jax.train", *args], cwd=ROOT,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=_env(2, DALLE_JAX_COORDINATOR=f"127.0.0.1:{port}",
                                      DALLE_JAX_NUM_PROCESSES="2", DALLE_JAX_PROCESS_ID=str(i)))
            for i in range(2)]


def _finish(procs) -> list[tuple[str, str]]:
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    return outs


def _train_records(workdir) -> list[dict]:
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        lines = [line for line in f if line.endswith("\n")]
    return [r for r in map(json.loads, lines) if r["split"] == "train"]


def test_train_as_two_processes_stops_together_and_resumes(tmp_path):
    workdir, data_dir = str(tmp_path / "work"), str(tmp_path / "data")
    args = ["--config=configs/dvae.py:tiny", f"--workdir={workdir}",
            f"--config.data.data_dir={data_dir}", "--config.train.log_every=1",
            "--config.train.checkpoint_every=1000", "--config.train.eval_every=1000",
            "--config.train.image_every=4"]
    procs = _launch([*args, "--config.train.num_steps=3000"], _free_port())
    deadline = time.time() + 480
    while len(_train_records(workdir)) < 5 and time.time() < deadline:
        assert all(p.poll() is None for p in procs), procs[0].stderr.read()[-3000:]
        time.sleep(0.5)
    procs[1].send_signal(signal.SIGTERM)  # the notice reaches one host only
    outs = _finish(procs)
    saved = [re.findall(r"SIGTERM: saved step (\d+)", err) for _, err in outs]
    assert saved[0] and saved[0] == saved[1], [err[-2000:] for _, err in outs]
    step = int(saved[0][0])
    assert 5 <= step < 3000
    ckpt = os.path.join(workdir, "checkpoints", str(step))
    with open(os.path.join(ckpt, "data", "metadata")) as f:
        positions = json.load(f)["processes"]
    assert len(positions) == 2  # each host's own position in its share of the records
    assert os.path.exists(os.path.join(workdir, "tokenizer.json"))
    assert os.path.exists(os.path.join(workdir, "images", "recon_0000004.png"))
    steps = [r["step"] for r in _train_records(workdir)]
    assert steps == list(range(1, step + 1))  # one writer: each step logged once

    resumed = _finish(_launch([*args, f"--config.train.num_steps={step + 2}"], _free_port()))
    for _, err in resumed:
        assert f"training dvae from step {step} to {step + 2}" in err, err[-2000:]
    results = [json.loads(out.strip().splitlines()[-1]) for out, _ in resumed]
    assert results[0] == results[1] and results[0]["eval"]["images"] > 0
    assert [r["step"] for r in _train_records(workdir)][-2:] == [step + 1, step + 2]

"""The commands as a pod runs them: the same command line in two processes on loopback (two CPU
devices each), sharing one fresh data_dir and one workdir, against one process with four devices.

Both processes prepare the same data and tokenizer without racing, encode their own shares of the
records, train, write each shared file once, and end with the losses, codes and samples of the
one-process run; a SIGTERM to one of them stops both at the same step with a checkpoint holding
each process's data position, and the same command resumes both from it onto the curve of an
uninterrupted run."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
from PIL import Image

from tests.test_multihost import _env, _free_port

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMEOUT = 600


def _launch(module: str, args: list[str]) -> list[subprocess.Popen]:
    """`python -m module args` as processes 0 and 1 of a two-process run."""
    port = _free_port()
    return [subprocess.Popen([sys.executable, "-m", module, *args], cwd=ROOT,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=_env(2, DALLE_JAX_COORDINATOR=f"127.0.0.1:{port}",
                                      DALLE_JAX_NUM_PROCESSES="2", DALLE_JAX_PROCESS_ID=str(i)))
            for i in range(2)]


def _finish(procs) -> list[tuple[str, str]]:
    """Both processes' (stdout, stderr); both logs are shown if either fails or hangs."""
    try:
        outs = [p.communicate(timeout=TIMEOUT) for p in procs]
    except subprocess.TimeoutExpired:
        for p in procs:
            p.kill()
        outs = [p.communicate() for p in procs]
        raise AssertionError("timed out:\n" + _logs(outs)) from None
    assert all(p.returncode == 0 for p in procs), _logs(outs, procs)
    return outs


def _logs(outs, procs=None) -> str:
    return "\n".join(f"--- process {i} (exit {p.returncode if procs else '?'}) ---\n{err[-2500:]}"
                     for i, ((_, err), p) in enumerate(zip(outs, procs or [None] * len(outs))))


def _one(module: str, args: list[str]) -> str:
    """`python -m module args` as one process with four devices; its stdout."""
    run = subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, env=_env(4),
                         capture_output=True, text=True, timeout=TIMEOUT)
    assert run.returncode == 0, run.stderr[-3000:]
    return run.stdout


def _records(workdir, split="train") -> list[dict]:
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        lines = [line for line in f if line.endswith("\n")]
    return [r for r in map(json.loads, lines) if r["split"] == split]


def _same_curve(a: list[dict], b: list[dict]) -> None:
    assert [r["step"] for r in a] == [r["step"] for r in b] and a
    for x, y in zip(a, b):
        for key in ("loss", "learning_rate"):
            if key in x:
                np.testing.assert_allclose(x[key], y[key], rtol=2e-4, atol=1e-6,
                                           err_msg=f"step {x['step']} {key}")


def _codes(data_dir: str, name: str, split: str) -> list[tuple]:
    from dalle_jax.data import sources

    source = sources.open_split("image_codes", data_dir, split, name)
    return [(int(r["index"]), r["caption"], np.asarray(r["codes"]).tolist())
            for r in (source[i] for i in range(len(source)))]


def test_quickstart_as_two_processes_equals_one_process_with_four_devices(tmp_path):
    data_dir = str(tmp_path / "data")  # empty: the two processes prepare it together
    two, one = str(tmp_path / "two"), str(tmp_path / "one")
    # The transformer's parameters and optimizer state are split over fsdp (data 2 × fsdp 2),
    # so each host holds and checkpoints only its shards.
    config = ["--config=configs/quickstart.py:tiny", f"--config.data_dir={data_dir}",
              "--config.dalle.mesh.data=2", "--config.dalle.mesh.fsdp=2"]
    outs = _finish(_launch("dalle_jax.train", [*config, f"--workdir={two}"]))
    assert outs[0][0].strip().splitlines()[-1] == outs[1][0].strip().splitlines()[-1]
    _one("dalle_jax.train", [*config, f"--workdir={one}"])

    for stage in ("dvae", "dalle", "clip"):
        _same_curve(_records(os.path.join(two, stage)), _records(os.path.join(one, stage)))
        _same_curve(_records(os.path.join(two, stage), "eval"), _records(os.path.join(one, stage), "eval"))
        with open(os.path.join(two, stage, "metrics.jsonl")) as f:  # one writer
            steps = [json.loads(line)["step"] for line in f if '"train"' in line]
        assert steps == sorted(set(steps))
    with open(os.path.join(two, "samples.json")) as f, open(os.path.join(one, "samples.json")) as g:
        got, want = json.load(f)["samples"], json.load(g)["samples"]
    assert [s["prompt"] for s in got] == [s["prompt"] for s in want] and len(got) == 4
    np.testing.assert_allclose([s["score"] for s in got], [s["score"] for s in want], atol=1e-4)
    grids = [np.asarray(Image.open(os.path.join(w, "samples.png")), np.float32) for w in (two, one)]
    assert np.abs(grids[0] - grids[1]).mean() < 0.5

    # The two processes' encode (each host its own share) is the one process's, record for record.
    names = [[n for n in os.listdir(os.path.join(w, "codes", "image_codes")) if n[0] != "."]
             for w in (two, one)]  # one each, named after their own dVAE's workdir
    for split in ("train", "validation", "heldout"):
        got = _codes(os.path.join(two, "codes"), *names[0], split)
        assert got == _codes(os.path.join(one, "codes"), *names[1], split) and got
        assert sorted(r[0] for r in got) == list(range(len(got)))

    # `evaluate` as two processes equals one process restoring the two-process checkpoints (the
    # transformer's fsdp shards, its dVAE): the split's loss and the judged samples.
    args = [f"--workdir={os.path.join(two, 'dalle')}", "--num_captions=2", "--num_batches=2"]
    outs = _finish(_launch("dalle_jax.evaluate", args))
    got = [json.loads(out.strip().splitlines()[-1]) for out, _ in outs]
    want = json.loads(_one("dalle_jax.evaluate", args).strip().splitlines()[-1])
    assert got[0] == got[1]
    _close(got[0], want)


def _close(got, want, where="") -> None:
    """Nested JSON records equal, floats to a relative 1e-4."""
    if isinstance(want, dict):
        assert isinstance(got, dict) and set(got) == set(want), where
        for key in want:
            _close(got[key], want[key], f"{where}/{key}")
    elif isinstance(want, float):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6, err_msg=where)
    else:
        assert got == want, where


def test_sigterm_to_one_process_stops_both_at_one_step_and_resumes_onto_the_same_curve(tmp_path):
    workdir, data_dir = str(tmp_path / "work"), str(tmp_path / "data")
    args = ["--config=configs/dvae.py:tiny", f"--workdir={workdir}",
            f"--config.data.data_dir={data_dir}", "--config.train.log_every=1",
            "--config.train.checkpoint_every=1000", "--config.train.eval_every=1000",
            "--config.train.image_every=4"]
    procs = _launch("dalle_jax.train", [*args, "--config.train.num_steps=3000"])
    deadline = time.time() + 480
    while len(_records(workdir)) < 5 and time.time() < deadline:
        assert all(p.poll() is None for p in procs), _logs([p.communicate() for p in procs], procs)
        time.sleep(0.5)
    procs[1].send_signal(signal.SIGTERM)  # the notice reaches one host only
    outs = _finish(procs)
    saved = [re.findall(r"SIGTERM: saved step (\d+)", err) for _, err in outs]
    assert saved[0] and saved[0] == saved[1], _logs(outs, procs)
    step = int(saved[0][0])
    assert 5 <= step < 3000
    ckpt = os.path.join(workdir, "checkpoints", str(step))
    with open(os.path.join(ckpt, "data", "metadata")) as f:
        positions = json.load(f)["processes"]
    assert len(positions) == 2  # each host's own position in its rows of the batches
    assert os.path.exists(os.path.join(workdir, "tokenizer.json"))
    assert os.path.exists(os.path.join(workdir, "images", "recon_0000004.png"))
    assert [r["step"] for r in _records(workdir)] == list(range(1, step + 1))  # one writer

    resumed = _finish(_launch("dalle_jax.train", [*args, f"--config.train.num_steps={step + 2}"]))
    for _, err in resumed:
        assert f"training dvae from step {step} to {step + 2}" in err, err[-2000:]
    results = [json.loads(out.strip().splitlines()[-1]) for out, _ in resumed]
    assert results[0] == results[1] and results[0]["eval"]["images"] > 0

    # An uninterrupted one-process run of as many steps draws the same curve.
    uninterrupted = str(tmp_path / "uninterrupted")
    _one("dalle_jax.train", [*(a for a in args if not a.startswith("--workdir")),
                             f"--workdir={uninterrupted}", f"--config.train.num_steps={step + 2}"])
    _same_curve(_records(workdir), _records(uninterrupted))
    _same_curve(_records(workdir, "eval"), _records(uninterrupted, "eval"))


def test_data_prepare_as_two_processes_writes_one_dataset(tmp_path):
    args = ["prepare", "--dataset=shapes", f"--data_dir={tmp_path}", "--resolution=32",
            "--num_train=24", "--num_validation=8", "--num_test=8", "--num_heldout=8"]
    outs = _finish(_launch("dalle_jax.data", args))
    summaries = [json.loads(out.strip().splitlines()[-1]) for out, _ in outs]
    assert summaries[0] == summaries[1]
    assert summaries[0]["splits"] == {"train": 24, "validation": 8, "test": 8, "heldout": 8}
    assert not [p for p in tmp_path.rglob("*") if "incomplete" in p.name]  # no half-written copy

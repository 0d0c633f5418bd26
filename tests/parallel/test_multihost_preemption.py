"""Preemption on a pod: a SIGTERM that reaches one of two processes (loopback, two CPU devices
each) stops both at the same step with a checkpoint holding each process's data position, and
the same command resumes both from it onto the curve of an uninterrupted run."""

import json
import os
import re
import signal
import time

from tests.helpers import processes as proc


def test_sigterm_to_one_process_stops_both_at_one_step_and_resumes_onto_thesame_curve(tmp_path):
    workdir, data_dir = str(tmp_path / "work"), str(tmp_path / "data")
    args = ["--config=configs/dvae.py:tiny", f"--workdir={workdir}",
            f"--config.data.data_dir={data_dir}", "--config.train.log_every=1",
            "--config.train.checkpoint_every=1000", "--config.train.eval_every=1000",
            "--config.train.image_every=4"]
    procs = proc.launch("dalle_jax.train", [*args, "--config.train.num_steps=3000"])
    deadline = time.time() + 480
    while len(proc.records(workdir)) < 5 and time.time() < deadline:
        assert all(p.poll() is None for p in procs), proc.logs([p.communicate() for p in procs], procs)
        time.sleep(0.5)
    procs[1].send_signal(signal.SIGTERM)  # the notice reaches one host only
    outs = proc.finish(procs)
    saved = [re.findall(r"SIGTERM: saved step (\d+)", err) for _, err in outs]
    assert saved[0] and saved[0] == saved[1], proc.logs(outs, procs)
    step = int(saved[0][0])
    assert 5 <= step < 3000
    ckpt = os.path.join(workdir, "checkpoints", str(step))
    with open(os.path.join(ckpt, "data", "metadata")) as f:
        positions = json.load(f)["processes"]
    assert len(positions) == 2  # each host's own position in its rows of the batches
    assert os.path.exists(os.path.join(workdir, "tokenizer.json"))
    assert os.path.exists(os.path.join(workdir, "images", "recon_0000004.png"))
    assert [r["step"] for r in proc.records(workdir)] == list(range(1, step + 1))  # one writer

    resumed = proc.finish(proc.launch("dalle_jax.train",
                                      [*args, f"--config.train.num_steps={step + 2}"]))
    for _, err in resumed:
        assert f"training dvae from step {step} to {step + 2}" in err, err[-2000:]
    results = [json.loads(out.strip().splitlines()[-1]) for out, _ in resumed]
    assert results[0] == results[1] and results[0]["eval"]["images"] > 0

    # An uninterrupted one-process run of as many steps draws the same curve.
    uninterrupted = str(tmp_path / "uninterrupted")
    proc.one("dalle_jax.train", [*(a for a in args if not a.startswith("--workdir")),
                             f"--workdir={uninterrupted}", f"--config.train.num_steps={step + 2}"])
    proc.same_curve(proc.records(workdir), proc.records(uninterrupted))
    proc.same_curve(proc.records(workdir, "eval"), proc.records(uninterrupted, "eval"))

"""The commands as a pod runs them: the same command line in two processes on loopback (two CPU
devices each), sharing one fresh data_dir and one workdir, against one process with four devices.

Both processes prepare the same data and tokenizer without racing, encode their own shares of the
records, train, write each shared file once, and end with the losses, codes and samples of the
one-process run."""

import json
import os

import numpy as np
from PIL import Image

from tests.helpers import processes as proc

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
    outs = proc.finish(proc.launch("dalle_jax.train", [*config, f"--workdir={two}"]))
    assert outs[0][0].strip().splitlines()[-1] == outs[1][0].strip().splitlines()[-1]
    proc.one("dalle_jax.train", [*config, f"--workdir={one}"])

    for stage in ("dvae", "dalle", "clip"):
        for split in ("train", "eval"):
            proc.same_curve(proc.records(os.path.join(two, stage), split),
                            proc.records(os.path.join(one, stage), split))
        with open(os.path.join(two, stage, "metrics.jsonl")) as f:  # one writer
            steps = [json.loads(line)["step"] for line in f if '"train"' in line]
        assert steps == sorted(set(steps))
    with open(os.path.join(two, "samples.json")) as f, open(os.path.join(one, "samples.json")) as g:
        got, want = json.load(f)["samples"], json.load(g)["samples"]
    assert [s["prompt"] for s in got] == [s["prompt"] for s in want] and len(got) == 4
    assert [s["passes"] for s in got] == [s["passes"] for s in want]  # the caption checker's
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
    outs = proc.finish(proc.launch("dalle_jax.evaluate", args))
    got = [json.loads(out.strip().splitlines()[-1]) for out, _ in outs]
    want = json.loads(proc.one("dalle_jax.evaluate", args).strip().splitlines()[-1])
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


def test_data_prepare_as_two_processes_writes_one_dataset(tmp_path):
    args = ["prepare", "--dataset=shapes", f"--data_dir={tmp_path}", "--resolution=32",
            "--num_train=24", "--num_validation=8", "--num_test=8", "--num_heldout=8"]
    outs = proc.finish(proc.launch("dalle_jax.data", args))
    summaries = [json.loads(out.strip().splitlines()[-1]) for out, _ in outs]
    assert summaries[0] == summaries[1]
    assert summaries[0]["splits"] == {"train": 24, "validation": 8, "test": 8, "heldout": 8}
    assert not [p for p in tmp_path.rglob("*") if "incomplete" in p.name]  # no half-written copy

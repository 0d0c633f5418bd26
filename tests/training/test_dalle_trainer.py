"""`train --config=configs/dalle.py:tiny` on encoded codes: runs, resumes exactly (after a stop or a
SIGTERM), names bad input."""

import os
import signal

import pytest

from dalle_jax.training.dalle import steps as dalle_steps

from dalle_jax.training.dalle import trainer as dalle_trainer
from dalle_jax.training.metrics import read_metrics
from tests.helpers.configs import load


def _config(codes_dir, **kw):
    return load("dalle", "tiny", **{"data.data_dir": codes_dir, **kw})


@pytest.fixture(scope="module")
def straight(tiny_codes, tmp_path_factory):
    """Workdir of six uninterrupted tiny steps."""
    workdir = tmp_path_factory.mktemp("straight")
    dalle_trainer.train_and_evaluate(_config(tiny_codes), str(workdir))
    return workdir


def test_resume_continues_the_same_curve(tiny_codes, straight, tmp_path):
    dalle_trainer.train_and_evaluate(_config(tiny_codes, **{"train.num_steps": 3}),
                                     str(tmp_path / "resumed"))
    last = dalle_trainer.train_and_evaluate(_config(tiny_codes), str(tmp_path / "resumed"))
    want = read_metrics(straight, "train")
    got = read_metrics(tmp_path / "resumed", "train")
    assert [r["step"] for r in got] == [1, 2, 3, 4, 5, 6]
    assert [r["loss"] for r in got] == [r["loss"] for r in want]
    assert got[-1]["loss"] < got[0]["loss"]
    assert {"text_loss", "image_loss", "bits_per_image_token", "learning_rate"} <= set(got[0])
    evals = read_metrics(tmp_path / "resumed", "eval")
    assert [r["step"] for r in evals] == [3, 6]
    assert last["loss"] == pytest.approx(evals[-1]["loss"])


def test_sigterm_saves_and_the_rerun_resumes(tiny_codes, straight, tmp_path, monkeypatch):
    make = dalle_steps.make_train_step

    def make_with_preemption(*args, **kwargs):  # a TPU preemption arrives during step 2
        step, calls = make(*args, **kwargs), []

        def preempted(state, batch):
            calls.append(1)
            if len(calls) == 2:
                os.kill(os.getpid(), signal.SIGTERM)
            return step(state, batch)

        return preempted

    monkeypatch.setattr(dalle_steps, "make_train_step", make_with_preemption)
    workdir, handler = tmp_path / "preempted", signal.getsignal(signal.SIGTERM)
    dalle_trainer.train_and_evaluate(_config(tiny_codes), str(workdir))
    assert [r["step"] for r in read_metrics(workdir, "train")] == [1, 2]
    assert signal.getsignal(signal.SIGTERM) is handler  # the loop's handler is removed again
    assert sorted(os.listdir(workdir / "checkpoints")) == ["2"]
    monkeypatch.setattr(dalle_steps, "make_train_step", make)
    dalle_trainer.train_and_evaluate(_config(tiny_codes), str(workdir))
    got = read_metrics(workdir, "train")
    assert [r["step"] for r in got] == [1, 2, 3, 4, 5, 6]
    assert [r["loss"] for r in got] == [r["loss"] for r in read_metrics(straight, "train")]


def test_bad_inputs_are_named(tiny_codes, tmp_path):
    with pytest.raises(ValueError, match="model.grid=8"):
        dalle_trainer.train_and_evaluate(_config(tiny_codes, **{"model.grid": 8}), str(tmp_path / "a"))
    with pytest.raises(ValueError, match="model.image_vocab=8"):
        dalle_trainer.train_and_evaluate(_config(tiny_codes, **{"model.image_vocab": 8}),
                                         str(tmp_path / "b"))
    with pytest.raises(ValueError, match="model.text_len"):
        dalle_trainer.train_and_evaluate(_config(tiny_codes, **{"model.text_len": 12}),
                                         str(tmp_path / "c"))
    with pytest.raises(ValueError, match="data encode"):
        dalle_trainer.train_and_evaluate(_config(str(tmp_path / "empty")), str(tmp_path / "d"))


def test_a_damaged_newest_step_resumes_from_the_one_before(tiny_codes, straight, tmp_path,
                                                           caplog):
    """The newest checkpoint's array files cut short: the rerun names it, resumes from the
    intact step before it and retrains the same curve (never from scratch)."""
    import logging

    workdir = tmp_path / "damaged"
    dalle_trainer.train_and_evaluate(_config(tiny_codes, **{"train.num_steps": 3}), str(workdir))
    dalle_trainer.train_and_evaluate(_config(tiny_codes), str(workdir))
    assert {"3", "6"} <= set(os.listdir(workdir / "checkpoints"))
    for path in (workdir / "checkpoints" / "6" / "state").rglob("*"):
        if path.is_file() and path.parent.name == "d":
            with open(path, "r+b") as f:
                f.truncate(path.stat().st_size // 2)
    with caplog.at_level(logging.WARNING):
        dalle_trainer.train_and_evaluate(_config(tiny_codes, **{"train.num_steps": 7}),
                                         str(workdir))
    assert any("checkpoint step 6" in r.getMessage() and "damaged" in r.getMessage()
               for r in caplog.records)
    got = read_metrics(workdir, "train")
    assert [r["step"] for r in got] == [1, 2, 3, 4, 5, 6, 7]
    assert [r["loss"] for r in got[:6]] == [r["loss"] for r in read_metrics(straight, "train")]

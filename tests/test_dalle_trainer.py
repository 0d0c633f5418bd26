"""`train --config=configs/dalle.py:tiny` on encoded codes: runs, resumes exactly, names bad input."""

import pytest

from dalle_jax.training import dalle_trainer
from dalle_jax.training.metrics import read_metrics
from tests.helpers.configs import load


def _config(codes_dir, **kw):
    return load("dalle", "tiny", **{"data.data_dir": codes_dir, **kw})


def test_resume_continues_the_same_curve(tiny_codes, tmp_path):
    dalle_trainer.train_and_evaluate(_config(tiny_codes), str(tmp_path / "straight"))
    dalle_trainer.train_and_evaluate(_config(tiny_codes, **{"train.num_steps": 3}),
                                     str(tmp_path / "resumed"))
    last = dalle_trainer.train_and_evaluate(_config(tiny_codes), str(tmp_path / "resumed"))
    want = read_metrics(tmp_path / "straight", "train")
    got = read_metrics(tmp_path / "resumed", "train")
    assert [r["step"] for r in got] == [1, 2, 3, 4, 5, 6]
    assert [r["loss"] for r in got] == [r["loss"] for r in want]
    assert got[-1]["loss"] < got[0]["loss"]
    assert {"text_loss", "image_loss", "bits_per_image_token", "learning_rate"} <= set(got[0])
    evals = read_metrics(tmp_path / "resumed", "eval")
    assert [r["step"] for r in evals] == [3, 6]
    assert last["loss"] == pytest.approx(evals[-1]["loss"])


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

"""`bench train` on the tiny preset: its JSON has consistent figures for both implementations."""

import pytest

from dalle_jax.benchmarks import train
from tests.helpers.configs import load


@pytest.mark.parametrize("impl", ["dense", "blocksparse"])
def test_bench_train_reports_consistent_figures(impl):
    config = load("dalle", "tiny", **{"model.attention": impl})
    out = train.run(config, seconds=0.05, attention_shape=(8, 4))
    assert out["tokens_per_step"] == 8 * (16 + 16)
    assert out["tokens_per_s"] == pytest.approx(out["tokens_per_step"] / out["step_s"])
    assert out["flops_per_step"] > 0 and 0 < out["fraction_of_peak"]
    op = out["attention_op"]
    assert (op["text_len"], op["grid"]) == (8, 4)
    assert op["speedup_vs_dense"] == pytest.approx(op["dense_s"] / op[f"{impl}_s"])

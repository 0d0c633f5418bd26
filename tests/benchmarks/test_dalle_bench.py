"""`bench train` on the tiny preset: its JSON has consistent figures for both implementations, and
its model FLOP count agrees with XLA's on a one-layer model."""

import os

import jax
import numpy as np
import pytest
from flax import nnx

from dalle_jax.xla_cpu import huge_pages
from dalle_jax.benchmarks import train
from dalle_jax.benchmarks.model_flops import forward_flops, train_step_flops
from dalle_jax.benchmarks.timing import compiled_flops
from dalle_jax.models.dalle import attention_masks
from dalle_jax.models.dalle.transformer import DalleTransformer
from tests.helpers.configs import load


@pytest.mark.parametrize("impl", ["dense", "blocksparse", "auto", "cudnn"])
def test_bench_train_reports_consistent_figures(impl, tmp_path):
    # cudnn as its call's XLA implementation (what a CPU can run); auto is blocksparse here.
    config = load("dalle", "tiny", **{"model.attention": impl, "model.cudnn_impl": "xla"})
    profile = str(tmp_path / "trace") if impl == "dense" else None
    out = train.run(config, seconds=0.05, attention_shape=(8, 4), profile_dir=profile)
    if profile:  # a trace of the profiled steps was written
        assert any(f.endswith(".xplane.pb") for _, _, fs in os.walk(profile) for f in fs)
    assert out["tokens_per_step"] == 8 * (16 + 16)
    assert out["tokens_per_s"] == pytest.approx(out["tokens_per_step"] / out["step_s"])
    assert out["model_flops_per_step"] == train_step_flops(config.model, 8)
    assert out["flops_per_s"] == pytest.approx(out["model_flops_per_step"] / out["step_s"])
    assert 0 < out["fraction_of_peak"]
    assert out["minor_page_faults_per_step"] >= 0
    assert out["huge_pages"] == huge_pages.active()  # the pytest process was not restarted
    resolved = "blocksparse" if impl == "auto" else impl
    assert out["attention"] == impl and out["attention_resolved"] == resolved
    assert out["compile_s"] > 0 and out["matmul_peak_n"] == 2048  # a CPU's peak matmul
    assert out["device_memory_gib"] is None  # the CPU backend keeps no such figures
    op = out["attention_op"]
    assert (op["text_len"], op["grid"]) == (8, 4)
    assert op["speedup_vs_dense"] == pytest.approx(op["dense_s"] / op[f"{resolved}_s"])
    kinds = attention_masks.layer_kinds(config.model.depth, config.model.pattern)
    per = op["per_pattern_s"]  # the mean over the layers is of each pattern's own time
    for name, mean in (("dense", op["dense_s"]), (resolved, op[f"{resolved}_s"])):
        assert set(per[name]) == set(kinds)
        assert sum(per[name][k] for k in kinds) / len(kinds) == pytest.approx(mean)


def test_forward_flops_match_xla_on_one_dense_layer():
    m = load("dalle", "tiny", **{"model.depth": 1, "model.pattern": "full",
                                 "model.attention": "dense", "model.width": 64}).model
    model = DalleTransformer.from_config(m)
    graphdef, params = nnx.split(model, nnx.Param)
    b = 4
    text = np.ones((b, m.text_len), np.int32)
    image = np.zeros((b, m.grid, m.grid), np.int32)
    xla = compiled_flops(jax.jit(lambda p: nnx.merge(graphdef, p)(text, image)), params)
    ours = forward_flops(m, b)
    length = m.text_len + m.grid ** 2
    allowed = np.count_nonzero(attention_masks.stream_mask("full", m.text_len, m.grid))
    dense = ours["attention"] * length ** 2 / allowed  # the dense kernel computes every pair
    matmuls = ours["projections"] + ours["logits"] + dense
    assert matmuls <= xla <= 1.15 * matmuls  # XLA adds the elementwise work


def test_bench_sample_reports_cached_and_uncached_per_image():
    from dalle_jax.benchmarks import sample

    out = sample.run(load("dalle", "tiny"), batches=(1, 2), seconds=0.01)
    assert [r["batch"] for r in out["results"]] == [1, 2]
    for r in out["results"]:
        assert r["cached_s_per_image"] > 0 and r["uncached_s_per_image"] > 0
        assert r["speedup"] == pytest.approx(r["uncached_s_per_image"] / r["cached_s_per_image"])
        assert r["cached_codes_per_s"] == pytest.approx(16 / r["cached_s_per_image"])
        assert r["cached_first_call_s"] > 0
    assert out["image_tokens"] == 16 and out["top_k"] == 32

"""A trained stage-1 workdir in use: encode/decode, `evaluate`, `data encode`, the benchmark."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from dalle_jax.data import sources
from dalle_jax.data.image_codes import image_codes
from dalle_jax.data.loader import Loader
from dalle_jax.data.tokenizer import TextTokenizer
from dalle_jax.generation.dvae import TrainedDVAE
from dalle_jax.training.metrics import read_metrics
from tests.helpers.configs import load
from tests.helpers.xla_flags import xla_flags


@pytest.fixture
def trained(tiny_dvae):
    return tiny_dvae


def _validation_images(data_dir, n):
    source = sources.open_split("shapes", data_dir, "validation")
    return np.stack([np.asarray(source[i]["image"]) for i in range(n)]), source


def test_codec_encodes_and_decodes_any_batch_size(trained):
    data_dir, workdir = trained
    dvae = TrainedDVAE.load(workdir)
    assert dvae.step == 6
    images, _ = _validation_images(data_dir, 5)  # 5 does not divide over 8 devices: padded
    codes = dvae.encode(images)
    assert codes.shape == (5, 4, 4) and codes.dtype == np.int32
    assert codes.min() >= 0 and codes.max() < 64
    np.testing.assert_array_equal(codes[2:3], dvae.encode(images[2:3]))
    recon = dvae.decode(codes)
    assert recon.shape == (5, 32, 32, 3) and 0.0 <= recon.min() and recon.max() <= 1.0
    with pytest.raises(ValueError, match=r"\[0, 64\)"):
        dvae.decode(np.full((1, 4, 4), 64))
    with pytest.raises(ValueError, match="must be \\(B, H, W, 3\\)"):
        dvae.encode(images[..., 0])


def test_evaluate_matches_the_runs_last_validation(trained):
    from dalle_jax.evaluate import evaluate_dvae

    _, workdir = trained
    got = evaluate_dvae(workdir, None, 2)  # the tiny preset evaluates 2 batches
    want = read_metrics(workdir, "eval")[-1]
    for key in ("psnr", "mse", "elbo_bpd", "perplexity", "codes_used"):
        assert got[key] == pytest.approx(want[key], rel=1e-5), key
    assert got["step"] == 6 and got["images"] == 16


def test_encode_writes_codes_with_captions(trained, tmp_path):
    data_dir, workdir = trained
    summary = image_codes.prepare(TrainedDVAE.load(workdir), "shapes", data_dir, splits=("validation",),
                                  out_data_dir=str(tmp_path), batch_size=7)
    assert summary["dataset"] == "image_codes" and summary["splits"] == {"validation": 32}
    codes = sources.open_split("image_codes", str(tmp_path), "validation")
    images, source = _validation_images(data_dir, 32)
    want = TrainedDVAE.load(workdir).encode(images)
    got = np.stack([codes[i]["codes"] for i in range(32)])
    order = [int(codes[i]["index"]) for i in range(32)]
    np.testing.assert_array_equal(got, want[order])
    cap = codes[0]["caption"]
    assert (cap.decode() if isinstance(cap, bytes) else cap) == (
        lambda c: c.decode() if isinstance(c, bytes) else c)(source[order[0]]["caption"])
    again = image_codes.prepare(TrainedDVAE.load(workdir), "shapes", data_dir, splits=("validation",),
                                out_data_dir=str(tmp_path))
    assert again["path"] == summary["path"]  # prepared once, reused
    # The loader reads it as batches of codes (stage 2's input), in order when not shuffled.
    tok = TextTokenizer.load(os.path.join(workdir, "tokenizer.json"), 16)
    batch = next(Loader(codes, tokenizer=tok, resolution=32, global_batch_size=8, seed=0,
                        num_epochs=1, shuffle=False, image_key="codes"))
    assert "image" not in batch and batch["codes"].dtype == np.int32
    np.testing.assert_array_equal(batch["codes"], got[:8])
    assert batch["text"].shape == (8, 16)


def _cli(*args):
    env = dict(os.environ, XLA_FLAGS=xla_flags(1))
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, env=env,
                          timeout=600)


def test_cli_evaluate_and_errors(trained, tmp_path):
    _, workdir = trained
    out = _cli("dalle_jax.evaluate", f"--workdir={workdir}", "--num_batches=1")
    assert out.returncode == 0, out.stderr[-2000:]
    row = json.loads(out.stdout.strip().splitlines()[-1])
    assert row["quantizer"] == "gumbel" and row["images"] == 8
    bad = _cli("dalle_jax.evaluate", f"--workdir={tmp_path}")
    assert bad.returncode == 2 and "no config.json" in bad.stderr
    bad = _cli("dalle_jax.data", "encode", f"--tokenizer={workdir}", "--dataset=shapes",
               f"--data_dir={trained[0]}", "--splits=nope")
    assert bad.returncode == 2 and "no split(s) ['nope']" in bad.stderr


def test_bench_reports_throughput_against_peak():
    from dalle_jax.benchmarks import dvae as bench

    out = bench.run(load("dvae", "tiny"), seconds=0.05)
    assert out["train_images_per_s"] > 0 and out["encode_images_per_s"] > 0
    assert out["train_flops_per_step"] > 0 and out["matmul_peak_flops_per_s"] > 0
    assert 0 < out["train_fraction_of_peak"] == pytest.approx(
        out["train_flops_per_s"] / out["matmul_peak_flops_per_s"])
    # The decoder phase skips the encoder's backward pass and the KL terms.
    assert 0 < out["decoder_flops_per_step"] < 0.8 * out["train_flops_per_step"]
    assert out["decoder_step_vs_train_step"] == pytest.approx(out["decoder_step_s"] / out["train_step_s"])

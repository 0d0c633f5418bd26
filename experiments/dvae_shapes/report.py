"""Evaluates the dvae_shapes runs and writes results.json, loss_curves.png and recon_<q>.png.

  python experiments/dvae_shapes/report.py workdirs/dvae_shapes_gumbel workdirs/dvae_shapes_vq --out=DIR
"""

import argparse
import glob
import json
import os
import shutil
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from dalle_jax.evaluate import evaluate_dvae  # noqa: E402
from dalle_jax.training.metrics import read_metrics  # noqa: E402


def main():
    p = argparse.ArgumentParser()
    p.add_argument("workdirs", nargs="+")
    p.add_argument("--out", required=True)
    args = p.parse_args()
    results = {}
    fig, (ax_loss, ax_psnr) = plt.subplots(1, 2, figsize=(10, 3.8))
    for wd in args.workdirs:
        ev = evaluate_dvae(wd, "validation", None, num_judged=64)
        name = ev["quantizer"]
        results[name] = ev
        train = read_metrics(wd, "train")
        ax_loss.plot([r["step"] for r in train], [r["mse"] for r in train], label=f"{name} train MSE")
        evals = read_metrics(wd, "eval")
        ax_psnr.plot([r["step"] for r in evals], [r["psnr"] for r in evals], "o-", label=name)
        grids = sorted(glob.glob(os.path.join(wd, "images", "recon_*.png")))
        if grids:
            shutil.copy(grids[-1], os.path.join(args.out, f"recon_{name}.png"))
        print(json.dumps(ev))
    ax_loss.set(xlabel="step", ylabel="train MSE (soft/relaxed codes)", yscale="log")
    ax_psnr.set(xlabel="step", ylabel="validation PSNR, dB (argmax codes, EMA)")
    for ax in (ax_loss, ax_psnr):
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(os.path.join(args.out, "loss_curves.png"), dpi=100)
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()

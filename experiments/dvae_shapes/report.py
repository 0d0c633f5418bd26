"""Evaluates the dvae_shapes runs and writes results.json, loss_curves.png and recon_<q>.png.

results.json keeps the entries (with their curves) of dVAEs not given here, and the plot draws
every entry that has curves.

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
    # Runs not given here keep their earlier entries (one dVAE can be retrained alone).
    path = os.path.join(args.out, "results.json")
    results = json.load(open(path)) if os.path.exists(path) else {}
    for wd in args.workdirs:
        ev = evaluate_dvae(wd, "validation", None, num_judged=64)
        name = ev["quantizer"]
        # The curves travel in results.json, so a run retrained alone is still drawn beside the rest.
        ev["curves"] = {
            "train_mse": [[r["step"], r["mse"]] for r in read_metrics(wd, "train")],
            "val_psnr": [[r["step"], r["psnr"]] for r in read_metrics(wd, "eval")],
        }
        with open(os.path.join(wd, "config.json")) as f:
            ev["decoder_phase_from"] = json.load(f).get("decoder_phase", {}).get("from_step", 0)
        results[name] = ev
        grids = sorted(glob.glob(os.path.join(wd, "images", "recon_*.png")))
        if grids:
            shutil.copy(grids[-1], os.path.join(args.out, f"recon_{name}.png"))
        print(json.dumps({k: v for k, v in ev.items() if k != "curves"}))
    fig, (ax_loss, ax_psnr) = plt.subplots(1, 2, figsize=(10, 3.8))
    for name, ev in sorted(results.items()):
        if "curves" not in ev:  # an entry written before the curves were kept
            continue
        ax_loss.plot(*zip(*ev["curves"]["train_mse"]), label=f"{name} train MSE")
        line, = ax_psnr.plot(*zip(*ev["curves"]["val_psnr"]), "o-", label=name)
        if ev.get("decoder_phase_from"):
            ax_psnr.axvline(ev["decoder_phase_from"], ls=":", color=line.get_color(),
                            label=f"{name}: decoder alone from here")
    ax_loss.set(xlabel="step", ylabel="train MSE", yscale="log")
    ax_psnr.set(xlabel="step", ylabel="validation PSNR, dB (argmax codes, EMA)")
    for ax in (ax_loss, ax_psnr):
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(os.path.join(args.out, "loss_curves.png"), dpi=100)
    with open(path, "w") as f:
        json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()

"""Prints the Markdown table of experiments/tpu/results.jsonl (one `bench compile` line per row).

    python experiments/tpu/table.py [experiments/tpu/results.jsonl]
"""

import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
KINDS = {"all-gather": "AG", "all-reduce": "AR", "reduce-scatter": "RS", "all-to-all": "A2A",
         "collective-permute": "CP"}


def _mesh(mesh: dict) -> str:
    return " × ".join(f"{k} {v}" for k, v in mesh.items() if v > 1) or "1"


def _collectives(counts: dict | None) -> str:
    if not counts:
        return "–"
    return ", ".join(f"{KINDS[k]} {n}" for k, n in counts.items() if n)


def row(r: dict) -> str:
    """One table row of a `bench compile` record."""
    gib = r["per_device_gib"]
    memory = (f"{gib['arguments']:.1f} + {gib['temp']:.1f} = **{gib['peak']:.1f}**" if gib
              else r.get("error", "")[:80])
    steps = "sample (prefill + decode)" if r["step"] == "sample" else r["step"]
    if r["step"] == "sample":
        progs = r["programs"]
        memory = " / ".join(f"{n} {p['per_device_gib']['peak']:.1f}" for n, p in progs.items())
    return (f"| {r['row']} | {r['preset']} {steps} | {r['topology']} ({r['chips']}) | "
            f"{_mesh(r['mesh'])} | {r['global_batch']} | {r['remat']} | {r['attention']} | "
            f"{memory} | {r['hbm_gib']:.0f} | {'yes' if r['fits'] else 'no'} | "
            f"{r['compile_s']:.0f} | {_collectives(r['collectives'])} | "
            f"{r['attention_kernel'] if r['attention_kernel'] is not None else '–'} | "
            f"{len(r['replicated'])} |")


def main(path: str) -> None:
    print("| row | step | topology (chips) | mesh | batch | remat | attention | "
          "per chip GiB: arguments + temp = peak | HBM | fits | compile s | collectives | "
          "splash calls | whole |")
    print("|" + "---|" * 14)
    with open(path) as f:
        for line in f:
            print(row(json.loads(line)))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "results.jsonl"))

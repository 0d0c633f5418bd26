"""Markdown table of experiments/dalle_speed/results.jsonl: ours against the peer, per shape.

  python experiments/dalle_speed/summarize.py [results.jsonl]
"""

import json
import os
import sys
from collections import defaultdict


def load(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def row(r):
    """(tokens/s, s/step, peak RSS MiB, fraction of matmul peak or None) of one result line."""
    if r.get("impl") == "dalle_jax":
        return r["tokens_per_s"], r["step_s"], r["peak_rss_gib"] * 1024, r["fraction_of_peak"]
    t = r["dalle_train"]
    return t["tokens_per_s"], t["s_per_step"], t["peak_rss_mib_so_far"], None


def main(path):
    by_shape = defaultdict(list)
    for r in load(path):
        by_shape[r["name"].split("-")[0]].append(r)
    for shape, runs in by_shape.items():
        peer = [row(r) for r in runs if r["name"].endswith("peer-sparse")]
        base_tps, base_rss = (peer[0][0], peer[0][2]) if peer else (None, None)
        print(f"\n### {shape}\n")
        print("| run | tokens/s | s/step | × peer sparse tokens/s | peak RSS MiB | ÷ peer RSS "
              "| of matmul peak |")
        print("|---|---|---|---|---|---|---|")
        for r in runs:
            tps, step, rss, frac = row(r)
            ratio = f"{tps / base_tps:.2f}×" if base_tps else "–"
            mem = f"{rss / base_rss:.2f}" if base_rss else "–"
            frac = f"{frac:.0%}" if frac is not None else "–"
            print(f"| {r['name']} | {tps:.0f} | {step:.2f} | {ratio} | {rss:.0f} | {mem} | {frac} |")
        for r in runs:
            if r.get("impl") == "dalle_jax" and r["attention"] != "dense":
                op = r["attention_op"]
                print(f"\nAttention op (forward + backward, one layer averaged over the 8-layer "
                      f"schedule, text {op['text_len']} / grid {op['grid']}): dense "
                      f"{op['dense_s'] * 1e3:.0f} ms, {r['attention']} "
                      f"{op[r['attention'] + '_s'] * 1e3:.0f} ms: {op['speedup_vs_dense']:.2f}×.")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else
         os.path.join(os.path.dirname(os.path.abspath(__file__)), "results.jsonl"))

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


def dtype(r):
    """The precision a result line ran in: ours its model dtype, the peer float32 or autocast."""
    if r.get("impl") == "dalle_jax":
        return r["dtype"]
    return r.get("autocast", "float32")


def main(path):
    by_shape = defaultdict(list)
    for r in load(path):
        by_shape[r["name"].split("-")[0]].append(r)
    for shape, runs in by_shape.items():
        peers = {dtype(r): row(r) for r in reversed(runs)  # the peer as shipped: no huge pages
                 if "peer-sparse" in r["name"] and not r["name"].endswith("-hugepages")}
        base_tps, base_rss = peers["float32"][0], peers["float32"][2]
        print(f"\n### {shape}\n")
        print("| run | dtype | tokens/s | s/step | × peer sparse tokens/s | × peer sparse, same dtype "
              "| peak RSS MiB | ÷ peer RSS | of matmul peak (same dtype) |")
        print("|---|---|---|---|---|---|---|---|---|")
        for r in runs:
            tps, step, rss, frac = row(r)
            same = peers.get(dtype(r))
            same = f"{tps / same[0]:.2f}×" if same else "–"
            frac = f"{frac:.0%}" if frac is not None else "–"
            print(f"| {r['name']} | {dtype(r)} | {tps:.0f} | {step:.2f} | {tps / base_tps:.2f}× | "
                  f"{same} | {rss:.0f} | {rss / base_rss:.2f} | {frac} |")
        for r in [r for r in runs if r["name"] == f"{shape}-blocksparse"][:1]:
            if r["attention"] != "dense":
                op = r["attention_op"]
                print(f"\nAttention op (forward + backward, one layer averaged over the 8-layer "
                      f"schedule, text {op['text_len']} / grid {op['grid']}): dense "
                      f"{op['dense_s'] * 1e3:.0f} ms, {r['attention']} "
                      f"{op[r['attention'] + '_s'] * 1e3:.0f} ms: {op['speedup_vs_dense']:.2f}×.")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else
         os.path.join(os.path.dirname(os.path.abspath(__file__)), "results.jsonl"))

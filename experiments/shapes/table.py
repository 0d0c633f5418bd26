"""Prints the README's table from results.jsonl (the `main` study run.sh writes).

  python experiments/shapes/table.py [experiments/shapes/results.jsonl]

Rows: training time and steps, validation bits per image token, then per split the share of
samples passing every check of the caption checker: the dVAE's ceiling, the first sample, the
mean over all samples drawn (a random pick), CLIP's pick of 32 and the best of them (a perfect
reranker); ours beside the peer's (its samples decoded by our dVAE).
"""

import json
import os
import sys

SPLITS = (("validation", "seen"), ("heldout", "held-out"))


def load(path):
    """The `main` study's records: ours by kind and split, the peer's, our training seconds."""
    got = {"dvae": {}, "dalle": {}, "peer_samples": {}, "peer_curve": []}
    with open(path) as f:
        for line in f:
            r = json.loads(line)
            if r.get("study") != "main":
                continue
            kind = r.get("record")
            if kind == "peer_samples":
                got["peer_samples"][r["split"]] = r
            elif kind == "peer_curve":
                got["peer_curve"].append(r)
            elif kind in ("peer_train", "ours_train_seconds"):
                got[kind] = r
            elif "checker" in r:
                got["dvae"][r["split"]] = r
            elif "without_rerank" in r:
                got["dalle"][r["split"]] = r
    return got


def pct(x):
    return "–" if x is None else f"{100 * x:.1f}%"


def table(got) -> str:
    peer, ours = got["peer_train"], got["dalle"]
    final = peer["final"]
    rows = [
        ("transformer training, seconds (steps)",
         f"{got['ours_train_seconds']['seconds']:.0f} ({ours['validation']['step']})",
         f"{final['train_seconds']:.0f} ({final['step']})"),
        ("validation bits per image token",
         f"{ours['validation']['loss']['bits_per_image_token']:.3f}",
         f"{final['validation_bits_per_image_token']:.3f}"),
    ]
    for split, name in SPLITS:
        mine, theirs = ours[split], got["peer_samples"][split]
        rerank = mine["with_rerank"]
        rows += [
            (f"{name}: dVAE ceiling (its reconstructions pass)",
             pct(got["dvae"][split]["checker"]["all"]), "(the same codes)"),
            (f"{name}: first sample passes", pct(mine["without_rerank"]["all"]),
             pct(theirs["first"]["all"])),
            (f"{name}: all samples, mean (a random pick)",
             f"{pct(rerank['sample_mean'])} of {rerank['rerank_from']}",
             f"{pct(theirs['sample_mean'])} of {theirs['samples_per_caption']}"),
            (f"{name}: CLIP's pick of {rerank['rerank_from']}", pct(rerank["all"]), "–"),
            (f"{name}: best of {rerank['rerank_from']} (a perfect reranker)", pct(rerank["oracle"]),
             "–"),
        ]
    out = ["| | dalle_jax | dalle-pytorch 1.6.6 |", "|---|---|---|"]
    out += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    return "\n".join(out)


if __name__ == "__main__":
    here = os.path.dirname(os.path.abspath(__file__))
    print(table(load(sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "results.jsonl"))))

"""Markdown table of experiments/sample_speed/results.jsonl: ours against the peer, per batch size."""

import json
import sys


def main(path: str) -> None:
    rows = [json.loads(line) for line in open(path) if line.strip()]
    ours = [r for r in rows if r.get("benchmark") == "sample"][-1]
    peer = {}
    for r in rows:
        for g in r.get("generate", []):
            peer[(r["name"], g["mode"], g["batch"])] = g["s_per_image"]
    default8 = peer.get(("small-sparse-gen", "off", 8))
    dense8 = peer.get(("small-full-gen", "fixed", 8))
    print("| batch | ours cached s/img | ours uncached s/img | cache speed-up | peer default (sparse, no cache) | peer dense, repaired cache |")
    print("|---|---|---|---|---|---|")
    for r in ours["results"]:
        b = r["batch"]
        d, f = peer.get(("small-sparse-gen", "off", b)), peer.get(("small-full-gen", "fixed", b))
        cell = lambda v: f"{v:.3f}" if v is not None else "–"
        print(f"| {b} | {r['cached_s_per_image']:.3f} | {r['uncached_s_per_image']:.3f} | "
              f"{r['speedup']:.1f}× | {cell(d)} | {cell(f)} |")
    b8 = next(r for r in ours["results"] if r["batch"] == 8)
    if default8:
        print(f"\nbatch 8: ours cached = 1/{default8 / b8['cached_s_per_image']:.0f} of the peer's default")
    if dense8:
        print(f"batch 8: ours cached / peer repaired dense cache = {b8['cached_s_per_image'] / dense8:.2f}")


if __name__ == "__main__":
    main(sys.argv[1])

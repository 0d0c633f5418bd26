"""Runs the peer harness (`bench_dalle_pytorch.py`) unchanged, under PyTorch's CPU
bfloat16 autocast, so that our bfloat16 figures meet the peer in the same precision.

  $PEER_PY experiments/dalle_speed/peer_autocast.py HARNESS [harness flags…]

`torch.autocast("cpu", dtype=torch.bfloat16)` runs the peer's matmuls and linear layers in
bfloat16 (oneDNN, AMX where the CPU has it) with float32 weights, PyTorch's own mixed precision.
The harness's JSON line is printed with "autocast": "bfloat16" added to it.
"""

import contextlib
import io
import json
import runpy
import sys

import torch


def main() -> None:
    harness, flags = sys.argv[1], sys.argv[2:]
    sys.argv = [harness] + flags
    out = io.StringIO()
    with torch.autocast("cpu", dtype=torch.bfloat16), contextlib.redirect_stdout(out):
        runpy.run_path(harness, run_name="__main__")
    for line in out.getvalue().splitlines():
        if line.startswith("{"):
            record = json.loads(line)
            record["autocast"] = "bfloat16"
            line = json.dumps(record)
        print(line)


if __name__ == "__main__":
    main()

#!/usr/bin/env bash
# Sampling speed side by side with the peer (lucidrains' dalle-pytorch 1.6.6, timed by
# experiments/peer/bench.py) on the `small` shapes (width 512, 8 layers, text 64, 16×16 codes from
# 1024), this machine, one run:
#   ours:  python -m dalle_jax.bench sample --config=configs/dalle.py:small   (cached and uncached)
#   peer:  its default generate_images (no cache, the paper's sparse pattern) at batch 8, and its
#          cache as bench.py repairs it ('fixed') with dense attention at batch 1 and 8.
# Appends to results.jsonl here and prints the table.
#   usage: bash experiments/sample_speed/run.sh
#   env:   PYTHON (ours), PEER_PYTHON (a Python with dalle-pytorch 1.6.6; default: the venv that
#          experiments/peer/setup.sh builds, built or checked on the way)
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-python}
PEER_PY=${PEER_PYTHON:-$(bash experiments/peer/setup.sh | tail -n 1)}
PEER_BENCH=experiments/peer/bench.py
HERE=experiments/sample_speed
OUT="$HERE/results.jsonl"
SMALL="--dim 512 --depth 8 --heads 8 --dim-head 64 --text-seq-len 64 --num-text-tokens 4096 --image-size 128 --vae-layers 3 --num-image-tokens 1024"
SPARSE=axial_row,axial_col,axial_row,axial_row,axial_row,axial_col,axial_row,conv_like
$PY -m dalle_jax.bench sample --config=configs/dalle.py:small --batches=1,8 --seconds=1 >> "$OUT"
"$PEER_PY" "$PEER_BENCH" --name small-sparse-gen $SMALL --attn-types $SPARSE \
  --skip-train --skip-vae --gen-batches 8 --gen-cache off --threads 2 >> "$OUT"
"$PEER_PY" "$PEER_BENCH" --name small-full-gen $SMALL --attn-types full \
  --skip-train --skip-vae --gen-batches 1,8 --gen-cache fixed --threads 2 >> "$OUT"
$PY "$HERE/report.py" "$OUT"

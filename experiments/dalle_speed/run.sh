#!/usr/bin/env bash
# Stage-2 training speed against the peer (lucidrains' dalle-pytorch 1.6.6, ../shared/peers), side
# by side in one run on this machine, at two stream shapes of the `small` model (width 512, 8 layers,
# 8 heads of 64, batch 8): `small` (text 64, grid 16) and `long` (the paper's stream: text 256,
# grid 32). Appends one JSON line per measurement to results.jsonl beside this script.
#   usage: bash experiments/dalle_speed/run.sh [small] [long]
#   env:   PYTHON (ours), PEER_PY (default /tmp/peer-venv/bin/python; see ../shared/peers/README.md),
#          PEERS (the peer harness folder), SECONDS_EACH (ours: seconds per measurement), ROUNDS
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
PYTHON=${PYTHON:-python}
PEER_PY=${PEER_PY:-/tmp/peer-venv/bin/python}
PEERS=${PEERS:-$ROOT/../shared/peers}
OUT=${OUT:-$HERE/results.jsonl}
SECONDS_EACH=${SECONDS_EACH:-10}
ROUNDS=${ROUNDS:-1}
SPARSE=axial_row,axial_col,axial_row,axial_row,axial_row,axial_col,axial_row,conv_like

peer() {  # peer NAME TEXT_LEN IMAGE_SIZE ATTN_TYPES STEPS
  "$PEER_PY" "$PEERS/bench_dalle_pytorch.py" --name "$1" --dim 512 --depth 8 --heads 8 --dim-head 64 \
    --text-seq-len "$2" --num-text-tokens 4096 --image-size "$3" --vae-layers 3 \
    --num-image-tokens 1024 --attn-types "$4" --batch 8 --skip-vae --steps "$5" --warmup 1 \
    --gen-batches '' --threads 2 >> "$OUT"
}

ours() {  # ours NAME TEXT_LEN GRID ATTENTION DTYPE
  (cd "$ROOT" && "$PYTHON" -m dalle_jax.bench train --config=configs/dalle.py:small \
    --config.model.text_len="$2" --config.text.text_len="$2" --config.model.grid="$3" \
    --attention="$4" --config.model.dtype="$5" --seconds="$SECONDS_EACH" --attention_shape=256,32) \
    | sed "s/^{/{\"name\": \"$1\", \"impl\": \"dalle_jax\", /" >> "$OUT"
}

shapes=("$@")
[ ${#shapes[@]} -eq 0 ] && shapes=(small long)
for round in $(seq "$ROUNDS"); do
  for s in "${shapes[@]}"; do
    case $s in
      small) text=64 grid=16 size=128 steps=5 ;;
      long) text=256 grid=32 size=256 steps=3 ;;
      *) echo "unknown shape $s (small | long)" >&2; exit 2 ;;
    esac
    echo "== round $round: $s -> $OUT" >&2
    peer "$s-peer-sparse" $text $size $SPARSE $steps
    peer "$s-peer-full" $text $size full $steps
    ours "$s-dense" $text $grid dense float32
    ours "$s-blocksparse" $text $grid blocksparse float32
  done
done

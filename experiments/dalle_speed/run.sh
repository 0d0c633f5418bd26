#!/usr/bin/env bash
# Stage-2 training speed against the peer (lucidrains' dalle-pytorch 1.6.6, timed by
# experiments/peer/bench.py), side by side in one run on this machine, at two stream shapes of the
# `small` model (width 512, 8 layers, 8 heads of 64, batch 8): `small` (text 64, grid 16) and `long`
# (the paper's stream: text 256, grid 32). Appends one JSON line per measurement to results.jsonl
# beside this script. Ours runs in float32 (as the peer) and in bfloat16 with float32 accumulation
# (mixed_matmul), with the layers rematerialised ('dots') and, in bfloat16, without; the peer also
# runs under PyTorch's bfloat16 autocast (bench.py --autocast bf16), so that bfloat16 meets bfloat16.
#   usage: bash experiments/dalle_speed/run.sh [small] [long]
#   env:   PYTHON (ours), PEER_PY (a Python with dalle-pytorch 1.6.6; default: the venv that
#          experiments/peer/setup.sh builds, built or checked on the way), SECONDS_EACH (ours:
#          seconds per measurement), ROUNDS, OUT (the results file),
#          PEER_HUGE_PAGES=1 (also time the peer's sparse float32 run under glibc's huge-page
#          tunable, which our entry points turn on for themselves: dalle_jax/xla_cpu/huge_pages.py)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
PYTHON=${PYTHON:-python}
PEER_PY=${PEER_PY:-$(bash "$ROOT/experiments/peer/setup.sh" | tail -n 1)}
PEER_BENCH=$ROOT/experiments/peer/bench.py
OUT=${OUT:-$HERE/results.jsonl}
SECONDS_EACH=${SECONDS_EACH:-10}
ROUNDS=${ROUNDS:-1}
SPARSE=axial_row,axial_col,axial_row,axial_row,axial_row,axial_col,axial_row,conv_like

peer() {  # peer NAME TEXT_LEN IMAGE_SIZE ATTN_TYPES STEPS [BENCH FLAGS…]
  local name=$1 text=$2 size=$3 attn=$4 steps=$5; shift 5
  "$PEER_PY" "$PEER_BENCH" --name "$name" --dim 512 --depth 8 --heads 8 --dim-head 64 \
    --text-seq-len "$text" --num-text-tokens 4096 --image-size "$size" --vae-layers 3 \
    --num-image-tokens 1024 --attn-types "$attn" --batch 8 --skip-vae --steps "$steps" --warmup 1 \
    --gen-batches '' --threads 2 "$@" >> "$OUT"
}

ours() {  # ours NAME TEXT_LEN GRID ATTENTION DTYPE [REMAT]
  (cd "$ROOT" && "$PYTHON" -m dalle_jax.bench train --config=configs/dalle.py:small \
    --config.model.text_len="$2" --config.text.text_len="$2" --config.model.grid="$3" \
    --attention="$4" --config.model.dtype="$5" --config.model.remat="${6:-dots}" \
    --seconds="$SECONDS_EACH" --attention_shape=256,32) \
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
    peer "$s-peer-sparse-bf16" $text $size $SPARSE $steps --autocast bf16
    if [ "${PEER_HUGE_PAGES:-0}" = 1 ]; then
      (export GLIBC_TUNABLES=glibc.malloc.hugetlb=1; peer "$s-peer-sparse-hugepages" $text $size $SPARSE $steps)
    fi
    ours "$s-dense" $text $grid dense float32
    ours "$s-blocksparse" $text $grid blocksparse float32
    ours "$s-blocksparse-bf16" $text $grid blocksparse bfloat16
    ours "$s-blocksparse-bf16-noremat" $text $grid blocksparse bfloat16 none
  done
done

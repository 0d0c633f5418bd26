#!/usr/bin/env bash
# The transformer on one GPU: training step (model-FLOPs utilisation against an 8192³ bfloat16
# matmul measured in the same process, XLA's peak device memory, compile time) and the attention
# op alone per pattern, with dense, blocksparse and cudnn attention, for `small` and a
# paper-shaped stream; then cached sampling at batch 1, 8 and 64 (codes/s, first-call time).
#
#   bash experiments/gpu/run.sh                      # on a GPU machine; about 8 minutes
#   SIZE=tiny OUT=/tmp/gpu.jsonl bash experiments/gpu/run.sh   # the same steps, tiny, on a CPU
#
# Each measurement is one `python -m dalle_jax.bench` process (a failure or a timeout is recorded
# and the script goes on) and appends one JSON line to OUT (default: results.jsonl beside this
# script) as soon as it ends, tagged with its `measurement` name, so a run cut short keeps what it
# did. Environment: PYTHON (default python), SIZE (full or tiny), OUT, SECONDS_EACH (seconds each
# timing runs, default 3), LIMIT (seconds one measurement may take, default 240).
# At SIZE=tiny the cudnn path runs its call as XLA (`model.cudnn_impl=xla`), which a CPU can run.
set -uo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-python}
SIZE=${SIZE:-full}
OUT=${OUT:-experiments/gpu/results.jsonl}
SECONDS_EACH=${SECONDS_EACH:-3}
LIMIT=${LIMIT:-240}
BF16=(--config.model.dtype=bfloat16)
if [ "$SIZE" = tiny ]; then
  SMALL=(--config=configs/dalle.py:tiny "${BF16[@]}" --config.model.cudnn_impl=xla)
  STREAM=("${SMALL[@]}" --config.model.grid=6 --config.model.depth=2)
  BATCHES=1,2
elif [ "$SIZE" = full ]; then
  SMALL=(--config=configs/dalle.py:small "${BF16[@]}")
  # The paper's stream (256 text slots, 32 × 32 codes, its vocabularies and conv window) at a
  # width and depth one GPU trains: 1024 wide, 24 layers, 16 heads of 64.
  STREAM=(--config=configs/dalle.py:small "${BF16[@]}" --config.model.text_len=256
          --config.text.text_len=256 --config.model.text_vocab=16384 --config.text.vocab_size=16384
          --config.model.grid=32 --config.model.image_vocab=8192 --config.model.width=1024
          --config.model.depth=24 --config.model.heads=16 --config.model.conv_kernel=11
          --config.model.block_size=128 --config.data.global_batch_size=8)
else
  echo "SIZE=$SIZE: choose full or tiny" >&2
  exit 2
fi
mkdir -p "$(dirname "$OUT")"

measure() {  # measure NAME ARGS...: one bench process; its last JSON line (or the error) to OUT
  local name=$1 log rc
  shift
  log=$(mktemp)
  echo "== $name" >&2
  timeout "$LIMIT" "$PY" -m dalle_jax.bench "$@" > "$log" 2>&1
  rc=$?
  "$PY" - "$name" "$rc" "$log" >> "$OUT" <<'EOF'
import json, sys
name, rc, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
lines = open(path, errors="replace").read().splitlines()
records = [l for l in lines if l.startswith("{")]
if rc == 0 and records:
    print(json.dumps({"measurement": name, **json.loads(records[-1])}))
else:
    print(json.dumps({"measurement": name, "error": "timed out" if rc in (124, 137) else f"exit {rc}",
                      "tail": lines[-5:]}))
EOF
  tail -n 1 "$OUT" | cut -c1-160 >&2
  rm -f "$log"
}

for shape in small stream; do
  if [ "$shape" = small ]; then args=("${SMALL[@]}"); else args=("${STREAM[@]}"); fi
  for attention in dense blocksparse cudnn; do
    measure "train-$shape-$attention" train "${args[@]}" --attention="$attention" \
      --seconds="$SECONDS_EACH"
  done
  measure "sample-$shape" sample "${args[@]}" --batches="$BATCHES" --skip_uncached \
    --seconds="$SECONDS_EACH"
done
echo "done: $(grep -c . "$OUT") lines in $OUT" >&2

#!/usr/bin/env bash
# The presets compiled for real TPU slices on this machine (XLA's TPU compiler from libtpu; no TPU
# needed): one `bench compile` JSON line per row, appended to results.jsonl beside this script.
#   usage: bash experiments/tpu/run.sh [ROW ...]      (no ROW: every row; `list` prints the names)
#   env:   PYTHON (default python), OUT (default experiments/tpu/results.jsonl)
# Needs `pip install -r requirements-tpu.txt` on top of requirements.txt. The 512-chip rows take the
# longest (minutes each); everything runs on the CPU.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
PYTHON=${PYTHON:-python}
OUT=${OUT:-$HERE/results.jsonl}
export JAX_PLATFORMS=cpu
PAPER=configs/dalle.py:paper

declare -A ROWS=(
  [v5p-64-blocksparse]="$PAPER --topology=v5p:4x4x4 --mesh=data:8,fsdp:8"
  [v5p-64-splash]="$PAPER --topology=v5p:4x4x4 --mesh=data:8,fsdp:8 --config.model.attention=splash"
  [v5p-64-tensor4]="$PAPER --topology=v5p:4x4x4 --mesh=data:4,fsdp:4,tensor:4"
  [v5p-512-fsdp256]="$PAPER --topology=v5p:8x8x8 --mesh=data:2,fsdp:128,fsdp_transpose:2"
  [v5p-512-fsdp256-splash]="$PAPER --topology=v5p:8x8x8 --mesh=data:2,fsdp:128,fsdp_transpose:2 --config.model.attention=splash"
  [v5p-512-tensor8]="$PAPER --topology=v5p:8x8x8 --mesh=data:2,fsdp:16,fsdp_transpose:2,tensor:8"
  [v4-64]="$PAPER --topology=v4:4x4x4 --mesh=data:2,fsdp:32 --config.data.global_batch_size=512"
  [v4-64-splash]="$PAPER --topology=v4:4x4x4 --mesh=data:2,fsdp:32 --config.data.global_batch_size=512 --config.model.attention=splash"
  [v5e-256]="$PAPER --topology=v5e:16x16 --mesh=data:2,fsdp:128 --config.data.global_batch_size=512"
  [v5e-256-splash]="$PAPER --topology=v5e:16x16 --mesh=data:2,fsdp:128 --config.data.global_batch_size=512 --config.model.attention=splash"
  [v5e-256-batch1024]="$PAPER --topology=v5e:16x16 --mesh=data:2,fsdp:128"
  [v5p-4-sample]="$PAPER --topology=v5p:2x2x1 --mesh=fsdp:4 --step=sample --config.data.global_batch_size=8"
  [v5e-4-small]="configs/dalle.py:small --topology=v5e:2x2 --mesh=data:4 --config.model.dtype=bfloat16"
)
ORDER=(v5p-64-blocksparse v5p-64-splash v5p-64-tensor4 v5p-512-fsdp256 v5p-512-fsdp256-splash
       v5p-512-tensor8 v4-64 v4-64-splash v5e-256 v5e-256-splash v5e-256-batch1024 v5p-4-sample
       v5e-4-small)

if [ "${1:-}" = list ]; then printf '%s\n' "${ORDER[@]}" cpu-forms; exit 0; fi
rows=("$@")
[ ${#rows[@]} -gt 0 ] || rows=("${ORDER[@]}" cpu-forms)
cd "$ROOT"
for row in "${rows[@]}"; do
  echo "== $row" >&2
  if [ "$row" = cpu-forms ]; then
    # `small` on v5e with the CPU-only forms forced on (as if they were taken on every backend):
    # the same row as v5e-4-small otherwise.
    PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" "$PYTHON" "$HERE/cpu_forms.py" >> "$OUT"
    continue
  fi
  [ -n "${ROWS[$row]:-}" ] || { echo "unknown row $row; rows: ${ORDER[*]} cpu-forms" >&2; exit 2; }
  # shellcheck disable=SC2086
  "$PYTHON" -m dalle_jax.bench compile --config=${ROWS[$row]} \
    | "$PYTHON" -c "import json, sys; r = json.loads(sys.stdin.read()); r['row'] = '$row'; print(json.dumps(r))" >> "$OUT"
done

#!/usr/bin/env bash
# The `shapes` experiment on `bold` scenes, and the peer trained on the same codes for the same time.
#
#   PYTHON=python bash experiments/shapes/run.sh
#
# 1. Our three models, stage by stage (configs/quickstart.py:experiment, each stage a separate
#    timed process): the dVAE and the scenes' codes, the transformer, CLIP.
# 2. The peer (lucidrains' dalle-pytorch 1.6.6, in the venv experiments/peer/setup.sh builds)
#    trained on the same codes and BPE ids (experiments/peer/export_codes.py) for as many seconds as
#    our transformer's whole stage took, then its samples judged by our dVAE and checker.
# 3. `python -m dalle_jax.evaluate`: the dVAE's ceiling on 256 scenes per split; on CAPTIONS
#    captions per split, the transformer's samples without and with CLIP's pick of 32, its
#    validation bits per image token.
# 4. Sample grids of six captions per split, CLIP's best 4 of 16.
#
# Environment: PRESET (default experiment; `tiny` checks the script in a few minutes), DATA
# (default data), WORKDIRS (default workdirs/shapes), CAPTIONS (64), RERANK (32), PEER_SAMPLES (8
# per caption), TEMPERATURE (0.7), PEER_PY (default: the venv of experiments/peer/setup.sh),
# RESULTS (default this folder's results.jsonl; its lines of the `main` study are replaced).
# Outputs: $WORKDIRS/{dvae,codes,dalle,clip,peer}, then here results.jsonl, timings.json and
# samples_{seen,heldout}.png (+ .json); the quickstart-style samples.png stays in $WORKDIRS.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-python}
HERE=experiments/shapes
W=${WORKDIRS:-workdirs/shapes}
CAPTIONS=${CAPTIONS:-64}
RERANK=${RERANK:-32}
T=${TEMPERATURE:-0.7}
RESULTS=${RESULTS:-$HERE/results.jsonl}
GRIDS=${GRIDS:-$HERE}
mkdir -p "$W"
PEER_PY=${PEER_PY:-$(bash experiments/peer/setup.sh | tail -n 1)}
Q=(--config="configs/quickstart.py:${PRESET:-experiment}" --workdir="$W"
   --config.data_dir="${DATA:-data}")
marks=()
stage() {  # stage NAME COMMAND...: runs it, logs to $W/NAME.log, records its seconds
  local name=$1 t0
  shift
  t0=$(date +%s.%N)
  "$@" > "$W/$name.log" 2>&1 || { echo "stage $name failed; see $W/$name.log" >&2; tail -n 20 "$W/$name.log" >&2; exit 1; }
  LAST=$(awk "BEGIN { printf \"%.1f\", $(date +%s.%N) - $t0 }")
  marks+=("\"$name\": $LAST")
  echo "$name: $LAST s"
}

stage dvae $PY -m dalle_jax.train "${Q[@]}" --config.stages=dvae,codes
stage dalle $PY -m dalle_jax.train "${Q[@]}" --config.stages=dalle
OURS_SECONDS=$LAST
mkdir -p "$W/peer"
stage peer_export $PY experiments/peer/export_codes.py --workdir="$W/dalle" \
  --out="$W/peer/data.npz" --captions="$CAPTIONS"
stage peer_train "$PEER_PY" experiments/peer/train_codes.py --data="$W/peer/data.npz" \
  --seconds="$OURS_SECONDS" --out="$W/peer" --samples="${PEER_SAMPLES:-8}" --temperature="$T"
grep '^{' "$W/peer_train.log" | tail -n 1 > "$W/peer/train.json"
stage peer_judge $PY experiments/peer/judge_codes.py --workdir="$W/dalle" --samples="$W/peer/samples.npz" \
  --grid_prefix="$GRIDS/peer_samples"
stage clip $PY -m dalle_jax.train "${Q[@]}" --config.stages=clip
stage samples $PY -m dalle_jax.train "${Q[@]}" --config.stages=samples

# results.jsonl keeps the records of the other studies; this run's replace the "main" ones.
touch "$RESULTS"
grep -v '^{"study": "main"' "$RESULTS" > "$RESULTS.new" || true
main() { sed 's/^{/{"study": "main", /' >> "$RESULTS.new"; }
last_json() { grep '^{' "$1" | tail -n "${2:-1}"; }
t0=$(date +%s)
for split in validation heldout; do
  $PY -m dalle_jax.evaluate --workdir="$W/dvae" --split="$split" --num_captions=256 | main
  $PY -m dalle_jax.evaluate --workdir="$W/dalle" --clip_workdir="$W/clip" --split="$split" \
    --num_captions="$CAPTIONS" --rerank_from="$RERANK" --temperature="$T" | main
done
sed 's/^{/{"record": "peer_train", /' "$W/peer/train.json" | main
sed 's/^{/{"record": "peer_curve", /' "$W/peer/curve.jsonl" | main
last_json "$W/peer_judge.log" 2 | sed 's/^{/{"record": "peer_samples", /' | main
echo "{\"record\": \"ours_train_seconds\", \"seconds\": $OURS_SECONDS}" | main
mv "$RESULTS.new" "$RESULTS"
marks+=("\"evaluate\": $(( $(date +%s) - t0 ))")
t0=$(date +%s)
for split in validation heldout; do
  name=$([ "$split" = validation ] && echo seen || echo heldout)
  $PY "$HERE/prompts.py" "$W/dalle" "$split" > "$W/prompts_$name.txt"
  $PY -m dalle_jax.sample --workdir="$W/dalle" --clip_workdir="$W/clip" \
    --prompts_file="$W/prompts_$name.txt" --num_samples=16 --rerank=4 --seed=1 \
    --temperature="$T" --judge --out="$GRIDS/samples_$name.png" > /dev/null
done
marks+=("\"grids\": $(( $(date +%s) - t0 ))")
(IFS=,; echo "{${marks[*]}}") > "$W/timings.json"
cp "$W/timings.json" "$GRIDS/timings.json"
cat "$W/timings.json"; grep '^{"study": "main"' "$RESULTS"

#!/usr/bin/env bash
# The `shapes` experiment: the three models trained one after another, then every sample judged
# against its caption (python -m dalle_jax.evaluate) on seen and held-out compositions, with and
# without CLIP reranking (README.md has the models, the results and the time each stage takes).
#
#   PYTHON=python bash experiments/shapes/run.sh
#
# Environment: DVAE_STEPS (default 18,000), DALLE_STEPS, CLIP_STEPS override the step counts;
# DVAE_FROM=DIR copies a finished stage-1 workdir (experiments/dvae_shapes/run.sh trains the same
# VQ one) to $WORKDIRS/dvae when that does not exist yet, instead of training it again; GUIDANCE
# (default 3) is the classifier-free guidance scale of the reranked evaluation.
#
# Models: the dVAE of configs/dvae.py:shapes (VQ codebook, 64 px → 8×8 codes from 512); the
# transformer of configs/dalle.py:small (8 layers) with the dVAE's grid and vocabulary, 32 text
# slots, width 256 (4 heads), batch 32, bfloat16, 2,400 steps, captions dropped 10% of the time
# for guidance; the CLIP of configs/clip.py:small at 64 px with a convolutional stem (48 channels)
# and hard negative captions. Evaluation: each split without guidance or reranking, then at
# GUIDANCE with CLIP's best of 32. Outputs: workdirs/shapes/{dvae,dalle,clip}, and here
# results.jsonl, timings.json and samples_{seen,heldout}.png.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-python}
DATA=${DATA:-data}
W=${WORKDIRS:-workdirs/shapes}
HERE=experiments/shapes
DVAE_STEPS=${DVAE_STEPS:-18000}
DVAE_STEPS="--config.train.num_steps=$DVAE_STEPS --config.optimizer.decay_steps=$DVAE_STEPS"
DALLE_STEPS=${DALLE_STEPS:-2400}
CLIP_STEPS=${CLIP_STEPS:-1000}
CAPTIONS=${CAPTIONS:-64}
GUIDANCE=${GUIDANCE:-3}
mkdir -p "$W"
t0=$(date +%s)
stamp() { echo "\"$1\": $(( $(date +%s) - t0 ))"; }
marks=()

$PY -m dalle_jax.data prepare --dataset=shapes --data_dir="$DATA" > "$W/prepare.json"
marks+=("$(stamp prepared)")
if [ -n "${DVAE_FROM:-}" ] && [ ! -d "$W/dvae" ]; then cp -r "$DVAE_FROM" "$W/dvae"; fi
# shellcheck disable=SC2086
$PY -m dalle_jax.train --config=configs/dvae.py:shapes --workdir="$W/dvae" \
  --config.data.data_dir="$DATA" --config.model.quantizer=vq --config.optimizer.learning_rate=2e-3 \
  --config.optimizer.grad_clip_norm=0 --config.decoder_phase.from_step=0 $DVAE_STEPS \
  > "$W/dvae.log" 2>&1
marks+=("$(stamp dvae)")
$PY -m dalle_jax.data encode --dvae_workdir="$W/dvae" --dataset=shapes --data_dir="$DATA" \
  --out_data_dir="$W/codes" > "$W/codes.json"
CODES=$(tail -n 1 "$W/codes.json" | $PY -c "import json, sys; print(json.load(sys.stdin)['config'])")
marks+=("$(stamp encoded)")
TEXT="--config.text.text_len=32 --config.model.text_len=32"
$PY -m dalle_jax.train --config=configs/dalle.py:small --workdir="$W/dalle" $TEXT \
  --config.data.data_dir="$W/codes" --config.data.config="$CODES" \
  --config.model.grid=8 --config.model.image_vocab=512 --config.model.conv_kernel=5 \
  --config.model.width=256 --config.model.heads=4 --config.model.remat=none \
  --config.model.block_size=16 --config.model.dtype=bfloat16 \
  --config.data.global_batch_size=32 --config.text.caption_dropout=0.1 \
  --config.train.num_steps="$DALLE_STEPS" --config.optimizer.decay_steps="$DALLE_STEPS" \
  --config.optimizer.warmup_steps=100 --config.train.eval_every=400 \
  --config.train.checkpoint_every=400 > "$W/dalle.log" 2>&1
marks+=("$(stamp dalle)")
$PY -m dalle_jax.train --config=configs/clip.py:small --workdir="$W/clip" $TEXT \
  --config.data.data_dir="$DATA" --config.data.resolution=64 --config.model.resolution=64 \
  --config.model.patch=8 --config.model.stem_channels=48 --config.train.hard_negatives=True \
  --config.train.num_steps="$CLIP_STEPS" --config.optimizer.decay_steps="$CLIP_STEPS" \
  > "$W/clip.log" 2>&1
marks+=("$(stamp clip)")
# results.jsonl keeps the records of the other studies; this run's replace the "main" ones.
RESULTS="$HERE/results.jsonl"
grep -v '^{"study": "main"' "$RESULTS" > "$RESULTS.new" || true
main() { sed 's/^{/{"study": "main", /' >> "$RESULTS.new"; }
for split in validation heldout; do
  $PY -m dalle_jax.evaluate --workdir="$W/dalle" --split="$split" \
    --num_captions="$CAPTIONS" --num_batches=8 | main
  $PY -m dalle_jax.evaluate --workdir="$W/dalle" --clip_workdir="$W/clip" --split="$split" \
    --num_captions="$CAPTIONS" --rerank_from=32 --num_batches=8 --guidance="$GUIDANCE" | main
done
mv "$RESULTS.new" "$RESULTS"
marks+=("$(stamp evaluated)")
for split in validation heldout; do
  name=$([ "$split" = validation ] && echo seen || echo heldout)
  $PY "$HERE/prompts.py" "$W/dalle" "$split" > "$W/prompts_$name.txt"
  $PY -m dalle_jax.sample --workdir="$W/dalle" --clip_workdir="$W/clip" \
    --prompts_file="$W/prompts_$name.txt" --num_samples=16 --rerank=4 --seed=1 --guidance="$GUIDANCE" \
    --out="$HERE/samples_$name.png" > /dev/null
done
marks+=("$(stamp sampled)")
(IFS=,; echo "{${marks[*]}}") > "$HERE/timings.json"
cat "$HERE/timings.json"; grep '^{"study": "main"' "$RESULTS"

#!/usr/bin/env bash
# Trains configs/dvae.py:shapes twice on the same prepared `shapes` data, once with its gumbel
# relaxation (the paper's, plus the batch-marginal KL) and once with a VQ-VAE codebook, one after the other (each about half an hour
# alone on a 2-core CPU), then evaluates both and plots the curves.
#
#   bash experiments/dvae_shapes/run.sh
#   QUANTIZERS=vq STEPS=3000 bash experiments/dvae_shapes/run.sh   # one of them, shorter
#
# Outputs: workdirs/dvae_shapes_{gumbel,vq}/ (re-running resumes them), workdirs/dvae_shapes_*.log
# with each run's seconds, and, in this folder, results.json, loss_curves.png, recon_*.png.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-python}
DATA=${DATA:-data}
HERE=experiments/dvae_shapes
QUANTIZERS=${QUANTIZERS:-vq gumbel}
# A shorter run keeps the preset's proportions: a joint cosine over 9/10 of the steps cut at 3/5,
# then the decoder alone for the last 2/5 with its own cosine to the end.
STEPS=${STEPS:+--config.train.num_steps=$STEPS --config.optimizer.decay_steps=$((STEPS * 9 / 10)) --config.decoder_phase.from_step=$((STEPS * 3 / 5)) --config.decoder_phase.end_step=$STEPS}
# The preset's recipe is the gumbel one (20,000 steps); the VQ run takes twice its learning rate,
# unclipped, for 18,000 steps (its faster steps fit them in the half hour).
VQ_FLAGS=${VQ_FLAGS:---config.optimizer.learning_rate=2e-3 --config.optimizer.grad_clip_norm=0 --config.train.num_steps=18000 --config.optimizer.decay_steps=18000}
mkdir -p workdirs
$PY -m dalle_jax.data prepare --dataset=shapes --data_dir="$DATA" > /dev/null
for q in $QUANTIZERS; do
  flags="" phase=""
  # VQ trains jointly to the end, as measured (no decoder phase).
  [ "$q" = vq ] && flags="$VQ_FLAGS" && phase="--config.decoder_phase.from_step=0"
  start=$(date +%s)
  # shellcheck disable=SC2086
  $PY -m dalle_jax.train --config=configs/dvae.py:shapes --workdir="workdirs/dvae_shapes_$q" \
    --config.model.quantizer="$q" --config.data.data_dir="$DATA" $flags $STEPS $phase \
    > "workdirs/dvae_shapes_$q.log" 2>&1
  echo "$q: training took $(( $(date +%s) - start )) s" | tee -a "workdirs/dvae_shapes_$q.log"
done
runs=()
for q in gumbel vq; do [ -d "workdirs/dvae_shapes_$q" ] && runs+=("workdirs/dvae_shapes_$q"); done
$PY "$HERE/report.py" "${runs[@]}" --out="$HERE"

#!/usr/bin/env bash
# Runs dalle_jax on every worker of a Cloud TPU VM (one host or a pod slice), through gcloud.
#
#   TPU=my-tpu ZONE=us-central2-b bash scripts/tpu_vm.sh setup
#   TPU=my-tpu ZONE=us-central2-b bash scripts/tpu_vm.sh train configs/dalle.py:paper /mnt/shared/dalle [--config.x=y ...]
#   TPU=my-tpu ZONE=us-central2-b bash scripts/tpu_vm.sh logs      # follow worker 0's log
#   TPU=my-tpu ZONE=us-central2-b bash scripts/tpu_vm.sh stop      # SIGTERM: every worker saves, then exits
#
# setup copies the committed tree (git archive HEAD) to ~/$REMOTE_DIR on each worker and installs
# requirements.txt plus the TPU build of the same JAX. train starts the same command on every worker
# in the background, with DALLE_JAX_DISTRIBUTED=auto so that JAX finds the other workers; the
# workdir and the data must be on storage every worker sees at the same path (NFS, Filestore or a
# gcsfuse mount). Re-running train on the same workdir resumes.
# env: TPU, ZONE (required); PROJECT; REMOTE_DIR (default dalle_jax); GCLOUD (default gcloud).
set -euo pipefail
usage() { echo "usage: scripts/tpu_vm.sh setup | train CONFIG WORKDIR [FLAGS...] | logs | stop" >&2; sed -n 2,14p "$0" >&2; exit 2; }
[ $# -ge 1 ] || usage
: "${TPU:?set TPU to the TPU VM name}"
: "${ZONE:?set ZONE to the TPU VM zone}"
GCLOUD=${GCLOUD:-gcloud}
REMOTE_DIR=${REMOTE_DIR:-dalle_jax}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
where=(--zone="$ZONE")
[ -n "${PROJECT:-}" ] && where+=(--project="$PROJECT")
on_workers() {  # on_workers WORKERS COMMAND
  "$GCLOUD" compute tpus tpu-vm ssh "$TPU" "${where[@]}" --worker="$1" --command="$2"
}

case "$1" in
  setup)
    jax_version=$(sed -n 's/^jax==//p' "$ROOT/requirements.txt")
    staging=$(mktemp -d)
    trap 'rm -rf "$staging"' EXIT  # the archive is only needed until it is copied
    archive="$staging/dalle_jax.tar.gz"
    git -C "$ROOT" archive --format=tar.gz -o "$archive" HEAD
    "$GCLOUD" compute tpus tpu-vm scp "$archive" "$TPU:dalle_jax.tar.gz" "${where[@]}" --worker=all
    on_workers all "mkdir -p $REMOTE_DIR && tar -xzf dalle_jax.tar.gz -C $REMOTE_DIR && cd $REMOTE_DIR \
&& python3 -m pip install -q -r requirements.txt 'jax[tpu]==$jax_version'"
    ;;
  train)
    [ $# -ge 3 ] || usage
    config=$2 workdir=$3
    shift 3
    extra=""
    [ $# -gt 0 ] && extra=$(printf ' %q' "$@")
    on_workers all "cd $REMOTE_DIR && DALLE_JAX_DISTRIBUTED=auto nohup python3 -m dalle_jax.train \
--config=$config --workdir=$workdir$extra > train.log 2>&1 < /dev/null &"
    ;;
  logs) on_workers 0 "tail -n 100 -f $REMOTE_DIR/train.log" ;;
  stop) on_workers all "pkill -TERM -f 'python3 -m dalle_jax.train' || true" ;;
  *) usage ;;
esac

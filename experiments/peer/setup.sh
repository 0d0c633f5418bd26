#!/usr/bin/env bash
# Builds the Python environment that runs experiments/peer/bench.py: a venv with lucidrains'
# dalle-pytorch 1.6.6 on a CPU torch, every version pinned in requirements.txt beside this script.
# Does nothing when the venv already holds exactly those versions. Ends by importing dalle_pytorch
# (with the taming stand-in of stub/ on the path) and printing its version.
#   usage: bash experiments/peer/setup.sh
#   env:   PEER_VENV         where the venv goes (default ~/.cache/dalle_jax/peer-venv)
#          PEER_BASE_PYTHON  the Python 3.11 that creates it (default python3)
#          PEER_TORCH_PIP_ARGS  extra pip arguments for the torch install only, e.g. an index that
#                            serves CPU-only wheels where the default torch wheel is a CUDA build
# Progress goes to stderr; the last line on stdout is the path of the venv's python, so that
#   PEER_PY=$(bash experiments/peer/setup.sh | tail -n 1)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REQ=$HERE/requirements.txt
VENV=${PEER_VENV:-$HOME/.cache/dalle_jax/peer-venv}
PY=$VENV/bin/python

pins() {  # every name==version of requirements.txt, one a line
  sed -e 's/#.*//' -e 's/[[:space:]]//g' "$REQ" | grep -v '^$'
}

pinned() {  # pinned NAME: its name==version line
  pins | grep -i "^$1==" || { echo "setup.sh: $1 is not pinned in $REQ" >&2; exit 1; }
}

installed() {  # exit 0 iff the venv holds every pin at its version (local tags like +cpu ignored)
  [ -x "$PY" ] || return 1
  pins | "$PY" -c '
import sys
from importlib.metadata import PackageNotFoundError, version

wrong = []
for line in sys.stdin:
    name, want = line.strip().split("==")
    try:
        have = version(name).split("+")[0]
    except PackageNotFoundError:
        have = None
    if have != want:
        wrong.append(f"{name}: pinned {want}, installed {have}")
if wrong:
    print("peer venv differs from requirements.txt:", *wrong, sep="\n  ", file=sys.stderr)
sys.exit(1 if wrong else 0)
'
}

if installed; then
  echo "peer venv $VENV: up to date" >&2
else
  if [ ! -x "$PY" ]; then
    echo "creating the peer venv in $VENV" >&2
    mkdir -p "$(dirname "$VENV")"
    "${PEER_BASE_PYTHON:-python3}" -m venv "$VENV" >&2 ||
      { echo "setup.sh: ${PEER_BASE_PYTHON:-python3} -m venv $VENV failed" >&2; exit 1; }
  fi
  PIP=("$PY" -m pip install --constraint "$REQ")
  # shellcheck disable=SC2086  # PEER_TORCH_PIP_ARGS is a list of words
  "${PIP[@]}" ${PEER_TORCH_PIP_ARGS:-} "$(pinned torch)" >&2
  "${PIP[@]}" --no-deps "$(pinned dalle-pytorch)" >&2
  mapfile -t rest < <(pins | grep -iv -e '^torch==' -e '^dalle-pytorch==')
  "${PIP[@]}" "${rest[@]}" >&2
  installed
fi

PYTHONPATH="$HERE/stub${PYTHONPATH:+:$PYTHONPATH}" "$PY" -W ignore -c '
import dalle_pytorch
from dalle_pytorch import DALLE, DiscreteVAE
print("dalle_pytorch", dalle_pytorch.__version__, "imports", flush=True)
' >&2
echo "$PY"

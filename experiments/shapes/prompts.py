"""Prints six captions of a split of a transformer workdir's dataset, one per line (for run.sh)."""

import sys

from dalle_jax.evaluation.shapes_eval import captions_of
from dalle_jax.training.checkpoint import load_config

if __name__ == "__main__":
    workdir, split = sys.argv[1], sys.argv[2]
    print("\n".join(captions_of(load_config(workdir), split, 6)))

"""Prints six captions of a split of a transformer workdir's dataset, one per line (for run.sh)."""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))  # run from anywhere

from dalle_jax.evaluation.shapes_eval import captions_of  # noqa: E402
from dalle_jax.training.checkpoint import load_config  # noqa: E402

if __name__ == "__main__":
    workdir, split = sys.argv[1], sys.argv[2]
    print("\n".join(captions_of(load_config(workdir), split, 6)))

"""How many image tokens of each split the training split never shows, from export_codes' .npz.

  python experiments/shapes/unseen_codes.py workdirs/shapes/peer/data.npz

Per split: the share of tokens whose code no training scene uses anywhere and the share of scenes
holding one; the same for (position, code) pairs no training scene has at that position. A token
of either kind is one that maximum-likelihood training gives almost no probability. Prints one
JSON line per split.
"""

import json
import sys

import numpy as np


def unseen(train: np.ndarray, codes: np.ndarray, vocab: int) -> dict:
    """Shares of unseen codes and (position, code) pairs in `codes` (N, L) given `train` (M, L)."""
    anywhere = np.zeros(vocab, bool)
    anywhere[np.unique(train)] = True
    at = np.zeros((train.shape[1], vocab), bool)
    for position in range(train.shape[1]):
        at[position, np.unique(train[:, position])] = True
    new_code = ~anywhere[codes]
    new_pair = ~at[np.arange(codes.shape[1])[None], codes]
    return {"tokens_with_unseen_code": float(new_code.mean()),
            "scenes_with_unseen_code": float(new_code.any(1).mean()),
            "tokens_with_unseen_position_code": float(new_pair.mean()),
            "scenes_with_unseen_position_code": float(new_pair.any(1).mean())}


if __name__ == "__main__":
    data = np.load(sys.argv[1])
    vocab = json.loads(str(data["config"]))["image_vocab"]
    train = data["train_codes"].astype(np.int64)
    print(json.dumps({"codes_used_in_train": int(len(np.unique(train)))}))
    for split in ("validation", "heldout"):
        print(json.dumps({"split": split, **unseen(train, data[f"{split}_codes"].astype(np.int64),
                                                    vocab)}))

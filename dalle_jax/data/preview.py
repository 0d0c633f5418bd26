"""`inspect`: what a training run would be fed, end to end, as a JSON summary and a PNG grid."""

from __future__ import annotations

import os
import time

import jax
import ml_collections
import numpy as np
from tqdm import tqdm

from dalle_jax.data import pipeline
from dalle_jax.data.tokenizer import PAD_ID
from dalle_jax.parallel.mesh import make_mesh
from dalle_jax.visualize import save_grid


def preview(config: ml_collections.ConfigDict, workdir: str, num_batches: int = 4) -> dict:
    """Prepares the data, trains/loads the tokenizer, draws `num_batches` sharded batches.

    Writes `workdir/batch.png` (the first batch with its captions) and returns a summary.
    """
    if num_batches <= 0:
        raise ValueError(f"num_batches must be positive, got {num_batches}")
    prepared = pipeline.prepare_data(config.data)
    tok = pipeline.ensure_tokenizer(config, workdir, prepared)
    mesh = make_mesh(config.mesh.to_dict())
    loader = pipeline.make_loader(config, config.data.train_split, tok, mesh=mesh, prepared=prepared)
    first, lengths, truncated = None, [], 0
    start = time.perf_counter()
    for _ in tqdm(range(num_batches), desc="batches", unit="batch"):
        batch = next(loader)
        first = first or batch
        for caption in batch["caption"]:
            n = len(tok.token_ids(caption))
            lengths.append(min(n, tok.text_len))
            truncated += n > tok.text_len
    seconds = time.perf_counter() - start
    loader.close()
    grid = save_grid(np.asarray(first["image"]), list(first["caption"]),
                     os.path.join(workdir, "batch.png"), title=f"{prepared['dataset']} / {prepared['config']}")
    text = np.asarray(first["text"])
    return {
        **prepared,
        "tokenizer": {
            "path": os.path.join(workdir, pipeline.TOKENIZER_FILE),
            "vocab_size": tok.vocab_size,
            "text_len": tok.text_len,
            "mean_tokens_per_caption": round(float(np.mean(lengths)), 2),
            "truncated_captions": int(truncated),
            "first_caption": str(first["caption"][0]),
            "first_ids": [int(i) for i in text[0] if i != PAD_ID],
        },
        "mesh": dict(mesh.shape),
        "devices": jax.device_count(),
        "batch": {
            name: {"shape": list(first[name].shape), "dtype": str(first[name].dtype),
                   "sharding": str(first[name].sharding.spec)}
            for name in ("image", "text")
        },
        "examples_per_s": round(num_batches * config.data.global_batch_size / seconds, 1),
        "grid": grid,
    }

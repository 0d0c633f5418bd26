"""Reranking samples with a trained contrastive model (paper: 512 samples, CLIP keeps the best).

    ranker = Reranker.load("workdirs/clip_small")
    scores = ranker.scores(images_uint8, "a red circle")      # (N,) cosine similarities
    best = top_k(scores, 4)                                     # indices, best first
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from dalle_jax.data import pipeline
from dalle_jax.generation.restore import load_ema


class Reranker:
    """A restored CLIP model (EMA parameters) with its own tokenizer."""

    def __init__(self, config, model, tokenizer, step: int):
        self.config, self.model, self.tokenizer, self.step = config, model, tokenizer, step
        graphdef, state = nnx.split(model)

        def images_in(state, images):
            m = nnx.merge(graphdef, state)
            x = images.astype(jnp.float32) / 255.0
            r = m.resolution
            if x.shape[1:3] != (r, r):
                x = jax.image.resize(x, (x.shape[0], r, r, 3), "linear")
            return m.image_embedding(x)
        self._state = state
        self._images = jax.jit(images_in)
        self._text = jax.jit(lambda state, text: nnx.merge(graphdef, state).text_embedding(text))

    @classmethod
    def load(cls, workdir: str, *, step: int | None = None) -> "Reranker":
        """Restores the newest (or `step`) checkpoint of a CLIP workdir."""
        config, spec, state, step = load_ema(workdir, "clip", step=step)
        return cls(config, spec.merge(state["ema"], {}), pipeline.ensure_tokenizer(config, workdir),
                   step)

    def image_embeddings(self, images_uint8: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """(N, E) unit vectors of uint8 images (N, H, W, 3), resized to the model's resolution
        when they differ."""
        return np.concatenate([np.asarray(self._images(self._state, images_uint8[i:i + batch_size]))
                               for i in range(0, len(images_uint8), batch_size)])

    def text_embeddings(self, prompts: list[str], batch_size: int = 64) -> np.ndarray:
        """(P, E) unit vectors of the prompts, tokenized by the CLIP workdir's tokenizer."""
        ids = self.tokenizer.encode_batch(prompts)
        return np.concatenate([np.asarray(self._text(self._state, ids[i:i + batch_size]))
                               for i in range(0, len(ids), batch_size)])

    def scores(self, images_uint8: np.ndarray, prompt: str, batch_size: int = 64) -> np.ndarray:
        """Cosine similarity (N,) of each uint8 image (N, H, W, 3) to `prompt` (resized to the
        model's resolution when they differ)."""
        return self.image_embeddings(images_uint8, batch_size) @ self.text_embeddings([prompt])[0]


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k highest scores, best first; k is capped at len(scores)."""
    if k < 1:
        raise ValueError(f"rerank keeps k ≥ 1 samples, got {k}")
    return np.argsort(-np.asarray(scores), kind="stable")[:k]

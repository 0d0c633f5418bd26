"""Reranking samples with a contrastive model (paper: 512 samples, CLIP keeps the best).

    ranker = load_ranker("workdirs/clip_small")                 # a CLIP trained here
    ranker = load_ranker("openclip:weights/openclip-vit-b-32")  # OpenAI's or LAION's, converted
    scores = ranker.scores(images_uint8, "a red circle")      # (N,) cosine similarities
    best = top_k(scores, 4)                                     # indices, best first

`load_ranker(spec)`: a CLIP workdir (`Reranker`), or `openclip:DIR` (a directory written by
`python -m dalle_jax.models.openclip.convert`) or `openclip:ARCH:WEIGHTS` (an open_clip or OpenAI
`.pt` file, converted on the fly: needs torch and open_clip) for `OpenClipRanker`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from dalle_jax.data import pipeline
from dalle_jax.generation.restore import load_ema


OPENCLIP = "openclip:"


class _Ranker:
    """Batching and scoring shared by the rankers: `_image_batch` and `_text_batch` embed."""

    def image_embeddings(self, images_uint8: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """(N, E) unit vectors of uint8 images (N, H, W, 3), resized to the model's resolution
        when they differ."""
        return np.concatenate([np.asarray(self._image_batch(images_uint8[i:i + batch_size]))
                               for i in range(0, len(images_uint8), batch_size)])

    def text_embeddings(self, prompts: list[str], batch_size: int = 64) -> np.ndarray:
        """(P, E) unit vectors of the prompts, tokenized by the model's own tokenizer."""
        ids = self.tokenizer.encode_batch(prompts)
        return np.concatenate([np.asarray(self._text_batch(ids[i:i + batch_size]))
                               for i in range(0, len(ids), batch_size)])

    def scores(self, images_uint8: np.ndarray, prompt: str, batch_size: int = 64) -> np.ndarray:
        """Cosine similarity (N,) of each uint8 image (N, H, W, 3) to `prompt` (resized to the
        model's resolution when they differ)."""
        return self.image_embeddings(images_uint8, batch_size) @ self.text_embeddings([prompt])[0]


def _unit(x: jax.Array) -> jax.Array:
    return x / jnp.linalg.norm(x, axis=-1, keepdims=True)


class OpenClipRanker(_Ranker):
    """OpenAI's or LAION's CLIP (`models.openclip.OpenClip`) with CLIP's own BPE."""

    def __init__(self, model, tokenizer):
        self.model, self.tokenizer = model, tokenizer
        graphdef, self._state = nnx.split(model)
        images = jax.jit(lambda s, x: _unit(nnx.merge(graphdef, s).encode_image(x)))
        text = jax.jit(lambda s, t: _unit(nnx.merge(graphdef, s).encode_text(t)))
        self._image_batch = lambda batch: images(self._state, model.preprocess(batch))
        self._text_batch = lambda ids: text(self._state, ids)

    @classmethod
    def load(cls, spec: str) -> "OpenClipRanker":
        """`DIR` (converted) or `ARCH:WEIGHTS` (a .pt file; needs torch and open_clip)."""
        import os

        from dalle_jax.models.openclip import convert
        from dalle_jax.models.openclip.tokenizer import ClipTokenizer

        if os.path.isdir(spec):
            return cls(convert.load(spec), ClipTokenizer(os.path.join(spec, convert.BPE_FILE)))
        name, sep, weights = spec.partition(":")
        if not sep or not os.path.isfile(weights):
            raise FileNotFoundError(f"{OPENCLIP}{spec}: give a converted directory or "
                                    "ARCH:PATH of a .pt file that exists")
        model = convert.from_state_dict(name, convert.read_weights(weights))
        return cls(model, ClipTokenizer(convert.default_bpe(), model.arch.context))


def load_ranker(spec: str) -> _Ranker:
    """A CLIP workdir, or `openclip:DIR` / `openclip:ARCH:WEIGHTS` (see the module docstring)."""
    if spec.startswith(OPENCLIP):
        return OpenClipRanker.load(spec[len(OPENCLIP):])
    return Reranker.load(spec)


class Reranker(_Ranker):
    """A restored CLIP model trained here (EMA parameters) with its own tokenizer."""

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
        images, text = jax.jit(images_in), jax.jit(
            lambda state, text: nnx.merge(graphdef, state).text_embedding(text))
        self._image_batch = lambda batch: images(self._state, batch)
        self._text_batch = lambda ids: text(self._state, ids)

    @classmethod
    def load(cls, workdir: str, *, step: int | None = None) -> "Reranker":
        """Restores the newest (or `step`) checkpoint of a CLIP workdir."""
        config, spec, state, step = load_ema(workdir, "clip", step=step)
        return cls(config, spec.merge(state["ema"], {}), pipeline.ensure_tokenizer(config, workdir),
                   step)


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k highest scores, best first; k is capped at len(scores)."""
    if k < 1:
        raise ValueError(f"rerank keeps k ≥ 1 samples, got {k}")
    return np.argsort(-np.asarray(scores), kind="stable")[:k]

"""A trained stage-2 workdir as an image generator: prompts in, code grids and images out.

    gen = Generator.load("workdirs/dalle_small")            # finds its dVAE/VQGAN via the codes
    text = gen.encode_prompts(["a red circle"])             # clear errors for empty/long prompts
    codes = gen.sample(text, num_samples=8, seed=0)         # (P, N, g, g)
    images = gen.decode(codes)                              # (P, N, fg, fg, 3) uint8

Sampling runs in jitted batches of `batch_size` (prompt, sample) rows with the key/value cache
(`generation.sampling`), the last batch padded so that one compilation serves every batch, and a
progress bar over batches. Row r of a call draws from fold_in(seed, r), so a sample does not
depend on the batch size. The parameter EMA is what gets used, and all that is read: in the
model's compute dtype, sharded over the mesh.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from tqdm.auto import tqdm

from dalle_jax.data import pipeline
from dalle_jax.data.sources import open_builder
from dalle_jax.generation import sampling
from dalle_jax.generation.codec import load_codec, local_path
from dalle_jax.generation.restore import load_ema


def dvae_workdir_of(config) -> str:
    """The image tokenizer (a stage-1 workdir or `vqgan:…`, see `codec.load_codec`) that encoded
    the codes a stage-2 config trains on."""
    data = config.data
    if data.dataset != "image_codes":
        raise ValueError(f"data.dataset={data.dataset!r}: cannot tell which image tokenizer made "
                         "the codes; pass --dvae_workdir")
    meta = open_builder("image_codes", data.data_dir, data.config or None).info.metadata
    reference = meta.get("dvae_workdir", "")
    if not reference or not os.path.exists(local_path(reference)):
        raise FileNotFoundError(f"the codes' image tokenizer {reference!r} is not there; pass "
                                "--dvae_workdir")
    return reference


def encode_prompts(tokenizer, text_len: int, prompts: list[str]) -> np.ndarray:
    """(P, text_len) ids of `prompts`; a ValueError names an empty prompt or one too long."""
    if not prompts:
        raise ValueError("no prompt given")
    for p in prompts:
        if not p.strip():
            raise ValueError("empty prompt: give some text to draw")
        n = tokenizer.token_count(p)
        if n > text_len:
            raise ValueError(f"prompt {p!r} is {n} tokens, longer than the model's text_len of "
                             f"{text_len}")
    return tokenizer.encode_batch(prompts)


class Generator:
    """A restored transformer (EMA parameters), its tokenizer and the image tokenizer (dVAE or
    VQGAN) that decodes its codes."""

    def __init__(self, config, model, tokenizer, dvae, step: int, mesh=None):
        self.config, self.model, self.tokenizer, self.dvae, self.step = (
            config, model, tokenizer, dvae, step)
        self.mesh = mesh  # the mesh the EMA is split over
        self.grid = model.grid
        self._graphdef, self._state = nnx.split(model)
        self._compiled = {}

    @classmethod
    def load(cls, workdir: str, *, dvae_workdir: str | None = None, step: int | None = None,
             tokenizer=None, mesh_axes: dict | None = None) -> "Generator":
        """Restores the newest (or `step`) checkpoint of a stage-2 workdir and its image
        tokenizer (`dvae_workdir`: a stage-1 workdir or `vqgan:…`; default: the one that
        encoded its codes).

        `tokenizer`: the workdir's tokenizer when the caller has already read it. `mesh_axes`:
        the mesh the EMA is split over by the config's rules (default {'data': -1}: every device
        holds it whole), e.g. {'fsdp': 4} to sample a model too large for one device.
        """
        config, spec, state, step = load_ema(workdir, "dalle", step=step, in_compute_dtype=True,
                                             mesh_axes=mesh_axes)
        model = spec.merge(state["ema"], {})
        tokenizer = tokenizer or pipeline.ensure_tokenizer(config, workdir)
        dvae = load_codec(dvae_workdir or dvae_workdir_of(config))
        if dvae.vocab_size != model.image_vocab:
            raise ValueError(f"the image tokenizer has {dvae.vocab_size} codes but the "
                             f"transformer's image_vocab is {model.image_vocab}")
        return cls(config, model, tokenizer, dvae, step, mesh=spec.mesh)

    def encode_prompts(self, prompts: list[str]) -> np.ndarray:
        """(P, text_len) ids; a ValueError names an empty prompt or one longer than text_len."""
        return encode_prompts(self.tokenizer, self.model.text_len, prompts)

    def _sampler(self, settings: sampling.Settings):
        if settings not in self._compiled:
            graphdef = self._graphdef

            def run(state, text, keys, prefix, keep):
                model = nnx.merge(graphdef, state)
                return jax.vmap(lambda t, k, p: sampling.sample_codes(
                    model, t[None], k, settings, p[None], keep)[0])(text, keys, prefix)
            self._compiled[settings] = jax.jit(run)
        return self._compiled[settings]

    def sample(self, text: np.ndarray, num_samples: int, *, seed: int = 0,
               settings: sampling.Settings = sampling.Settings(), batch_size: int = 8,
               prefix: np.ndarray | None = None, keep: int = 0,
               progress: bool = True) -> np.ndarray:
        """Codes (P, num_samples, g, g) for text ids (P, T).

        prefix (P, g, g) and keep: the first `keep` codes of each prompt's prefix are kept
        (image completion) and the rest sampled.
        """
        settings = settings.check(self.model.image_vocab)
        if num_samples < 1 or batch_size < 1:
            raise ValueError(f"num_samples={num_samples} and batch_size={batch_size} must be ≥ 1")
        n = self.grid * self.grid
        if not 0 <= keep <= n:
            raise ValueError(f"keep={keep} codes must be in [0, {n}]")
        p = len(text)
        rows_text = np.repeat(np.asarray(text, np.int32), num_samples, axis=0)
        rows_prefix = (np.zeros((len(rows_text), self.grid, self.grid), np.int32) if prefix is None
                       else np.repeat(np.asarray(prefix, np.int32), num_samples, axis=0))
        keys = jax.random.split(jax.random.key(seed), len(rows_text))
        run = self._sampler(settings)
        out = []
        batch_size = min(batch_size, len(rows_text))
        starts = range(0, len(rows_text), batch_size)
        for start in tqdm(starts, desc="sampling", unit="batch", disable=not progress or None):
            idx = np.minimum(np.arange(start, start + batch_size), len(rows_text) - 1)  # pad
            codes = run(self._state, rows_text[idx], keys[idx], rows_prefix[idx], jnp.int32(keep))
            out.append(np.asarray(codes)[:min(batch_size, len(rows_text) - start)])
        return np.concatenate(out).reshape(p, num_samples, self.grid, self.grid)

    def decode(self, codes: np.ndarray) -> np.ndarray:
        """uint8 images (..., fg, fg, 3) of codes (..., g, g); f is the image tokenizer's `grid_scale`."""
        lead = codes.shape[:-2]
        images = self.dvae.decode(codes.reshape(-1, self.grid, self.grid))
        images = (np.clip(images, 0, 1) * 255).round().astype(np.uint8)
        return images.reshape(*lead, *images.shape[1:])

    def encode_image(self, images_uint8: np.ndarray) -> np.ndarray:
        """Codes (B, g, g) of uint8 images (B, fg, fg, 3), f the image tokenizer's `grid_scale`."""
        codes = self.dvae.encode(images_uint8)
        if codes.shape[1:] != (self.grid, self.grid):
            raise ValueError(f"the image gives a {codes.shape[1]}×{codes.shape[2]} code grid but "
                             f"the transformer's grid is {self.grid}")
        return codes
